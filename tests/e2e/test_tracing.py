"""OpenTelemetry traces end to end: a real OTLP/HTTP receiver in this process (`http.server` on a free port, decoding
each export with opentelemetry-proto), the real API and worker processes exporting to it through the standard OTEL_*
variables, a real Redis, and a real webhook receiver. One job's trace must run from its POST through the enqueue, the
worker (model load, stages with their steps, artifact writes) to its webhook's POST, with the right parents."""

import gzip
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from core.tracing import OTLP, exporter_names
from tests.helpers import Stack, client_for, finish, running_stack, wait_until

SECRET = "test-webhook-secret"
SAMPLE = {"kind": "sample", "model": "mnist-flow", "prompt": "3", "n": 1, "steps": 5, "seed": 3}
SERVER, PRODUCER, CONSUMER, CLIENT = 2, 4, 5, 3  # OTLP's Span.SpanKind
UNSET_OTEL = {name: "" for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")}


@dataclass
class Post:
    path: str
    headers: Message
    body: bytes


class Recorder:
    """An HTTP server that records every POST and answers 200: an OTLP receiver (POST /v1/traces, answered with an
    empty ExportTraceServiceResponse) and a webhook receiver in one."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                recorder.posts.append(Post(self.path, self.headers, body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> "Recorder":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def exports(self) -> list[Post]:
        return [post for post in self.posts if post.path == "/v1/traces"]

    def hooks(self) -> list[Post]:
        return [post for post in self.posts if post.path == "/hooks/jobs"]

    def spans(self) -> list["Span"]:
        return [span for post in self.exports() for span in decode(post.body)]


@dataclass
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (trace id, span id)


def value(any_value: AnyValue) -> Any:
    which = any_value.WhichOneof("value")
    if which == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return getattr(any_value, which) if which else None


def attrs(pairs: Any) -> dict[str, Any]:
    return {pair.key: value(pair.value) for pair in pairs}


def decode(body: bytes) -> list[Span]:
    """The spans of one OTLP export, as the protobuf the SDK's exporter sent."""
    request = ExportTraceServiceRequest.FromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        service = attrs(resource_spans.resource.attributes)["service.name"]
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                spans.append(
                    Span(
                        service,
                        s.name,
                        s.kind,
                        s.trace_id.hex(),
                        s.span_id.hex(),
                        s.parent_span_id.hex(),
                        attrs(s.attributes),
                        [(e.name, attrs(e.attributes)) for e in s.events],
                        [(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                    )
                )
    return spans


def one(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    with Recorder() as r:
        yield r


def traced_env(recorder: Recorder) -> dict[str, str]:
    return {
        **UNSET_OTEL,
        "OTEL_EXPORTER_OTLP_ENDPOINT": recorder.url,
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export every 0.2 s, not every 5 s
        "OTEL_TRACES_EXPORTER": "",
        "OTEL_SDK_DISABLED": "",
        "OTEL_SERVICE_NAME": "",
        "WEBHOOK_SECRET": SECRET,
    }


@pytest.fixture(scope="module")
def traced_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory, recorder: Recorder) -> Iterator[Stack]:
    with running_stack(redis_url, tmp_path_factory.mktemp("traced"), **traced_env(recorder)) as stack:
        yield stack


def test_one_trace_follows_a_job_from_its_post_through_the_worker_to_its_webhook(traced_stack, recorder, api_key):
    with client_for(traced_stack, api_key) as client:
        response = client.post("/v1/jobs", json={**SAMPLE, "webhook": recorder.url + "/hooks/jobs"})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        job = finish(client, job_id, 120)
    assert job["status"] == "succeeded", job
    wait_until(lambda: recorder.hooks(), 20, "the completed webhook")
    ours = {"POST /v1/jobs", "enqueue", "job sample", "model load", "stage sampling", "artifact write", "webhook"}
    # each process exports on its own schedule: the API's webhook span can arrive before the worker's last spans
    wait_until(lambda: ours <= {s.name for s in recorder.spans()}, 20, "the spans of both processes")

    spans = recorder.spans()
    mine = [s for s in spans if s.attributes.get("job.id") == job_id or job_id in s.attributes.get("job.ids", [])]
    (trace_id,) = {s.trace_id for s in mine}  # one trace for the job, whichever process made the span
    trace = [s for s in spans if s.trace_id == trace_id]
    assert {s.service for s in trace} == {"diffusion-jobs-api", "diffusion-jobs-worker"}

    root = one(trace, "POST /v1/jobs")  # FastAPI's own request span (service/telemetry.py)
    assert root.parent_id == "" and root.kind == SERVER and root.service == "diffusion-jobs-api"
    assert root.attributes["http.response.status_code"] == 202 and root.attributes["http.route"] == "/v1/jobs"
    enqueue = one(trace, "enqueue")
    assert enqueue.kind == PRODUCER and enqueue.attributes["job.ids"] == [job_id]
    endpoint = one(trace, "fastapi.endpoint")  # the route's function, where the job is admitted and enqueued
    assert enqueue.parent_id == endpoint.span_id and endpoint.parent_id == root.span_id

    run = one(trace, "job sample")
    assert run.service == "diffusion-jobs-worker" and run.kind == CONSUMER
    assert run.parent_id == enqueue.span_id  # the carrier in the job's meta crossed the queue
    assert run.attributes["job.outcome"] == "succeeded" and run.attributes["job.attempt"] == 1
    assert run.attributes["messaging.destination.name"] == "mnist"  # the normal priority's queue of the pool

    load = one(trace, "model load")
    assert load.parent_id == run.span_id and load.attributes["model.id"] == "mnist-flow"
    stage = one(trace, "stage sampling")
    assert stage.parent_id == run.span_id and stage.attributes["stage.total_steps"] == 5
    assert [(name, a["step"], a["total"]) for name, a in stage.events] == [("step", i, 5) for i in range(1, 6)]
    writes = [s for s in trace if s.name == "artifact write"]
    assert {s.attributes["artifact.name"] for s in writes} == {a["name"] for a in job["artifacts"]} == {"image_0.png"}
    assert all(s.parent_id == run.span_id and s.service == "diffusion-jobs-worker" for s in writes)

    hook = one(trace, "webhook")
    assert hook.service == "diffusion-jobs-api" and hook.kind == CLIENT and hook.parent_id == enqueue.span_id
    assert hook.attributes["webhook.event"] == "completed" and hook.attributes["webhook.try"] == 1
    (delivered,) = recorder.hooks()
    assert delivered.headers["traceparent"].split("-")[:3] == ["00", trace_id, hook.span_id]  # the receiver may go on
    assert {s.name for s in trace if not s.name.startswith("fastapi.")} == ours  # and FastAPI's inner spans


def test_a_request_with_a_traceparent_continues_the_callers_trace(traced_stack, recorder, api_key):
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {"traceparent": f"00-{caller_trace}-{caller_span}-01"}
    with client_for(traced_stack, api_key) as client:
        assert client.get("/v1/jobs", headers=headers).status_code == 200
        assert client.get("/healthz", headers=headers).status_code == 200  # the probes are not traced
    wait_until(lambda: [s for s in recorder.spans() if s.trace_id == caller_trace], 20, "the request's span")
    time.sleep(0.5)  # the probe's span, were there one, would come within 0.2 s
    (span,) = [s for s in recorder.spans() if s.trace_id == caller_trace and s.kind == SERVER]
    assert span.name == "GET /v1/jobs" and span.parent_id == caller_span
    assert span.attributes["http.response.status_code"] == 200
    assert not [s for s in recorder.spans() if s.attributes.get("url.path") == "/healthz"]


def test_jobs_run_as_one_batch_each_keep_their_own_trace_linked_to_the_first(redis_url, tmp_path, recorder, api_key):
    """Queued while no worker runs, two compatible jobs are claimed as one batch (worker/batching.py)."""
    with running_stack(redis_url, tmp_path, workers=0, **traced_env(recorder)) as stack:
        with client_for(stack, api_key) as client:
            ids = []
            for seed in (1, 2):
                response = client.post("/v1/jobs", json={**SAMPLE, "seed": seed})
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            stack.start_worker()
            jobs = [finish(client, job_id, 120) for job_id in ids]
        assert [job["result"]["batch"]["jobs"] for job in jobs] == [2, 2], jobs
        runs = wait_until(lambda: job_spans(recorder, ids), 20, "both jobs' spans")

    lead, other = runs
    assert lead.trace_id != other.trace_id  # each job its own trace: its own request's
    assert other.links == [(lead.trace_id, lead.span_id)] and lead.links == []
    for run, job_id in zip(runs, ids, strict=True):
        trace = [s for s in recorder.spans() if s.trace_id == run.trace_id]
        enqueue = one(trace, "enqueue")
        assert run.parent_id == enqueue.span_id and enqueue.attributes["job.ids"] == [job_id]
        stage = one(trace, "stage sampling")
        assert stage.parent_id == run.span_id and len(stage.events) == 5
        assert one(trace, "artifact write").parent_id == run.span_id
    assert one([s for s in recorder.spans() if s.trace_id == lead.trace_id], "model load").parent_id == lead.span_id
    assert not [s for s in recorder.spans() if s.trace_id == other.trace_id and s.name == "model load"]


def job_spans(recorder: Recorder, ids: list[str]) -> list[Span] | None:
    """The worker's span of each job, in the order of `ids`, once all have arrived."""
    runs = {s.attributes["job.id"]: s for s in recorder.spans() if s.name == "job sample"}
    return [runs[job_id] for job_id in ids] if all(job_id in runs for job_id in ids) else None


def test_the_environment_turns_tracing_on_only_when_it_names_an_exporter():
    assert exporter_names({}) == []
    assert exporter_names({"OTEL_SERVICE_NAME": "x", "OTEL_BSP_SCHEDULE_DELAY": "200"}) == []
    assert exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}) == []
    assert exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == [OTLP]
    assert exporter_names({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}) == [OTLP]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "console"}) == ["console"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "otlp,console"}) == [OTLP, "console"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == []
    assert exporter_names({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == []


def test_without_otel_variables_a_process_configures_no_tracer_provider(tmp_path):
    """The API's and the worker's own call, in a fresh interpreter whose environment has no OTEL_* at all."""
    code = (
        "from opentelemetry import trace\n"
        "from core import tracing\n"
        "print(tracing.setup_tracing('diffusion-jobs-api'), tracing.enabled(), tracing.job_meta(),\n"
        "      type(trace.get_tracer_provider()).__name__, type(tracing.tracer.start_span('x')).__name__)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "{}", "ProxyTracerProvider", "NonRecordingSpan"]


def test_a_stack_with_tracing_disabled_exports_nothing_and_carries_no_context(redis_url, tmp_path, api_key):
    """OTEL_SDK_DISABLED=true beside an endpoint that would turn tracing on: no span reaches the receiver, no job
    carries a trace, and the webhook has no traceparent header."""
    with Recorder() as receiver:
        env = {
            **UNSET_OTEL,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_SDK_DISABLED": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "WEBHOOK_SECRET": SECRET,
        }
        with running_stack(redis_url, tmp_path, **env) as stack, client_for(stack, api_key) as client:
            response = client.post("/v1/jobs", json={**SAMPLE, "webhook": receiver.url + "/hooks/jobs"})
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            assert finish(client, job_id, 120)["status"] == "succeeded"
            wait_until(lambda: receiver.hooks(), 20, "the completed webhook")
            time.sleep(1.0)  # five export periods
            meta = stored_meta(stack, job_id)
        (delivered,) = receiver.hooks()
    assert meta["owner"] and "trace" not in meta
    assert "traceparent" not in delivered.headers
    assert receiver.exports() == []


def stored_meta(stack: Stack, job_id: str) -> dict[str, Any]:
    """The job's meta as RQ stored it in Redis (JSON, never pickle: the jobs' serializer)."""
    raw = redis.Redis.from_url(stack.env["REDIS_URL"]).hget(f"rq:job:{job_id}", "meta")
    assert raw is not None
    meta: dict[str, Any] = json.loads(raw)
    return meta


def test_a_job_carries_its_trace_in_its_meta_while_tracing_is_on(traced_stack, api_key):
    with client_for(traced_stack, api_key) as client:
        response = client.post("/v1/jobs", json=SAMPLE)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert finish(client, job_id, 120)["status"] == "succeeded"
    carrier = stored_meta(traced_stack, job_id)["trace"]
    version, trace_id, span_id, flags = carrier["traceparent"].split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16
    assert int(flags, 16) & 1  # sampled (W3C trace flags)
