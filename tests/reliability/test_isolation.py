"""Security promises of docs/operations/reliability.md: nobody sees what is not theirs (404, never 403), no payload
is unpickled, and no server listens off loopback without keys. Real API, worker and Redis processes."""

import pickle
import subprocess
import uuid
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from rq import Queue

from tests.helpers import TEST_KEYS, cli, client_for, png, running_stack, submit

DIGIT = {"dataset": "mnist-5k", "index": 4}
NOISE = {"kind": "noise", "model": "mnist-ddpm", "image": DIGIT, "sigmas": [0.2]}
TINY_MODEL = {
    "kind": "train",
    "name": "mine-only",
    "dataset": "mnist-5k",
    "objective": "denoiser",
    "hidden": 8,
    "epochs": 1,
    "limit": 100,
    "batch_size": 32,
    "seed": 1,
}


def not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.json()["error"]["type"] == "not_found"


@pytest.mark.slow
def test_another_key_sees_nothing_of_mine(redis_url, tmp_path):
    with (
        running_stack(redis_url, tmp_path, OMP_NUM_THREADS="1") as stack,
        client_for(stack, TEST_KEYS[-90]) as mine,
        client_for(stack, TEST_KEYS[-91]) as theirs,
    ):
        stack.start_worker("train")
        job = submit(mine, NOISE).json()
        assert job["status"] == "succeeded"
        upload = mine.post(
            "/v1/uploads", content=png(np.zeros((28, 28), np.uint8)), headers={"Content-Type": "image/png"}
        ).json()
        model = submit(mine, TINY_MODEL, wait=120).json()
        assert model["status"] == "succeeded", model

        for path in (
            f"/v1/jobs/{job['id']}",
            f"/v1/jobs/{job['id']}/artifacts/image_0.png",
            f"/v1/jobs/{job['id']}/events",
            f"/v1/jobs/{uuid.uuid4()}",  # a guessed id is as unknown as another's
            "/v1/models/mine-only",
        ):
            not_found(theirs.get(path))
        not_found(theirs.delete(f"/v1/jobs/{job['id']}"))
        not_found(theirs.delete("/v1/models/mine-only"))
        assert theirs.get("/v1/jobs").json()["jobs"] == []
        assert "mine-only" not in {m["id"] for m in theirs.get("/v1/models").json()["models"]}
        assert "mine-only" in {m["id"] for m in mine.get("/v1/models").json()["models"]}

        borrowed = {
            "upload": {**NOISE, "image": {"upload_id": upload["id"]}},
            "job output": {**NOISE, "image": {"job_id": job["id"], "artifact": "image_0.png"}},
            "model": {"kind": "denoise", "model": "mine-only", "method": "one_step", "image": DIGIT},
        }
        for what, body in borrowed.items():
            refused = theirs.post("/v1/jobs", json=body)
            assert refused.status_code == 422, (what, refused.text)
        assert theirs.get("/v1/jobs").json()["jobs"] == []  # nothing of theirs was made from mine

        for name in ("..%2F..%2Fetc%2Fpasswd", "..%2Fmetrics.json", "%2e%2e%2fimage_0.png", "..\\image_0.png", "%00"):
            not_found(mine.get(f"/v1/jobs/{job['id']}/artifacts/{name}"))
        assert mine.get(f"/v1/jobs/{job['id']}/artifacts/image_0.png").status_code == 200


class Unpickled:
    """Unpickling this creates the marker file: proof that a payload was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def test_a_pickled_payload_planted_in_the_queue_is_never_unpickled(redis_url, tmp_path):
    marker = tmp_path / "unpickled"
    with running_stack(redis_url, tmp_path, workers=0) as stack, client_for(stack, TEST_KEYS[-92]) as c:
        conn = redis.Redis.from_url(stack.env["REDIS_URL"])
        planted = Queue("mnist", connection=conn).enqueue("worker.tasks.run_job", {})  # RQ's default: pickle
        conn.hset(f"rq:job:{planted.id}", "data", zlib.compress(pickle.dumps(Unpickled(marker))))
        honest = submit(c, NOISE, wait=0).json()
        worker = stack.start_worker("mnist", "--burst")
        assert worker.wait(60) == 0
        assert not marker.exists()
        assert conn.hget(f"rq:job:{planted.id}", "status") == b"failed"
        assert c.get(f"/v1/jobs/{honest['id']}").json()["status"] == "succeeded"  # and the worker went on


def test_without_keys_the_api_refuses_to_listen_off_loopback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOST": "0.0.0.0", "PORT": "1", "VAR_DIR": str(tmp_path), "API_KEYS": ""}
    done = subprocess.run(cli("api"), env=env, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"refusing to listen on 0.0.0.0 with no API_KEYS set" in done.stderr
