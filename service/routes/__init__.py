"""HTTP routes: thin, each a call into the service's modules."""

from typing import Any

from fastapi import Security
from fastapi.security import HTTPBearer

# Declares `Authorization: Bearer <key>` in the OpenAPI schema; the key itself is checked by `service.auth`.
BEARER: list[Any] = [Security(HTTPBearer(auto_error=False, description="a key of the API_KEYS setting"))]
