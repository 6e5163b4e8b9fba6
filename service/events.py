"""Job change notifications: one Redis subscription per API process, fanned out to the requests waiting on a job.

Workers publish a job's id on `dj:events` when its status or progress changes. A waiter registers its event before
it reads the job, so no change between the read and the wait is missed; a 1 s poll covers a lost subscription.
"""

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator

import redis.asyncio as aredis
from redis.exceptions import RedisError

from core import keys
from core.settings import Settings

log = logging.getLogger(__name__)
POLL_S = 1.0


class JobEvents:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        try:
            yield event
        finally:
            self._waiters[job_id].discard(event)
            if not self._waiters[job_id]:
                del self._waiters[job_id]

    @staticmethod
    async def wait(event: asyncio.Event, timeout: float) -> None:
        """Until the job changes, the timeout passes, or POLL_S passes; then the caller reads the job again."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(timeout, POLL_S))
        event.clear()

    def _notify(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    async def run(self) -> None:
        """Listens until canceled, reconnecting after Redis goes away."""
        url = self.settings.redis_url or "redis://127.0.0.1:6379/0"
        while True:
            client = aredis.Redis.from_url(url, socket_connect_timeout=self.settings.redis_timeout_s)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(keys.EVENTS_CHANNEL)
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_S)
                        if message is not None:
                            self._notify(message["data"].decode())
            except (RedisError, OSError) as exc:
                log.warning("event subscription lost (%s); reconnecting", exc)
                await asyncio.sleep(POLL_S)
            finally:
                await client.aclose()
