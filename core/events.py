"""Job change notifications, the publishing side: whoever changes a job's status or progress (a worker, the API
cancelling a queued job, the reaper) publishes its id, and each API process's one subscription (service/events.py)
wakes the requests and event streams waiting on it."""

import redis

from core import keys


def job_changed(conn: redis.Redis | redis.client.Pipeline, job_id: str) -> None:
    """ "Look at this job again": one PUBLISH, or one command queued on a pipeline."""
    conn.publish(keys.EVENTS_CHANNEL, job_id)
