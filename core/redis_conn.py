"""Redis clients with short timeouts, so an unreachable Redis becomes a 503 in seconds, not a hang."""

import redis

from core.settings import Settings

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def sync_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url or DEFAULT_URL,
        socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        health_check_interval=15,
    )


def out_of_memory(exc: redis.ResponseError) -> bool:
    """Redis refused a write at `maxmemory` (a plain command raises OutOfMemoryError; a Lua script, a ResponseError
    that quotes the same -OOM reply)."""
    return isinstance(exc, redis.OutOfMemoryError) or "OOM command not allowed" in str(exc)
