"""The API's request spans (docs/operations/observability.md, "Tracing"): FastAPI's own, which it makes through the
global tracer provider once core/tracing.py has installed one (and not at all before). A request's span is the root
of a job's trace when its POST creates one, or a child of the caller's span when the request carries a W3C
`traceparent` header; FastAPI names it by the route's template ("POST /v1/jobs") and adds spans of its own under it
for dependencies, the endpoint and serialization. Only the API's routes are traced: not the probes, /metrics, the
docs or the playground.
"""

from collections.abc import MutableMapping
from typing import Any

from fastapi.telemetry import TelemetryConfig

TRACED_PREFIX = "/v1/"


def untraced(scope: MutableMapping[str, Any]) -> bool:
    return not str(scope.get("path", "")).startswith(TRACED_PREFIX)


# core/tracing.py installs the exporters; FastAPI adding its own (FASTAPI_OTEL_AUTO_CONFIGURE) would send spans twice
TELEMETRY: TelemetryConfig = {"exclude": untraced, "auto_configure": False}
