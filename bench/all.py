"""`make bench`: every benchmark of bench/, one after another, each at a size that keeps the whole run under 15
minutes on the build machine; their tables go into BENCHMARKS.md, between the "make bench" markers, with the
command, the machine and the date of each.

    .venv/bin/python bench/all.py [--only NAME,...] [--out BENCHMARKS.md] [--list]

A bench that fails or runs past its time limit is recorded as such (its last lines), and the others still run; the
exit status is 1 then. The hand-written sections of BENCHMARKS.md (what each figure means, older runs) stay as
they are.
"""

import os
import sys

# Run as a script, this file's folder comes first on sys.path, where bench/queue.py would shadow the standard
# library's `queue`; put the repository root there instead.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import platform
import re
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- make bench: begin (bench/all.py writes this section; edits here are overwritten) -->"
END = "<!-- make bench: end -->"
INTERVAL = ("--guidance-interval", "0", "0.8")  # the equal-quality comparison of BENCHMARKS.md
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class Bench:
    name: str
    what: str
    args: tuple[str, ...]
    timeout_s: int


BENCHES = (
    Bench(
        "queue",
        "queue and API: overhead over the same work in-process, submissions per second (targets 15 / 60 ms, 500/s)",
        ("bench/queue.py", "--jobs", "100", "--burst", "1000"),
        180,
    ),
    Bench(
        "api_requests",
        "what one request costs the API process: thread-pool hops and CPU per POST, in-process",
        ("bench/api_requests.py", "--requests", "1000"),
        60,
    ),
    Bench(
        "batching",
        "cross-job batching: 32 concurrent n = 1 `sample` jobs on mnist-ddpm, batching on against off; a lone job",
        ("bench/batching.py",),
        420,
    ),
    Bench(
        "priorities",
        "time to start under a saturated queue: high over 100 low jobs, normal behind 33 normal ones",
        ("bench/priorities.py",),
        240,
    ),
    Bench(
        "redis_ops",
        "Redis calls per job, per sampling step and per poll (the scale estimate)",
        ("bench/redis_ops.py", "--jobs", "30", "--samples", "3"),
        150,
    ),
    Bench(
        "sampling",
        "CFG sampling images per second: the spec's plain loop against the service's",
        ("bench/sampling.py", "--batch", "100", "--rounds", "1", "--no-compile", "--bf16-steps", "0"),
        480,
    ),
    Bench(
        "quality-flow-10",
        "time per image at equal quality: mnist-flow at 10 Euler steps (CFG 5 within [0, 0.8])",
        ("bench/quality.py", "--models", "mnist-flow", "--steps", "10", "--cfg-only", "--per-class", "50", *INTERVAL),
        120,
    ),
    Bench(
        "quality-ddpm-300",
        "... against mnist-ddpm at all 300 steps (clip_denoised)",
        ("bench/quality.py", "--models", "mnist-ddpm", "--cfg-only", "--per-class", "10", "--clip-denoised", *INTERVAL),
        180,
    ),
    Bench(
        "deepfloyd", "the tiny random IF: the service's loop against diffusers' pipelines", ("bench/deepfloyd.py",), 180
    ),
    Bench(
        "steps",
        "steps x sampler on the shipped models: accuracy, Frechet distance, images per second (10 per class)",
        ("bench/steps.py", "--per-class", "10"),
        900,
    ),
    Bench(
        "illusions",
        "anagrams on mnist-ddpm (ddim, 10 steps): the best digit pair per view, a 3-view triple (2 screen seeds)",
        (
            "bench/illusions.py",
            "--screen-seeds",
            "2",
            "--top",
            "2",
            "--triples",
            "flip+rotate_cw",
            "--triple-screen",
            "20",
        ),
        420,
    ),
)


def machine() -> str:
    import torch

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.node()}: {os.cpu_count()} CPU cores, {cuda}, Python {platform.python_version()}, "
        f"torch {torch.__version__}; load average {load}"
    )


def run(bench: Bench) -> str:
    """The bench's section: what, the command, when, how long, and its output (its tables)."""
    command = " ".join([".venv/bin/python", *bench.args])
    started = datetime.now(UTC)
    began = time.monotonic()
    sys.stderr.write(f"[make bench] {bench.name}: {command}\n")
    try:
        done = subprocess.run(
            [sys.executable, *bench.args], cwd=ROOT, capture_output=True, text=True, timeout=bench.timeout_s
        )
        status = "ok" if done.returncode == 0 else f"FAILED (exit status {done.returncode})"
        output = done.stdout if done.returncode == 0 else (done.stdout + done.stderr)[-3000:]
    except subprocess.TimeoutExpired as exc:
        status = f"FAILED (past its {bench.timeout_s} s)"
        output = (str(exc.stdout or "") + str(exc.stderr or ""))[-3000:]
    seconds = time.monotonic() - began
    sys.stderr.write(f"[make bench] {bench.name}: {status} in {seconds:.0f} s\n")
    return (
        f"### {bench.name}: {bench.what}\n\n`{command}`: {status}, {started:%Y-%m-%d %H:%M} UTC, {seconds:.0f} s\n\n"
        f"{ANSI.sub('', output).strip()}\n"
    )


def write(out: Path, sections: list[str], header: str) -> None:
    text = out.read_text() if out.exists() else ""
    block = f"{BEGIN}\n{header}\n\n" + "\n".join(sections) + f"\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n## The latest `make bench` run\n\n" + block + "\n"
    out.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated bench names (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--list", action="store_true", help="list the benches and their commands, run nothing")
    args = parser.parse_args()
    chosen = [b for b in BENCHES if not args.only or b.name in args.only.split(",")]
    if args.list:
        for bench in chosen:
            sys.stdout.write(f"{bench.name}: {' '.join(bench.args)} (up to {bench.timeout_s} s)\n")
        return 0
    began, started = time.monotonic(), datetime.now(UTC)
    host = machine()
    sections = [run(bench) for bench in chosen]
    header = (
        f"`make bench` ({', '.join(b.name for b in chosen)}), {started:%Y-%m-%d %H:%M} UTC, "
        f"{(time.monotonic() - began) / 60:.1f} min in all, on {host}."
    )
    write(args.out, sections, header)
    failed = sum("FAILED" in section.split("\n", 3)[2] for section in sections)
    sys.stderr.write(f"[make bench] {len(sections) - failed}/{len(sections)} ok; written to {args.out}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
