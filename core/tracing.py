"""OpenTelemetry traces: one trace per job, from its HTTP request through the queue and the worker to its webhook
(docs/operations/observability.md, "Tracing").

Off unless the standard OTEL_* variables ask for an exporter. Then `setup_tracing` installs the SDK's tracer provider
(its exporters, batching, sampler and resource read from the same variables); until then `tracer` is the API's no-op
tracer, and the carriers below are empty. A job's context crosses the queue as a W3C `traceparent` carrier in its meta
(`job_meta`), and the webhook outbox's records carry it on (core/outbox.py).
"""

import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import Attributes

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)
tracer = trace.get_tracer("diffusion_jobs")
ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
OTLP = "otlp_proto_http"  # the OTLP exporter installed: HTTP with protobuf bodies (a collector's port 4318)
EXPORTER_GROUP = "opentelemetry_traces_exporter"  # the entry points under which exporters register
_provider: "TracerProvider | None" = None


def exporter_names(env: Mapping[str, str]) -> list[str]:
    """The span exporters `env` asks for; none, so tracing stays off, unless OTEL_TRACES_EXPORTER names one other
    than "none" or an OTLP endpoint is set. OTEL_SDK_DISABLED=true turns it off whatever else is set."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = [name.strip().lower() for name in env.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    if named:
        return [OTLP if name == "otlp" else name for name in named if name != "none"]
    return [OTLP] if any(env.get(variable) for variable in ENDPOINTS) else []


def _exporter(name: str) -> "SpanExporter":
    found = entry_points(group=EXPORTER_GROUP, name=name)
    if not found:
        known = sorted({"otlp", *(point.name for point in entry_points(group=EXPORTER_GROUP))})
        raise ValueError(f"OTEL_TRACES_EXPORTER: no span exporter {name!r} is installed; use one of {known} or none")
    exporter: SpanExporter = next(iter(found)).load()()
    return exporter


def setup_tracing(service_name: str) -> bool:
    """Installs the tracer provider once per process if the environment asks for traces; True when they are on.
    `service_name`: the resource's service.name unless OTEL_SERVICE_NAME sets it."""
    global _provider
    if _provider is not None:
        return True
    names = exporter_names(os.environ)
    if not names:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # only where tracing is on
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)  # its sampler from OTEL_TRACES_SAMPLER; flushed at exit
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))  # OTEL_BSP_* tune it
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info("tracing on: %s exports spans through %s", resource.attributes[SERVICE_NAME], ", ".join(names))
    return True


def enabled() -> bool:
    """Whether this process exports traces (`setup_tracing` found them asked for)."""
    return _provider is not None


def inject() -> dict[str, str]:
    """The current span's context as a W3C carrier ({"traceparent": ...}); empty where no span is recording."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str] | None) -> Context:
    """The context a carrier holds, to start a span under; an empty one (a new trace) for none."""
    return propagate.extract(carrier or {})


def job_meta() -> dict[str, dict[str, str]]:
    """`{"trace": carrier}` for a new job's meta while a span is current; nothing when tracing is off."""
    carrier = inject()
    return {"trace": carrier} if carrier else {}


def enqueue_span(job_ids: Sequence[str]) -> AbstractContextManager[Span]:
    """The span around the enqueue of a job (or a group's jobs, one transaction); the jobs' carriers, taken inside
    it, make each worker's span its child."""
    attributes: Attributes = {
        "job.ids": list(job_ids),
        "messaging.system": "rq",
        "messaging.batch.message_count": len(job_ids),
    }
    return tracer.start_as_current_span("enqueue", kind=SpanKind.PRODUCER, attributes=attributes)
