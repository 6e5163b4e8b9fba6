"""GET /v1/jobs/{id}/events through the real API, real workers and Redis: the stream of a running, finished, canceled
and resumed job, its previews (a batch's jobs each with their own rows), keep-alive comments, and its refusals."""

import base64
import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.helpers import NOISE, SLOW_SAMPLE, TEST_KEYS, Stack, client_for, job_of, running_stack, submit, succeeded

SAMPLE = {"kind": "sample", "model": "mnist-ddpm", "prompt": "3", "n": 4, "seed": 3}  # 300 steps: seconds
GRID_4 = 2 * (28 + 2) + 2  # make_grid of four 28 px digits: 2 x 2 cells of 28 px, 2 px padding
GRID_1 = 28 + 2 * 2


@dataclass
class Stream:
    """What one connection to the events endpoint gave: its response headers, frames in order, and whether the server
    ended it (False: the reader stopped first)."""

    headers: httpx.Headers
    frames: list[dict[str, str]] = field(default_factory=list)
    closed_by_server: bool = False

    @property
    def events(self) -> list[dict[str, str]]:
        return [f for f in self.frames if "event" in f]

    def jobs(self) -> list[dict[str, Any]]:
        return [json.loads(f["data"]) for f in self.events if f["event"] == "job"]

    def previews(self) -> list[dict[str, Any]]:
        return [json.loads(f["data"]) for f in self.events if f["event"] == "preview"]

    def ids(self) -> list[int]:
        return [int(f["id"]) for f in self.events]


def frames_of(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """SSE frames: each a dict of its fields ("comment" for a comment line), ended by a blank line."""
    frame: dict[str, str] = {}
    for line in lines:
        if line == "":
            if frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            frame["comment"] = line[1:].strip()
        else:
            name, _, value = line.partition(":")
            frame[name] = value[1:] if value.startswith(" ") else value
    assert not frame, f"a frame left unended: {frame}"


def read(
    client: httpx.Client,
    job_id: str,
    last_event_id: int | None = None,
    until: Any = None,
    timeout: float = 120,
) -> Stream:
    """Reads the job's stream until the server ends it, or until `until(stream)` is true (then hangs up)."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        stream = Stream(response.headers)
        for frame in frames_of(response.iter_lines()):
            stream.frames.append(frame)
            if until is not None and until(stream):
                return stream
        stream.closed_by_server = True
        return stream


def png_size(data_url: str) -> tuple[int, int]:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :])))
    assert image.format == "PNG"
    return image.size


def queued(client: httpx.Client, body: dict[str, Any]) -> str:
    response = submit(client, body, wait=0)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def assert_well_ordered(stream: Stream) -> None:
    ids = stream.ids()
    assert ids == sorted(set(ids)), f"ids must only grow: {ids}"
    assert stream.events[0]["event"] == "job"


def test_a_running_sample_streams_its_progress_and_previews_then_ends(client):
    job_id = queued(client, SAMPLE)
    stream = read(client, job_id)
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["cache-control"] == "no-cache"
    assert stream.headers["x-accel-buffering"] == "no"
    assert stream.closed_by_server
    assert_well_ordered(stream)
    jobs = stream.jobs()
    assert jobs[-1]["status"] == "succeeded" and stream.events[-1]["event"] == "job"
    assert all(j["status"] != "succeeded" for j in jobs[:-1])
    assert jobs[-1] == job_of(client, job_id)  # the Job exactly as GET /v1/jobs/{id} shows it
    steps = [j["progress"]["step"] for j in jobs if j["status"] == "running" and j["progress"]]
    assert len(set(steps)) >= 3 and steps == sorted(steps), steps
    previews = stream.previews()
    assert previews, "a sampling job of seconds sends at least one preview"
    for preview in previews:
        assert preview["job_id"] == job_id and preview["stage"] == "sampling"
        assert preview["media_type"] == "image/png"
        assert 1 <= preview["step"] < preview["total"] == 300
        assert png_size(preview["data_url"]) == (GRID_4, GRID_4)
    assert [p["step"] for p in previews] == sorted(p["step"] for p in previews)


def test_a_finished_jobs_stream_sends_one_terminal_event_and_closes(client):
    job = succeeded(submit(client, NOISE))
    stream = read(client, job["id"], timeout=10)
    assert stream.closed_by_server
    assert [f["event"] for f in stream.events] == ["job"]
    assert stream.jobs() == [job_of(client, job["id"])]
    again = read(client, job["id"], timeout=10)
    assert again.ids() == stream.ids()  # the same snapshot keeps its id


def test_last_event_id_resumes_after_what_was_seen(client):
    done = succeeded(submit(client, NOISE))
    (seen,) = read(client, done["id"], timeout=10).ids()
    assert read(client, done["id"], last_event_id=seen, timeout=10).frames == []  # saw the end: nothing more
    assert read(client, done["id"], last_event_id=seen - 1, timeout=10).jobs()[0]["status"] == "succeeded"

    job_id = queued(client, SAMPLE)
    first = read(client, job_id, until=lambda s: len(s.jobs()) >= 3 and s.jobs()[-1]["status"] == "running")
    last = first.ids()[-1]
    rest = read(client, job_id, last_event_id=last)
    assert rest.closed_by_server and rest.events
    assert min(rest.ids()) > last
    assert rest.jobs()[-1]["status"] == "succeeded"
    seen_steps = {j["progress"]["step"] for j in first.jobs() if j["progress"]}
    resumed_steps = [j["progress"]["step"] for j in rest.jobs() if j["progress"]]
    assert min(resumed_steps) >= max(seen_steps)


def test_a_canceled_jobs_stream_ends_with_canceled(client):
    job_id = queued(client, SLOW_SAMPLE)
    running = read(client, job_id, until=lambda s: any(j["status"] == "running" for j in s.jobs()))
    assert not running.closed_by_server
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 202
    stream = read(client, job_id, last_event_id=running.ids()[-1])
    assert stream.closed_by_server
    assert stream.jobs()[-1]["status"] == "canceled"
    assert stream.events[-1]["event"] == "job"


def test_another_keys_job_and_a_bad_last_event_id_are_refused_with_the_envelope(stack, client):
    job = succeeded(submit(client, NOISE))
    with client_for(stack, TEST_KEYS[-1]) as other:
        response = other.get(f"/v1/jobs/{job['id']}/events")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
    assert client.get("/v1/jobs/not-a-job/events").status_code == 404
    bad = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "soon"})
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["loc"] == ["header", "Last-Event-ID"]
    assert httpx.get(f"{stack.url}/v1/jobs/{job['id']}/events").status_code == 401


@pytest.fixture(scope="module")
def idle(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack with no worker until a test starts one, and quick keep-alives."""
    with running_stack(redis_url, tmp_path_factory.mktemp("idle"), workers=0, SSE_KEEPALIVE_S="0.3") as s:
        yield s


def test_keep_alive_comments_arrive_while_nothing_happens(idle, api_key):
    with client_for(idle, api_key) as c:
        job_id = queued(c, NOISE)
        stream = read(c, job_id, until=lambda s: sum("comment" in f for f in s.frames) >= 3, timeout=20)
        assert [j["status"] for j in stream.jobs()] == ["queued"]
        assert {f.get("comment") for f in stream.frames[1:]} == {"keep-alive"}
        assert c.delete(f"/v1/jobs/{job_id}").status_code == 202
        assert read(c, job_id, timeout=20).jobs()[-1]["status"] == "canceled"


def test_jobs_sampled_as_one_batch_each_preview_their_own_rows(idle, api_key):
    with client_for(idle, api_key) as c:
        one, four = (queued(c, {**SAMPLE, "n": n, "seed": n}) for n in (1, 4))
        with ThreadPoolExecutor(2) as pool:
            reading = [pool.submit(read, c, job_id) for job_id in (one, four)]
            worker = idle.start_worker("mnist", "--burst")
            streams = [r.result(timeout=180) for r in reading]
        assert worker.wait(60) == 0
    for stream, size in zip(streams, (GRID_1, GRID_4), strict=True):
        assert stream.closed_by_server
        assert_well_ordered(stream)
        final = stream.jobs()[-1]
        assert final["status"] == "succeeded" and final["result"]["batch"]["jobs"] == 2
        assert stream.previews() and {png_size(p["data_url"]) for p in stream.previews()} == {(size, size)}
