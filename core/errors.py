"""The errors the service raises, each one an error type of docs/api.md. HTTP statuses are chosen in `service.app`.

ServiceError                 the base: `type`, `message` (one sentence a person can act on), `details`
├── MalformedRequest         400: the body is not what its media type says
├── Unauthorized             401: no key, or a wrong key
├── Forbidden                403: a valid key that may not do this (an admin route, priority "high")
├── NotFound                 404: unknown, or not the caller's
├── Conflict                 409: e.g. an Idempotency-Key reused with another body
├── PayloadTooLarge          413: body or image too large
├── UnsupportedMediaType     415: not PNG, JPEG or WebP, or bytes that are not what their type says
├── InvalidRequest           422: well-formed but breaks a rule; `details` names each field and rule
├── RateLimited              429: the key's request rate is spent; carries `retry_after` seconds
│   └── QuotaExceeded        429: the key's active jobs or daily images are spent; `details` give limit and reset
└── Unavailable              503: queue full, Redis full or unreachable; carries `retry_after` seconds
"""

from typing import Any


class ServiceError(Exception):
    type = "error"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class MalformedRequest(ServiceError):
    type = "malformed_request"


class Unauthorized(ServiceError):
    type = "unauthorized"


class Forbidden(ServiceError):
    type = "forbidden"


class NotFound(ServiceError):
    type = "not_found"


class Conflict(ServiceError):
    type = "conflict"


class PayloadTooLarge(ServiceError):
    type = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    type = "unsupported_media_type"


class InvalidRequest(ServiceError):
    type = "validation_error"

    @classmethod
    def field(cls, loc: list[str | int], message: str) -> "InvalidRequest":
        """One broken rule on one field; `loc` is its path in the request body."""
        path = ".".join(str(p) for p in loc)
        return cls(f"{path}: {message}", [{"loc": ["body", *loc], "msg": message}])


class Unavailable(ServiceError):
    type = "unavailable"

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(ServiceError):
    type = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExceeded(RateLimited):
    """A key's quota (docs/operations/quotas.md): `details` hold the quota, its limit, the use and when it frees."""

    type = "quota_exceeded"

    def __init__(self, message: str, retry_after: int, details: list[dict[str, object]]) -> None:
        super().__init__(message, retry_after)
        self.details = details
