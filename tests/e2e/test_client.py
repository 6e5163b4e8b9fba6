"""The Python client (`diffusion_jobs.client`) against the real API, a real worker and a real Redis."""

import asyncio
import uuid

import numpy as np
import pytest

from core.schemas.responses import Job
from diffusion_jobs import client_errors as errors
from diffusion_jobs.client import AsyncClient, Client, Preview
from tests.helpers import SLOW_SAMPLE, TEST_KEYS, cli, decode, png, running_stack, stop

DIGIT = {"dataset": "mnist-5k", "index": 0}


@pytest.fixture
def api(stack, api_key):
    with Client(stack.url, api_key) as c:
        yield c


def test_noise_job_submitted_waited_for_and_downloaded(api, tmp_path):
    job = api.submit("noise", model="mnist-ddpm", image=DIGIT, sigmas=[0.0, 0.5], seed=3)
    assert isinstance(job, Job) and job.status in ("queued", "running", "succeeded")
    done = api.wait(job, timeout=60, raise_on_failure=True)
    assert done.status == "succeeded"
    assert done.params["sigmas"] == [0.0, 0.5]
    saved = api.download(done, dest=tmp_path)
    assert {p.name for p in saved} == {a.name for a in done.artifacts} >= {"image_0.png", "image_1.png"}
    clean, noisy = decode(saved[0].read_bytes()), decode((tmp_path / "image_1.png").read_bytes())
    assert clean.shape == noisy.shape == (28, 28)
    assert np.abs(noisy - clean).mean() > 0.1  # sigma 0.5 visibly noised it; sigma 0 left it alone
    assert np.abs(decode((tmp_path / "image_0.png").read_bytes()) - clean).max() == 0


def test_sample_job_from_a_body_and_one_artifact_by_name(api, tmp_path):
    body = {"kind": "sample", "model": "mnist-ddpm", "prompt": "7", "n": 2, "steps": 10, "seed": 5}
    job = api.wait(api.submit(body), timeout=120)
    assert job.status == "succeeded", job.error
    assert job.params["prompt"] == "7" and job.progress is not None
    [grid] = api.download(job.id, "grid.png", tmp_path / "out")
    assert grid == tmp_path / "out" / "grid.png"
    assert decode(grid.read_bytes()).shape[:2] != (28, 28)  # two digits side by side
    with pytest.raises(errors.NotFound):
        api.download(job, "nothing.png", tmp_path)


def test_upload_then_use_it_in_a_job(api, tmp_path):
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[8:20, 8:20] = 255
    path = tmp_path / "square.png"
    path.write_bytes(png(pixels))
    upload = api.upload(path)
    assert (upload.width, upload.height, upload.media_type) == (28, 28, "image/png")
    assert api.upload(png(pixels)).id != upload.id  # bytes work too
    job = api.wait(api.submit("noise", model="mnist-ddpm", image={"upload_id": upload.id}, sigmas=[0.0]), 60)
    [image] = api.download(job, "image_0.png", tmp_path / "out")
    assert np.array_equal(decode(image.read_bytes()), pixels / 255)


def test_jobs_models_and_cancel(api):
    first = api.submit("noise", model="mnist-ddpm", image=DIGIT, sigmas=[0.1], seed=1)
    slow = api.submit(SLOW_SAMPLE)
    page = api.jobs(limit=10)
    assert [j.id for j in page.jobs] == [slow.id, first.id]
    assert [j.id for j in api.jobs(kind="noise").jobs] == [first.id]
    canceled = api.cancel(slow)
    assert canceled.id == slow.id
    assert api.wait(slow, timeout=60).status == "canceled"
    with pytest.raises(errors.JobFailed) as failed:
        api.wait(slow.id, raise_on_failure=True)
    assert failed.value.job.status == "canceled"
    models = {m.id: m for m in api.models()}
    assert models["mnist-ddpm"].available and models["mnist-ddpm"].shipped
    assert api.model("mnist-flow").id == "mnist-flow"


def test_each_error_answer_is_its_own_class(api, stack):
    with pytest.raises(errors.ValidationError) as invalid:
        api.submit("noise", model="mnist-ddpm", image=DIGIT, sigmas=[-1])
    assert invalid.value.status == 422 and invalid.value.type == "validation_error"
    assert invalid.value.fields == ["noise.sigmas.0"] and "sigmas" in invalid.value.message
    with pytest.raises(errors.ValidationError, match="model"):
        api.submit("sample", model="no-such-model")
    with pytest.raises(errors.NotFound) as missing:
        api.get(str(uuid.uuid4()))
    assert missing.value.status == 404 and missing.value.message
    with Client(stack.url, "not-a-key") as stranger, pytest.raises(errors.Unauthorized) as refused:
        stranger.models()
    assert refused.value.status == 401
    api.submit("noise", model="mnist-ddpm", image=DIGIT, sigmas=[0.1], idempotency_key="k1")
    with pytest.raises(errors.Conflict):
        api.submit("noise", model="mnist-ddpm", image=DIGIT, sigmas=[0.2], idempotency_key="k1")
    with pytest.raises(errors.UnsupportedMediaType):
        api.upload(b"not an image at all")
    with pytest.raises(errors.PayloadTooLarge):
        api.upload(b"\x89PNG" + bytes(5 * 1024 * 1024))
    response = api.http.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert isinstance(errors.error_from(response), errors.MalformedRequest)
    assert all(isinstance(e, errors.ApiError) for e in (invalid.value, missing.value, refused.value))


def test_queue_full_rate_limited_and_timeouts(redis_url, tmp_path):
    env = {"MAX_QUEUE_DEPTH": "1", "RATE_LIMIT_WRITES": "3/minute"}
    with running_stack(redis_url, tmp_path, workers=0, **env) as stack, Client(stack.url, TEST_KEYS[-10]) as api:
        queued = api.submit("noise", model="mnist-ddpm", image=DIGIT, sigmas=[0.1])
        with pytest.raises(errors.JobTimeout) as late:
            api.wait(queued, timeout=0.5)
        assert isinstance(late.value, TimeoutError) and late.value.job.status == "queued"
        with pytest.raises(errors.Unavailable) as full:
            api.submit("noise", model="mnist-ddpm", image=DIGIT, sigmas=[0.2])
        assert full.value.status == 503 and full.value.retry_after and full.value.retry_after > 0
        assert api.cancel(queued).status == "canceled"
        with pytest.raises(errors.RateLimited) as limited:
            api.submit("noise", model="mnist-ddpm", image=DIGIT, sigmas=[0.3])
        assert limited.value.status == 429 and limited.value.retry_after and limited.value.retry_after > 0


def test_async_client_does_the_same(stack, api_key, tmp_path):
    async def scenario() -> None:
        async with AsyncClient(stack.url, api_key) as api:
            upload = await api.upload(png(np.full((28, 28), 128, dtype=np.uint8)))
            jobs = await asyncio.gather(
                api.submit("noise", model="mnist-ddpm", image={"upload_id": upload.id}, sigmas=[0.0]),
                api.submit({"kind": "noise", "model": "mnist-ddpm", "image": DIGIT, "sigmas": [0.2]}),
            )
            done = [await api.wait(j, timeout=60, raise_on_failure=True) for j in jobs]
            assert {j.status for j in done} == {"succeeded"}
            [path] = await api.download(done[0], "image_0.png", tmp_path)
            assert np.allclose(decode(path.read_bytes()), 128 / 255)
            assert {j.id for j in (await api.jobs()).jobs} == {j.id for j in jobs}
            assert any(m.id == "mnist-ddpm" for m in await api.models())
            stream = api.events(done[1])
            assert [e async for e in stream] == [done[1]]  # an ended job: its last snapshot, then the end
            assert [e async for e in api.events(done[1], last_event_id=stream.last_event_id)] == []
            with pytest.raises(errors.NotFound):
                await api.cancel(str(uuid.uuid4()))
            with pytest.raises(errors.ValidationError):
                await api.submit("noise", model="mnist-ddpm", image=DIGIT)

    asyncio.run(scenario())


def test_events_stream_snapshots_and_previews_until_the_end(api):
    job = api.submit("sample", model="mnist-ddpm", prompt="2", n=2, steps=30, seed=4)
    events = list(api.events(job))
    snapshots = [e for e in events if isinstance(e, Job)]
    assert snapshots[-1].status == "succeeded" and all(s.id == job.id for s in snapshots)
    steps = [s.progress.step for s in snapshots if s.progress and s.progress.stage == "sampling"]
    assert steps == sorted(steps) and len(steps) >= 2
    previews = [e for e in events if isinstance(e, Preview)]
    assert previews and all(p.job_id == job.id and p.png.startswith(b"\x89PNG") for p in previews)


def test_events_resume_after_the_last_seen_id(api):
    job = api.wait(api.submit("noise", model="mnist-ddpm", image=DIGIT, sigmas=[0.1]), 60)
    stream = api.events(job)
    [final] = list(stream)  # an ended job: its snapshot, then the stream closes
    assert final.status == "succeeded" and isinstance(stream.last_event_id, int)
    assert list(api.events(job, last_event_id=stream.last_event_id)) == []  # seen: nothing comes twice
    assert list(api.events(job, last_event_id=stream.last_event_id - 1)) == [final]


def test_events_go_on_after_the_connection_drops(stack, api):
    job = api.submit(SLOW_SAMPLE)
    stream = api.events(job)
    seen = []
    for event in stream:
        seen.append(stream.last_event_id)
        if isinstance(event, Job) and event.status == "running":
            break
    stop(stack.api)  # the connection drops; the same API comes back on the same port
    stack.api = stack._spawn("api", cli("api"))
    rest = []
    for event in stream:
        rest.append(event)
        seen.append(stream.last_event_id)
    assert isinstance(rest[-1], Job) and rest[-1].status == "succeeded"
    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # resumed after the last one seen: none twice
