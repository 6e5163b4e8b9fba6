"""A job's end, wherever it happens: the worker (succeeded, failed, canceled while running), the API (canceled while
queued) or the reaper (failed as worker_lost). Each end is counted for /metrics, frees the key's active slot and
counts its worker seconds (core/usage.py), counts it in its group (core/groups.py), and queues the job's
`completed` webhook if it asked for one, in one pipelined round trip. A Redis error is logged, never raised: the
job's own record matters more than its counters and its webhook."""

import logging
from collections.abc import Callable, Iterable

import redis
from rq.job import Job as RQJob

from core import keys
from core.groups import group_job_ended
from core.job_metrics import count_job_end
from core.outbox import outbox_record
from core.usage import release

log = logging.getLogger(__name__)


def record_endings(
    conn: redis.Redis,
    jobs: Iterable[RQJob],
    outcome: str,
    extra: Callable[[redis.client.Pipeline], None] | None = None,
) -> None:
    """Records that `jobs` ended as `outcome`; `extra` adds the caller's own commands to the same trip."""
    jobs = list(jobs)
    if not jobs:
        return
    try:
        with conn.pipeline(transaction=False) as pipe:
            for job in jobs:
                count_job_end(pipe, job, outcome)
                release(pipe, job, outcome)
                record = outbox_record(job, "completed")
                if record is not None:
                    pipe.lpush(keys.WEBHOOK_OUTBOX, record)
                group_job_ended(pipe, job)  # its group's count, and the group's webhook after the last
            if extra is not None:
                extra(pipe)
            pipe.execute()
    except redis.RedisError as exc:
        log.warning("jobs=%s: end not recorded for metrics and webhooks (%s)", [job.id for job in jobs], exc)
