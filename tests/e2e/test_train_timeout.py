"""A train job past its `timeout_s` ends timed_out with the state of its last finished epoch kept, and its owner
resumes it (POST /v1/jobs/{id}/resume): the next attempt goes on after that epoch (docs/operations/scaling.md,
"Time limits"). Real API, train worker and Redis."""

from pathlib import Path
from typing import Any

import httpx

from tests.helpers import TEST_KEYS, client_for, finish, job_of, running_stack, wait_until

BODY = {
    "kind": "train",
    "dataset": "mnist-5k",
    "hidden": 8,
    "objective": "flow",
    "epochs": 200,
    "limit": 1500,
    "batch_size": 32,
    "sample_epochs": [200],
    "seed": 3,
    "name": "timed",
    "timeout_s": 8,
}


def progress_of(c: httpx.Client, job_id: str) -> dict[str, Any]:
    job = job_of(c, job_id)
    return {"status": job["status"], "attempts": job["attempts"], **(job["progress"] or {})}


def test_a_timed_out_training_keeps_its_last_epoch_and_resumes_after_it(redis_url: str, tmp_path: Path) -> None:
    env = {"OMP_NUM_THREADS": "1"}
    with running_stack(redis_url, tmp_path, workers=0, **env) as stack, client_for(stack, TEST_KEYS[-95]) as c:
        stack.start_worker("train")
        job = c.post("/v1/jobs", json=BODY).json()
        first = finish(c, job["id"], 120)
        assert first["status"] == "timed_out", first
        assert first["error"]["type"] == "timed_out" and first["artifacts"] == []
        saved = first["progress"]["epochs_done"]
        assert saved >= 1, first["progress"]
        assert c.get("/v1/models/timed").status_code == 404  # no model from a run that did not end

        other = client_for(stack, TEST_KEYS[-96])
        assert other.post(f"/v1/jobs/{job['id']}/resume").status_code == 404  # another key's job is unknown
        resumed = c.post(f"/v1/jobs/{job['id']}/resume")
        assert resumed.status_code == 202, resumed.text
        assert resumed.json()["status"] in ("queued", "running") and resumed.json()["error"] is None
        seen = wait_until(
            lambda: (p := progress_of(c, job["id"]))["attempts"] == 2 and p.get("stage") == "training" and p,
            60,
            "the resumed attempt to train",
            every=0.02,
        )
        assert seen["epoch"] >= saved + 1, (seen, saved)  # it went on after the saved epoch, not from the start
        again = finish(c, job["id"], 120)
        assert again["status"] == "timed_out" and again["progress"]["epochs_done"] > saved
        conflict = c.post(f"/v1/jobs/{job['id']}/resume")
        assert conflict.status_code == 202  # timed out again: resumable again
        c.delete(f"/v1/jobs/{job['id']}")
        assert finish(c, job["id"], 60)["status"] == "canceled"
        ran = c.post(
            "/v1/jobs",
            json={
                "kind": "noise",
                "model": "mnist-ddpm",
                "sigmas": [0.1],
                "image": {"dataset": "mnist-5k", "index": 0},
            },
        )
        assert c.post(f"/v1/jobs/{ran.json()['id']}/resume").status_code == 409  # not a train job
