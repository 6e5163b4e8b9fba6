"""Every malformed or invalid request answers the envelope of docs/api.md, naming the field and the rule."""

import httpx
import numpy as np
import pytest

from tests.helpers import b64, png

DIGIT = {"dataset": "mnist-5k", "index": 0}


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "details"}
    assert "Traceback" not in response.text
    return body["error"]


def locs(error: dict) -> list[list]:
    return [d["loc"] for d in error["details"]]


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"kind": "paint", "model": "mnist-ddpm"}, ["body"], "noise"),
        ({"kind": "noise", "model": "mnist-ddpm", "sigmas": [0.1]}, ["body", "noise", "image"], "Field required"),
        (
            {"kind": "noise", "model": "mnist-ddpm", "image": DIGIT, "timesteps": [-1]},
            ["body", "noise", "timesteps", 0],
            "greater than or equal to 0",
        ),
        (
            {"kind": "noise", "model": "mnist-ddpm", "image": DIGIT, "timesteps": [1], "sigmas": [1]},
            ["body", "noise"],
            "exactly one of `timesteps` or `sigmas`",
        ),
        (
            {"kind": "noise", "model": "mnist-ddpm", "image": {}, "sigmas": [1]},
            ["body", "noise", "image"],
            "exactly one of",
        ),
        (
            {"kind": "noise", "model": "mnist-ddpm", "image": DIGIT, "sigmas": [0.1], "color": "red"},
            ["body", "noise", "color"],
            "Extra inputs",
        ),
        ({"kind": "denoise", "model": "mnist-ddpm", "image": DIGIT, "kernel_size": 4}, ["body", "denoise"], "odd"),
        (
            {"kind": "noise", "model": "mnist-ddpm", "image": DIGIT, "sigmas": [0.1], "seed": -3},
            ["body", "noise", "seed"],
            "greater than or equal to 0",
        ),
    ],
)
def test_schema_rules_are_422_with_the_field(client, body, loc, words):
    error = error_of(client.post("/v1/jobs", json=body), 422)
    assert error["type"] == "validation_error"
    assert any(d[: len(loc)] == loc for d in locs(error)), error
    assert words in error["message"] + str(error["details"])


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"kind": "noise", "model": "mnist-xl", "image": DIGIT, "sigmas": [0.1]}, ["body", "model"], "unknown model"),
        (
            {"kind": "noise", "model": "mnist-ddpm", "image": DIGIT, "timesteps": [300]},
            ["body", "timesteps", 0],
            "below 300",
        ),
        (
            {"kind": "noise", "model": "mnist-flow", "image": DIGIT, "timesteps": [10]},
            ["body", "timesteps"],
            "flow-matching",
        ),
        (
            {"kind": "noise", "model": "mnist-ddpm", "image": {"dataset": "mnist-5k", "index": 5000}, "sigmas": [0.1]},
            ["body", "image", "index"],
            "below 5000",
        ),
        (
            {"kind": "noise", "model": "mnist-ddpm", "image": {"dataset": "cifar", "index": 1}, "sigmas": [0.1]},
            ["body", "image", "dataset"],
            "unknown dataset",
        ),
        (
            {"kind": "noise", "model": "mnist-ddpm", "image": {"upload_id": "nope"}, "sigmas": [0.1]},
            ["body", "image", "upload_id"],
            "no upload",
        ),
        (
            {"kind": "noise", "model": "mnist-ddpm", "image": {"base64": "%%%not base64"}, "sigmas": [0.1]},
            ["body", "image", "base64"],
            "not valid base64",
        ),
        (
            {"kind": "noise", "model": "mnist-ddpm", "image": {"base64": b64(b"<html>hi</html>")}, "sigmas": [0.1]},
            ["body", "image", "base64"],
            "not a PNG, JPEG or WebP",
        ),
        (
            {"kind": "noise", "model": "mnist-ddpm", "image": {"job_id": "3f0c", "artifact": "x.png"}, "sigmas": [0.1]},
            ["body", "image", "job_id"],
            "no job of yours",
        ),
        ({"kind": "sample", "model": "mnist-denoiser"}, ["body", "kind"], "cannot run sample"),
    ],
)
def test_rules_of_the_deployment_are_422_with_the_field(client, body, loc, words):
    error = error_of(client.post("/v1/jobs", json=body), 422)
    assert loc in locs(error), error
    assert words in error["message"]


def test_a_truncated_image_is_refused_at_the_door(client):
    data = png(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    body = {"kind": "noise", "model": "mnist-ddpm", "image": {"base64": b64(data[: len(data) // 2])}, "sigmas": [1]}
    error = error_of(client.post("/v1/jobs", json=body), 422)
    assert "truncated or corrupt" in error["message"]


def test_malformed_json_is_400(client):
    response = client.post("/v1/jobs", content=b'{"kind": "noise",', headers={"Content-Type": "application/json"})
    assert error_of(response, 400)["type"] == "malformed_request"


def test_unknown_route_and_method(client):
    assert error_of(client.get("/v1/nothing"), 404)["type"] == "not_found"
    assert error_of(client.put("/v1/jobs"), 405)["type"] == "method_not_allowed"


def test_unknown_job_is_404(client):
    assert error_of(client.get("/v1/jobs/8d3b6a8e-0000-4000-8000-000000000000"), 404)["type"] == "not_found"
    assert error_of(client.get("/v1/jobs/x/artifacts/image_0.png"), 404)["type"] == "not_found"


def test_keys(stack, client):
    assert error_of(httpx.get(stack.url + "/v1/jobs"), 401)["type"] == "unauthorized"
    assert error_of(httpx.get(stack.url + "/v1/jobs", headers={"Authorization": "Bearer wrong"}), 401)
    assert error_of(httpx.get(stack.url + "/v1/jobs", headers={"Authorization": "Basic abc"}), 401)
    assert httpx.get(stack.url + "/healthz").status_code == 200


def test_another_callers_job_and_artifacts_are_404(stack, client):
    job = client.post(
        "/v1/jobs",
        json={"kind": "noise", "model": "mnist-ddpm", "image": DIGIT, "sigmas": [0.1]},
        headers={"Prefer": "wait=20"},
    ).json()
    assert job["status"] == "succeeded"
    with httpx.Client(base_url=stack.url, headers={"Authorization": "Bearer test-key-499"}) as other:
        assert error_of(other.get(f"/v1/jobs/{job['id']}"), 404)
        assert error_of(other.get(f"/v1/jobs/{job['id']}/artifacts/image_0.png"), 404)
        assert error_of(other.delete(f"/v1/jobs/{job['id']}"), 404)
        assert job["id"] not in [j["id"] for j in other.get("/v1/jobs").json()["jobs"]]
        chained = {
            "kind": "noise",
            "model": "mnist-ddpm",
            "sigmas": [0.1],
            "image": {"job_id": job["id"], "artifact": "image_0.png"},
        }
        assert ["body", "image", "job_id"] in locs(error_of(other.post("/v1/jobs", json=chained), 422))
    assert error_of(client.get(f"/v1/jobs/{job['id']}/artifacts/..%2F..%2Fetc%2Fpasswd"), 404)
    assert error_of(client.get(f"/v1/jobs/{job['id']}/artifacts/grid.png"), 404)  # one image: no grid


def test_uploads_refuse_what_is_not_an_accepted_image(client):
    text = client.post("/v1/uploads", content=b"hello", headers={"Content-Type": "text/plain"})
    assert error_of(text, 415)["type"] == "unsupported_media_type"
    html = client.post("/v1/uploads", content=b"<html></html>", headers={"Content-Type": "image/png"})
    assert error_of(html, 415)
    jpeg_as_png = client.post(
        "/v1/uploads", content=png(np.zeros((8, 8), np.uint8)), headers={"Content-Type": "image/jpeg"}
    )
    assert "declared image/jpeg but its bytes are image/png" in error_of(jpeg_as_png, 415)["message"]
    assert error_of(client.post("/v1/uploads", content=b"", headers={"Content-Type": "image/png"}), 422)
    assert error_of(client.post("/v1/uploads", files={"other": ("a.png", b"x", "image/png")}), 422)


def test_too_large_bodies_are_413(client):
    big = b"\x00" * (5 * 1024 * 1024)  # the test stack's limit is 4 MiB
    assert error_of(client.post("/v1/uploads", content=big, headers={"Content-Type": "image/png"}), 413)

    def chunks():  # no Content-Length: refused while streaming
        for _ in range(80):
            yield b"\x00" * 65536

    assert error_of(client.post("/v1/uploads", content=chunks(), headers={"Content-Type": "image/png"}), 413)


def test_decompression_bomb_upload_is_413(client):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buf, format="PNG")  # 25 M pixels, a few KB; the limit is 16.7 M
    assert len(buf.getvalue()) < 100_000
    error = error_of(client.post("/v1/uploads", content=buf.getvalue(), headers={"Content-Type": "image/png"}), 413)
    assert "more than the limit" in error["message"]


def test_wait_beyond_60_seconds_is_422(client):
    assert ["query", "wait"] in locs(error_of(client.get("/v1/jobs/x?wait=61"), 422))
