"""A key's quotas at the door (docs/operations/quotas.md): MAX_ACTIVE_JOBS_PER_KEY (queued plus running) and
DAILY_IMAGES_PER_KEY. Past either, 429 `quota_exceeded` naming the quota, its limit, the use and when it frees;
other keys are not affected. Read in the enqueue's own WATCHed transaction (service/jobs.py), so concurrent
submissions of one key never both take its last slot."""

from typing import cast

import redis
from redis.client import Pipeline

from core import keys
from core.errors import QuotaExceeded
from core.settings import Settings
from core.usage import next_midnight_iso, prune, seconds_to_midnight, today

ACTIVE_RETRY_S = 5  # a slot frees when one of the key's jobs ends: no time can be promised, so a short wait


class Quotas:
    def __init__(self, conn: redis.Redis, settings: Settings) -> None:
        self.conn = conn
        self.max_active = settings.max_active_jobs_per_key
        self.daily_images = settings.daily_images_per_key

    def check(self, pipe: Pipeline, owner: str, jobs: int, images: int) -> str:
        """Raises QuotaExceeded if `jobs` more jobs making `images` images would pass a quota of `owner`; otherwise
        leaves `pipe` WATCHing the key's use and in MULTI for the enqueue. Returns the day the images count on."""
        day = today()
        if not (self.max_active or self.daily_images):
            return day
        active_key, usage_key = keys.active_jobs(owner), keys.usage_day(owner, day)
        pipe.watch(active_key, usage_key)
        if self.max_active:
            active = int(pipe.scard(active_key))
            if active + jobs > self.max_active and prune(self.conn, owner):
                raise redis.WatchError("ended jobs were taken out of the active set: count again")
            if active + jobs > self.max_active:
                raise QuotaExceeded(
                    f"This key has {active} jobs queued or running, and MAX_ACTIVE_JOBS_PER_KEY is "
                    f"{self.max_active}: a slot frees when one of them ends.",
                    ACTIVE_RETRY_S,
                    [
                        {
                            "quota": "active_jobs",
                            "limit": self.max_active,
                            "used": active,
                            "asked": jobs,
                            "frees": "when a job of this key ends",
                        }
                    ],
                )
        if self.daily_images and images:
            used = int(cast(bytes | None, pipe.hget(usage_key, "images")) or 0)
            if used + images > self.daily_images:
                raise QuotaExceeded(
                    f"This key asked for {used} images today (UTC), and DAILY_IMAGES_PER_KEY is "
                    f"{self.daily_images}: {images} more would pass it; the budget renews at {next_midnight_iso()}.",
                    seconds_to_midnight(),
                    [
                        {
                            "quota": "daily_images",
                            "limit": self.daily_images,
                            "used": used,
                            "asked": images,
                            "frees": next_midnight_iso(),
                        }
                    ],
                )
        pipe.multi()
        return day
