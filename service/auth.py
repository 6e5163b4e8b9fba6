"""API keys: `Authorization: Bearer <key>`, compared as SHA-256 hashes in constant time.

The owner of a job, upload or model is a short hash of the key that made it; with no keys configured, everything
belongs to `anonymous` (and the server listens on loopback only; see `diffusion_jobs.cli`).
"""

import hashlib
import hmac

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from core.errors import Unauthorized

ANONYMOUS = "anonymous"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, keys: list[str]) -> None:
        self.hashes = [key_hash(k) for k in keys]

    def owner(self, authorization: str | None) -> str:
        if not self.hashes:
            return ANONYMOUS
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized("Send your API key as `Authorization: Bearer <key>`.")
        presented = key_hash(key.strip())
        matched = False
        for known in self.hashes:  # every comparison runs, so timing says nothing of which key matched
            matched |= hmac.compare_digest(presented, known)
        if not matched:
            raise Unauthorized("This API key is not valid.")
        return presented[:32]


async def owner_of(request: Request) -> str:
    """The caller, authenticated and counted against its key's request rate (with no keys configured the server is
    on loopback, one user's, and not rate limited). Only the rate's Redis call goes to the thread pool."""
    ring: KeyRing = request.app.state.keyring
    owner = ring.owner(request.headers.get("authorization"))
    if owner != ANONYMOUS:
        await run_in_threadpool(request.app.state.rate_limits.check, owner, request.method)
    return owner
