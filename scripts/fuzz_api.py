"""Schemathesis against the service's own OpenAPI schema: the long profile (issue 6). CI runs a short one,
`tests/reliability/test_schema_fuzz.py`, with the same configuration (`CONFIG_TOML`, `FUZZ_ENV`).

    .venv/bin/python scripts/fuzz_api.py                         # its own Redis, API and worker
    .venv/bin/python scripts/fuzz_api.py --url http://127.0.0.1:8000 --key KEY     # a running server, API_KEYS set
    .venv/bin/python scripts/fuzz_api.py --max-examples 200 --seed 7 --report-dir var/fuzz

Every operation, every check, positive and negative (invalid) data, in all of schemathesis's phases (examples,
coverage, fuzzing, stateful), from a fixed seed. It prints how many requests it sent and the failures found per
check, keeps schemathesis's reports (events.ndjson, junit.xml, and requests.har, every request) in `--report-dir`, and
exits 1 on any failure, or if it sent fewer than `--min-requests`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python scripts/fuzz_api.py`: `tests.helpers` lives at the root
    sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from tests.helpers import Stack

# Every check is on: schemathesis's default (`--checks all` would also switch on the one check switched off below).
# Where docs/api.md answers otherwise than a check assumes, the check learns docs/api.md's answer, citing its line.
CONFIG_TOML = """
[generation]
mode = "all"  # positive and negative data: invalid input must get a 4xx, never a 5xx

[cache]
enabled = false  # no replay of an earlier run's failures (and no .schemathesis/ folder): each run is its seed's

# docs/api.md, Conventions: 422 is "a well-formed request that breaks a rule". A model id must name a model that can
# run the kind, an image input must give exactly one form, an upload or earlier job must be the caller's: rules of
# the service's state or across fields, which a schema cannot state. So a schema-valid job may be answered 422.
# The same holds for each item of a group (docs/api.md, "Groups"), and priority "high" is a 403 for a key that
# HIGH_PRIORITY_KEYS does not list (docs/api.md, "Errors"), a rule of the deployment no schema states.
[[operations]]
include-name = ["POST /v1/jobs", "POST /v1/groups"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

# docs/api.md: only a train job that timed out or failed can be resumed; any other job of the caller's is a 409.
[[operations]]
include-name = "POST /v1/jobs/{job_id}/resume"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "409", "429", "5xx"]

# docs/api.md: a cursor is the `next_cursor` the server gave (422 otherwise); the schema can only say "a string".
[[operations]]
include-name = "GET /v1/jobs"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "404", "409", "422", "429", "5xx"]

# docs/api.md and issue 6: an upload must be a PNG, JPEG or WebP whose bytes are what its type says (415), and whose
# decoded pixels fit the limit (413); an empty body is 422. The schema can only say "binary".
[[operations]]
include-name = "POST /v1/uploads"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "404", "409", "413", "415", "422", "429", "5xx",
]

# docs/api.md: `DELETE /v1/jobs/{id}` cancels a job ("cancel; idempotent"), it does not delete it: the job stays
# readable, `canceled` (or as it ended, if it had), with its artifacts. A read after it is not a use after free.
# The check stays on for models, which DELETE does remove.
[[operations]]
include-name = ["GET /v1/jobs/{job_id}", "GET /v1/jobs/{job_id}/artifacts/{name}"]
checks.use_after_free.enabled = false
"""

# The stack's settings: rate limits out of the fuzzer's way (its own tests cover 429), and `Prefer: wait` /
# `?wait=` held at most a second, so a generated wait on a queued job does not stall the run.
FUZZ_ENV = {"RATE_LIMIT_WRITES": "1000000/minute", "RATE_LIMIT_READS": "1000000/minute", "MAX_WAIT_S": "1"}
REPORTS = ("events.ndjson", "junit.xml", "requests.har")


@contextmanager
def fuzz_stack(redis_url: str, tmp: Path) -> Iterator[Stack]:
    """The real API and one real worker on `redis_url`, set up for fuzzing."""
    from tests.helpers import running_stack

    with running_stack(redis_url, tmp, workers=1, fresh=True, **FUZZ_ENV) as stack:
        yield stack


def run_schemathesis(url: str, key: str, max_examples: int, seed: int, report_dir: Path) -> int:
    """`schemathesis run` on the server's own schema; its exit status."""
    report_dir.mkdir(parents=True, exist_ok=True)
    for name in REPORTS:  # no figures from an earlier run if this one stops short
        (report_dir / name).unlink(missing_ok=True)
    config = report_dir / "schemathesis.toml"
    config.write_text(CONFIG_TOML)
    argv = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{url}/openapi.json"),
        *("--header", f"Authorization: Bearer {key}", "--mode", "all"),  # valid and invalid data; all checks
        *("--phases", "examples,coverage,fuzzing,stateful", "--max-examples", str(max_examples)),
        *("--seed", str(seed), "--workers", "1", "--request-timeout", "30"),
        *("--report", "ndjson,junit,har", "--report-ndjson-path", str(report_dir / REPORTS[0])),
        *("--report-junit-path", str(report_dir / REPORTS[1]), "--report-har-path", str(report_dir / REPORTS[2])),
    ]
    return subprocess.run(argv, check=False).returncode


def summarize(report_dir: Path) -> tuple[int, Counter[str]]:
    """The requests sent (HAR entries) and the test cases that failed, by check (NDJSON events)."""
    events, har = report_dir / REPORTS[0], report_dir / REPORTS[2]
    requests = len(json.loads(har.read_text())["log"]["entries"]) if har.exists() else 0
    failures: Counter[str] = Counter()
    for line in events.read_text().splitlines() if events.exists() else []:
        finished = json.loads(line).get("ScenarioFinished")
        for checks in finished["recorder"].get("checks", {}).values() if finished else []:
            failures.update({c["name"] for c in checks if c["status"] == "failure"})
    return requests, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server; default: start Redis, the API and a worker here")
    parser.add_argument("--key", help="an API key of that server (it must set API_KEYS); default $DIFFUSION_JOBS_KEY")
    parser.add_argument("--max-examples", type=int, default=1000, help="test cases per operation and phase")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--min-requests", type=int, default=1000, help="fail a run that sent fewer")
    parser.add_argument("--report-dir", type=Path, default=ROOT / "var" / "fuzz")
    args = parser.parse_args()

    from tests.helpers import TEST_KEYS, own_redis

    key = args.key or os.environ.get("DIFFUSION_JOBS_KEY") or TEST_KEYS[-1]
    started = time.monotonic()
    if args.url:
        status = run_schemathesis(args.url.rstrip("/"), key, args.max_examples, args.seed, args.report_dir)
    else:
        with (
            tempfile.TemporaryDirectory() as tmp,
            own_redis(Path(tmp)) as server,
            fuzz_stack(server.url, Path(tmp)) as stack,
        ):
            status = run_schemathesis(stack.url, key, args.max_examples, args.seed, args.report_dir)
    requests, failures = summarize(args.report_dir)
    print(
        f"\n{requests} requests in {time.monotonic() - started:.0f} s (seed {args.seed}); reports in {args.report_dir}"
    )
    for check, count in sorted(failures.items()):
        print(f"  {check}: {count} failing test case(s)")
    if not failures:
        print("  no check failed")
    if requests < args.min_requests:
        print(f"fewer requests than --min-requests ({args.min_requests})")
        return 1
    return 1 if status or failures else 0


if __name__ == "__main__":
    sys.exit(main())
