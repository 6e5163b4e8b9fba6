"""The error responses each route documents in the OpenAPI schema: the one envelope (`ErrorBody`) at each status,
with the headers docs/api.md promises."""

from typing import Any

from core.schemas.responses import ErrorBody

RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
ERRORS: dict[int, tuple[str, dict[str, Any]]] = {  # docs/api.md, "Conventions": what each status means, its headers
    400: ("Malformed: the body is not what its media type says.", {}),
    401: ("No API key, or a wrong one.", {"WWW-Authenticate": {"schema": {"type": "string"}}}),
    403: ('A valid key that may not do this (an admin route, priority "high").', {}),
    404: ("Unknown, or not the caller's.", {}),
    409: ("A conflict, e.g. an Idempotency-Key reused with another body.", {}),
    413: ("The body or an image is too large.", {}),
    415: ("An unsupported media type, or bytes that are not what their type says.", {}),
    422: ("A well-formed request that breaks a rule; `details` names each field and the reason.", {}),
    429: ("Rate limited, or a quota spent (`quota_exceeded`).", RETRY_AFTER),
    503: ("The queue is full, or Redis is unreachable.", RETRY_AFTER),
}
AUTHED = (401, 429, 503)  # every route that takes a key: refused without one, rate limited, needs Redis


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: the error envelope at each of `codes`, with the headers docs/api.md promises."""
    return {
        code: {"model": ErrorBody, "description": ERRORS[code][0]}
        | ({"headers": {k: {**v, "required": True} for k, v in ERRORS[code][1].items()}} if ERRORS[code][1] else {})
        for code in sorted(set(codes))
    }
