"""What the Python client raises: one class per error type of docs/api.md, and the outcomes of waiting on a job.

ClientError                  the base of everything the client raises itself (transport errors stay httpx's)
├── ApiError                 an error answer of the API: `status`, `type`, `message`, `details`
│   ├── MalformedRequest     400 malformed_request: the body is not what its media type says
│   ├── Unauthorized         401 unauthorized: no key, or a wrong key
│   ├── NotFound             404 not_found: unknown, or not the caller's
│   ├── Conflict             409 conflict: e.g. an Idempotency-Key reused with another body
│   ├── PayloadTooLarge      413 payload_too_large: the body or an image is too large
│   ├── UnsupportedMediaType 415 unsupported_media_type: not PNG, JPEG or WebP
│   ├── ValidationError      422 validation_error: `details` names each field (`loc`) and the rule (`msg`)
│   ├── RateLimited          429 rate_limited: `retry_after` seconds
│   ├── Unavailable          503 unavailable: queue full, Redis full or unreachable; `retry_after` seconds
│   └── InternalError        500 internal_error: a bug of the service
├── JobFailed                a job ended failed or canceled (wait helpers, when asked): `job`
└── JobTimeout               a job still not terminal when a wait ran out (also a TimeoutError): `job`
"""

from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from core.schemas.responses import Job


class ClientError(Exception):
    """The base of every error the client raises itself."""


class ApiError(ClientError):
    """An error answer of the API, from its envelope `{"error": {"type", "message", "details"}}`."""

    type = "error"

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None, type: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []
        self.type = type or self.type

    def __str__(self) -> str:
        return f"{self.status} {self.type}: {self.message}"


class MalformedRequest(ApiError):
    type = "malformed_request"


class Unauthorized(ApiError):
    type = "unauthorized"


class NotFound(ApiError):
    type = "not_found"


class Conflict(ApiError):
    type = "conflict"


class PayloadTooLarge(ApiError):
    type = "payload_too_large"


class UnsupportedMediaType(ApiError):
    type = "unsupported_media_type"


class ValidationError(ApiError):
    type = "validation_error"

    @property
    def fields(self) -> list[str]:
        """The dotted path of each broken field, without the leading `body`/`query` part."""
        return [".".join(str(p) for p in d.get("loc", [])[1:]) for d in self.details]


class RateLimited(ApiError):
    type = "rate_limited"
    retry_after: float | None = None


class Unavailable(ApiError):
    type = "unavailable"
    retry_after: float | None = None


class InternalError(ApiError):
    type = "internal_error"


_BY_TYPE: dict[str, type[ApiError]] = {
    cls.type: cls
    for cls in (
        MalformedRequest,
        Unauthorized,
        NotFound,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        ValidationError,
        RateLimited,
        Unavailable,
        InternalError,
    )
}
_BY_STATUS: dict[int, type[ApiError]] = {
    400: MalformedRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationError,
    429: RateLimited,
    500: InternalError,
    503: Unavailable,
}


def error_from(response: httpx.Response) -> ApiError:
    """The exception for an error answer (its body read): by the envelope's `type`, else by the status."""
    try:
        body = response.json()["error"]
        type_, message, details = str(body["type"]), str(body["message"]), list(body.get("details") or [])
    except (ValueError, KeyError, TypeError):
        type_, message, details = "", response.text.strip() or response.reason_phrase, []
    cls = _BY_TYPE.get(type_) or _BY_STATUS.get(response.status_code, ApiError)
    error = cls(response.status_code, message, details, type_)
    if isinstance(error, RateLimited | Unavailable):
        retry_after = response.headers.get("Retry-After")
        error.retry_after = float(retry_after) if retry_after and retry_after.isdigit() else None
    return error


class JobFailed(ClientError):
    """A job that ended `failed` or `canceled`; `job` is its final state, `job.error` says why."""

    def __init__(self, job: "Job") -> None:
        reason = f"{job.error.type}: {job.error.message}" if job.error else "no reason given"
        super().__init__(f"job {job.id} {job.status}: {reason}")
        self.job = job


class JobTimeout(ClientError, TimeoutError):
    """A wait ran out before the job ended; `job` is its state then (it goes on running)."""

    def __init__(self, job: "Job", timeout: float) -> None:
        super().__init__(f"job {job.id} is still {job.status} after {timeout:g} s")
        self.job = job
