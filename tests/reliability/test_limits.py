"""Per-key request rates (docs/api.md: 429 with `Retry-After`): real API, real Redis; a refused request leaves
nothing."""

from tests.helpers import NOISE, TEST_KEYS, client_for, running_stack


def test_each_key_has_its_own_write_and_read_budget(redis_url, tmp_path):
    limits = {"RATE_LIMIT_WRITES": "5/minute", "RATE_LIMIT_READS": "12/minute"}
    with (
        running_stack(redis_url, tmp_path, workers=0, **limits) as stack,
        client_for(stack, TEST_KEYS[-20]) as busy,
        client_for(stack, TEST_KEYS[-21]) as other,
    ):
        accepted = [busy.post("/v1/jobs", json={**NOISE, "seed": i}) for i in range(5)]
        assert [r.status_code for r in accepted] == [202] * 5
        refused = busy.post("/v1/jobs", json={**NOISE, "seed": 5})
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        error = refused.json()["error"]
        assert error["type"] == "rate_limited", error
        assert "5 per 1 minute" in error["message"] and "write" in error["message"]

        assert other.post("/v1/jobs", json=NOISE).status_code == 202  # another key is not slowed down

        listed = busy.get("/v1/jobs").json()["jobs"]  # reads have their own budget
        assert sorted(j["id"] for j in listed) == sorted(
            r.json()["id"] for r in accepted
        )  # the refused one left nothing
        reads = [busy.get(f"/v1/jobs/{accepted[0].json()['id']}").status_code for _ in range(12)]
        assert reads[:11] == [200] * 11 and reads[11] == 429
        assert busy.get("/healthz").status_code == 200  # health checks are nobody's


def test_the_deployments_caps_and_queue_depth(redis_url, tmp_path):
    caps = {"MAX_N": "4", "MAX_STEPS": "20", "MAX_EPOCHS": "2", "MAX_BATCH_SIZE": "64", "MAX_QUEUE_DEPTH": "3"}
    train = {"kind": "train", "name": "capped", "dataset": "mnist-5k", "objective": "flow"}
    with running_stack(redis_url, tmp_path, workers=0, **caps) as stack, client_for(stack, TEST_KEYS[-22]) as c:
        for body, field in [
            ({"kind": "sample", "model": "mnist-flow", "n": 5}, "n"),
            ({"kind": "sample", "model": "mnist-flow", "steps": 21}, "steps"),
            ({**train, "epochs": 3}, "epochs"),
            ({**train, "epochs": 1, "batch_size": 128}, "batch_size"),
        ]:
            refused = c.post("/v1/jobs", json=body)
            assert refused.status_code == 422, refused.text
            detail = refused.json()["error"]["details"][0]
            assert detail["loc"] == ["body", field] and "at most" in detail["msg"] and "deployment" in detail["msg"]
        assert c.get("/v1/jobs").json()["jobs"] == []

        assert [c.post("/v1/jobs", json={**NOISE, "seed": i}).status_code for i in range(3)] == [202] * 3
        full = c.post("/v1/jobs", json=NOISE)
        assert full.status_code == 503 and int(full.headers["Retry-After"]) > 0, full.text
        assert "queue is full" in full.json()["error"]["message"]
        assert len(c.get("/v1/jobs").json()["jobs"]) == 3  # the refused one left nothing
