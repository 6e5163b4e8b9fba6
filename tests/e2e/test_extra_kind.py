"""A kind added as one module per side (tests/throwaway_kind: its schema and rule, its worker function), loaded by a
real API and a real worker through `EXTRA_KINDS`: listed, validated, admitted, run, and served like any kind."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers import TEST_KEYS, artifact, client_for, decode, running_stack, submit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    env = {"EXTRA_KINDS": "tests.throwaway_kind", "PYTHONPATH": str(ROOT)}
    with (
        running_stack(redis_url, tmp_path_factory.mktemp("extra-kind"), **env) as stack,
        client_for(stack, TEST_KEYS[0]) as client,
    ):
        yield client


def test_models_and_the_schema_list_the_new_kind(checker):
    models = {m["id"]: m for m in checker.get("/v1/models").json()["models"]}
    assert "checker" in models["mnist-ddpm"]["capabilities"]  # a network-free kind: every listed model runs it
    schema = checker.get("/openapi.json").json()
    assert "CheckerJob" in schema["components"]["schemas"]
    kinds = schema["components"]["schemas"]["CheckerJob"]["properties"]["kind"]
    assert kinds.get("const", (kinds.get("enum") or [None])[0]) == "checker"


def test_the_new_kind_runs_on_a_worker(checker):
    response = submit(checker, {"kind": "checker", "model": "mnist-ddpm", "squares": 4, "seed": 5})
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded", job
    assert job["result"]["squares"] == 4 and job["result"]["seed"] == 5
    board = decode(artifact(checker, job, "image_0.png"))  # 28 x 28, squares of 7 pixels
    cells = np.arange(28) // 7
    assert np.array_equal(board > 0.5, (cells[:, None] + cells[None, :]) % 2 == 0)
    listed = checker.get("/v1/jobs", params={"kind": "checker"}).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]


def test_the_new_kinds_rule_answers_422_and_enqueues_nothing(checker):
    before = checker.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
    response = checker.post("/v1/jobs", json={"kind": "checker", "model": "mnist-ddpm", "squares": 5})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"][0]["loc"][-1] == "squares" and "must divide" in error["message"] + str(error["details"])
    wrong = checker.post("/v1/jobs", json={"kind": "checker", "model": "mnist-ddpm", "squares": 0})
    assert wrong.status_code == 422 and "squares" in str(wrong.json()["error"]["details"])
    assert checker.get("/v1/jobs", params={"limit": 100}).json()["jobs"] == before
