"""Schemathesis against the service's own OpenAPI schema: the fast, fixed profile that CI runs (issue 6).

The requests go over HTTP to the real API, with a real worker, on a real Redis (`fuzz_stack`), with a key of the
server's. The schema is the application's own, built at import so that pytest can collect one test per operation;
`test_the_server_serves_this_schema` checks that it is the one the server serves at /openapi.json. (Schemathesis's
lazy `from_fixture` loader fails on pytest 9.2, which dropped `Node._nodeid`.)

Every operation gets a bounded number of derandomized cases, valid and invalid (negative) data, in schemathesis's
examples, coverage and fuzzing phases, then a short stateful run chains operations through the ids they answer.
Every check runs on every response: no 5xx, and each status, content type, header and body as the schema documents
it. `CONFIG_TOML` holds the configuration, with each place where it follows docs/api.md rather than a check's default.
The long profile is `.venv/bin/python scripts/fuzz_api.py`.
"""

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis import AuthContext, Case, HookContext

from core.settings import Settings
from scripts.fuzz_api import CONFIG_TOML, fuzz_stack
from service.app import create_app
from tests.helpers import TEST_KEYS, Stack

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 100  # per operation and phase
STATEFUL_SCENARIOS = 25
MIN_REQUESTS = 1000  # this profile sends about 2,700 (in some 30 s on two cores)
SENT: Counter[str] = Counter()  # requests sent, by operation
FUZZED: set[str] = set()  # the operations `test_every_operation_answers_as_documented` ran on

SCHEMA = create_app(Settings(api_keys=TEST_KEYS[-1])).openapi()
schema = schemathesis.openapi.from_dict(SCHEMA, config=schemathesis.Config.from_str(CONFIG_TOML))
schema.config.generation.update(max_examples=EXAMPLES_PER_OPERATION, deterministic=True, database="none")


@schema.auth()
class ApiKey:
    """A key of the server's as `Authorization: Bearer` (the schema's HTTPBearer); `ignored_auth` tries without."""

    def get(self, case: Case, context: AuthContext) -> str:
        return TEST_KEYS[-1]

    def set(self, case: Case, data: str, context: AuthContext) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


@schema.hook
def after_call(context: HookContext, case: Case, response: Any) -> None:
    SENT[case.operation.label] += 1


@pytest.fixture(scope="module")
def fuzzed_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fuzz_stack(redis_url, tmp_path_factory.mktemp("fuzz")) as stack:
        yield stack


def test_the_server_serves_this_schema(fuzzed_stack: Stack) -> None:
    assert httpx.get(f"{fuzzed_stack.url}/openapi.json").json() == SCHEMA


def test_every_error_is_the_documented_envelope() -> None:
    """Each operation documents docs/api.md's one error body for each error it can answer (FastAPI's own 422 body,
    `HTTPValidationError`, is never sent)."""
    for path, item in SCHEMA["paths"].items():
        for method, operation in item.items():
            errors = {code: r for code, r in operation["responses"].items() if code >= "400"}
            assert errors or path == "/healthz", f"{method.upper()} {path} documents no error"
            for code, response in errors.items():
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ErrorBody", f"{method.upper()} {path} {code}: {ref}"
    assert "HTTPValidationError" not in SCHEMA["components"]["schemas"]


@schema.parametrize()
def test_every_operation_answers_as_documented(case: Case, fuzzed_stack: Stack) -> None:
    """No 5xx, and a documented status, content type, headers and body, for valid and invalid requests alike."""
    FUZZED.add(case.operation.label)
    case.call_and_validate(base_url=fuzzed_stack.url)


def test_chained_operations_answer_as_documented(fuzzed_stack: Stack) -> None:
    """The stateful phase: ids from one answer fed into the next request (a job's into GET, DELETE, artifacts)."""
    settings = hypothesis.settings(
        max_examples=STATEFUL_SCENARIOS,
        stateful_step_count=6,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"base_url": fuzzed_stack.url}

    Workflow.run(settings=settings)


def test_the_profile_sent_enough_requests(measured: Callable[..., None]) -> None:
    """After the module's other tests (pytest keeps file order): every operation called, and how often."""
    if not FUZZED:
        pytest.skip("counts the requests of this module's other tests; run the whole file")
    operations = {result.ok().label for result in schema.get_all_operations()}
    assert operations == FUZZED, f"never fuzzed: {sorted(operations - FUZZED)}"
    assert SENT.total() >= MIN_REQUESTS, SENT
    measured(requests=SENT.total(), operations=len(operations), fewest_for_one_operation=min(SENT.values()))
