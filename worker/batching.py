"""Cross-job batching: a worker that dequeues a `sample` job also claims the compatible jobs waiting behind it, and
runs them all as one sampling loop (worker/tasks.run_batch).

Compatible: the same model (and, for a model someone trained, the same owner), kind, schedule and guidance, and
whether there is a condition at all; seeds, `n`, the class or prompt and `frames` are each job's own. Every sample
draws its noise from its own generator and a CFG condition is per row, so a job's pixels are those it gets alone.

A job is claimed the way RQ dequeues one: atomically moved from the queue to the queue's intermediate list, from
which RQ's maintenance puts it back if the worker dies before it is registered as started. Jobs further back jump
the incompatible ones between: they cost the batch little, and those jobs wait no longer than behind a lone job.
A retried job always runs alone.
"""

import json
import time
from collections.abc import Container, Hashable
from typing import Any, cast

import redis
from rq import Queue
from rq.exceptions import DeserializationError
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer

from core.rq_internals import intermediate_queue_key, queue_key

PER_JOB = frozenset(
    {"seed", "n", "prompt", "class_label", "frames", "webhook", "webhook_events", "priority", "timeout_s"}
)
SCAN = 128  # queue entries looked at per pass
POLL_S = 0.005

# LREM then push: the job moves from the queue to the intermediate list in one step, or not at all (another worker
# took it, or it was canceled).
CLAIM = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


def batch_key(params: dict[str, Any], owner: str | None, shipped: Container[str]) -> Hashable | None:
    """What jobs must share to run as one batch; None for a job that is never batched."""
    if params.get("kind") != "sample" or params.get("upsample"):
        return None
    shared = json.dumps({k: v for k, v in params.items() if k not in PER_JOB}, sort_keys=True)
    conditioned = params.get("prompt") is not None or params.get("class_label") is not None
    return shared, conditioned, None if params.get("model") in shipped else owner


def key_of(job: RQJob, shipped: Container[str]) -> Hashable | None:
    """The job's batch key; None for a job that ran before (a retry runs alone: were it the job that killed its
    worker, it must not take its batch-mates down again, each losing an attempt)."""
    try:
        params = job.args[0] if job.args else None
    except DeserializationError:  # not a JSON payload (planted, or of another client): RQ fails it; never batched
        return None
    if not isinstance(params, dict) or job.meta.get("attempts"):
        return None
    return batch_key(params, job.meta.get("owner"), shipped)


def images_of(job: RQJob) -> int:
    return int(job.args[0].get("n", 4))


def claim_batch(
    conn: redis.Redis,
    queue: Queue,
    first: RQJob,
    shipped: Container[str],
    max_jobs: int,
    max_images: int,
    wait_s: float,
    higher: list[str] = [],  # noqa: B006 (never mutated)
) -> list[RQJob]:
    """The compatible jobs claimed to run with `first` (at most max_jobs - 1, at most max_images images in all),
    from `first`'s own queue only (a batch never mixes priorities).

    A lone job waits for nothing: the wait for more (up to `wait_s`) starts only once one compatible job was there,
    and ends as soon as a job waits in one of the `higher` priority queues' lists: it must not wait on the batch.
    """
    key = key_of(first, shipped)
    if key is None or max_jobs <= 1:
        return []
    claim = conn.register_script(CLAIM)
    claimed: list[RQJob] = []
    images = images_of(first)
    seen: set[str] = {first.id}
    deadline = time.monotonic() + wait_s
    while True:
        ids = [raw.decode() for raw in cast(list[bytes], conn.lrange(queue_key(queue), 0, SCAN - 1))]
        fresh = [job_id for job_id in ids if job_id not in seen]
        seen.update(fresh)
        for job in RQJob.fetch_many(fresh, connection=conn, serializer=JSONSerializer):
            if job is None or key_of(job, shipped) != key or images + images_of(job) > max_images:
                continue
            if claim(keys=[queue_key(queue), intermediate_queue_key(queue)], args=[job.id]):
                claimed.append(job)
                images += images_of(job)
                if len(claimed) + 1 >= max_jobs:
                    return claimed
        if not claimed or time.monotonic() >= deadline or (higher and conn.exists(*higher)):
            return claimed
        time.sleep(POLL_S)
