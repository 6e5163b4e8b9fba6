"""Hand-made hostile inputs (docs/operations/reliability.md): each gets its 4xx at the door, and no worker ever sees
it (nothing is queued). One API process on a real Redis, no worker: anything that got through would sit in the queue."""

import io
import json
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from tests.helpers import TEST_KEYS, Stack, b64, client_for, png, running_stack

DIGIT = {"dataset": "mnist-5k", "index": 0}
NOISE = {"kind": "noise", "model": "mnist-ddpm", "sigmas": [0.1]}


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def one_bit_png(width: int, height: int) -> bytes:
    """A valid black 1-bit PNG, built row by row so a 20,000 x 20,000 one never exists in memory (a few KB)."""
    pack = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    idat = b"".join(pack.compress(row) for _ in range(height)) + pack.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


NOISY = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
LONG_THIN = one_bit_png(100_000, 1)
HUGE = one_bit_png(20_000, 20_000)
TRUNCATED_JPEG = jpeg(NOISY)[: len(jpeg(NOISY)) // 2]
HTML = b"<!doctype html><html><body><script>alert(1)</script></body></html>"


def upload(data: bytes, media_type: str) -> Callable[[httpx.Client], httpx.Response]:
    return lambda c: c.post("/v1/uploads", content=data, headers={"Content-Type": media_type})


def job(body: dict[str, Any]) -> Callable[[httpx.Client], httpx.Response]:
    return lambda c: c.post("/v1/jobs", json=body)


def raw_job(text: str) -> Callable[[httpx.Client], httpx.Response]:
    return lambda c: c.post("/v1/jobs", content=text.encode(), headers={"Content-Type": "application/json"})


def fifty_mb(c: httpx.Client) -> httpx.Response:
    return c.post(
        "/v1/uploads", content=b"\x89PNG" + b"\x00" * (50 * 1024 * 1024), headers={"Content-Type": "image/png"}
    )


def fifty_mb_streamed(c: httpx.Client) -> httpx.Response:
    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it streams in
        for _ in range(50 * 16):
            yield b"\x00" * 65536

    return c.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})


NESTED = "[" * 100_000 + "]" * 100_000
DIGIT_JSON = json.dumps(DIGIT)
CASES = {
    "1x100000 png upload": (upload(LONG_THIN, "image/png"), 413, "a side may be at most 8192"),
    "1x100000 png in a job": (job({**NOISE, "image": {"base64": b64(LONG_THIN)}}), 422, "a side may be at most 8192"),
    "20000x20000 png of a few KB": (upload(HUGE, "image/png"), 413, "more than the limit"),
    "20000x20000 png in a job": (job({**NOISE, "image": {"base64": b64(HUGE)}}), 422, "more than the limit"),
    "truncated jpeg upload": (upload(TRUNCATED_JPEG, "image/jpeg"), 415, "truncated or corrupt"),
    "truncated jpeg in a job": (job({**NOISE, "image": {"base64": b64(TRUNCATED_JPEG)}}), 422, "truncated"),
    "html named png": (upload(HTML, "image/png"), 415, "not a PNG, JPEG or WebP"),
    "html as multipart png": (
        lambda c: c.post("/v1/uploads", files={"file": ("cat.png", HTML, "image/png")}),
        415,
        "not a PNG, JPEG or WebP",
    ),
    "base64 with junk": (job({**NOISE, "image": {"base64": "iVBORw0KGgo=$$$<script>"}}), 422, "not valid base64"),
    "mask of the wrong size": (
        job({"kind": "inpaint", "model": "mnist-ddpm", "image": DIGIT, "mask": {"base64": b64(png(NOISY))}}),
        422,
        "is 64x64 but the image is 28x28",
    ),
    "NaN sigma": (
        raw_job(f'{{"kind": "noise", "model": "mnist-ddpm", "image": {DIGIT_JSON}, "sigmas": [NaN]}}'),
        422,
        "finite",
    ),
    "infinite guidance": (
        raw_job('{"kind": "sample", "model": "mnist-ddpm", "guidance_scale": Infinity}'),
        422,
        "finite",
    ),
    "1e999 seed": (raw_job('{"kind": "sample", "model": "mnist-ddpm", "seed": 1e999}'), 422, "seed"),
    "deeply nested json": (raw_job(f'{{"kind": "sample", "model": "mnist-ddpm", "prompt": {NESTED}}}'), 400, "nested"),
    "NaN in a cursor": (lambda c: c.get("/v1/jobs", params={"cursor": b64(b"nan|x")}), 422, "cursor"),
    "50 MB body": (fifty_mb, 413, "larger than the limit"),
    "50 MB body streamed": (fifty_mb_streamed, 413, "larger than the limit"),
}


@pytest.fixture(scope="module")
def door(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, tmp_path_factory.mktemp("door"), workers=0) as s:
        yield s


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_input_gets_its_4xx_and_reaches_no_worker(door: Stack, case: str) -> None:
    send, status, words = CASES[case]
    key = TEST_KEYS[-60 - list(CASES).index(case)]
    with client_for(door, key) as c:
        response = send(c)
        assert response.status_code == status, response.text[:500]
        error = response.json()["error"]
        assert words in error["message"], error
        assert "Traceback" not in response.text
        assert c.get("/v1/jobs").json()["jobs"] == []
    conn = redis.Redis.from_url(door.env["REDIS_URL"])
    assert [conn.llen(f"rq:queue:{q}") for q in ("mnist", "train", "deepfloyd")] == [0, 0, 0]
    assert door.api is not None and door.api.poll() is None
