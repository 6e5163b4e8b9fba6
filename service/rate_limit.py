"""Per-key request rates (docs/api.md: 429 with `Retry-After`), counted in Redis so every API process shares them.

The `limits` library's sliding-window counter (one Lua call per request): writes (POST, DELETE) and reads have a
budget each, so a client polling its jobs never uses up its submissions. When Redis is out of memory the check lets
the request through: reads must still work then, and a write is refused by the store itself with a 503.
"""

import math
import time

import redis
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from core import keys
from core.errors import RateLimited
from core.redis_conn import out_of_memory

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RateLimits:
    def __init__(self, conn: redis.Redis, writes: str, reads: str) -> None:
        storage = RedisStorage("redis://", connection_pool=conn.connection_pool, key_prefix=keys.RATE_PREFIX)
        self.limiter = SlidingWindowCounterRateLimiter(storage)
        self.writes: RateLimitItem = parse(writes)
        self.reads: RateLimitItem = parse(reads)

    def check(self, owner: str, method: str) -> None:
        """Counts one request of `owner`; raises RateLimited past the budget of its kind."""
        kind, item = ("write", self.writes) if method in WRITE_METHODS else ("read", self.reads)
        try:
            if self.limiter.hit(item, owner, kind):
                return
            reset = self.limiter.get_window_stats(item, owner, kind).reset_time
        except redis.ResponseError as exc:
            if out_of_memory(exc):
                return
            raise
        retry_after = max(1, math.ceil(reset - time.time()))
        raise RateLimited(
            f"Over this key's limit of {item} for {kind} requests; retry in {retry_after} s.", retry_after=retry_after
        )
