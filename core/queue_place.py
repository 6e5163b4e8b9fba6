"""A queued job's place: its position counting the jobs of higher priorities ahead of it, and an estimate of when it
starts (docs/api.md, "Job"; docs/operations/scaling.md, "Priorities")."""

from rq.job import Job as RQJob

from core import keys
from core.job_metrics import BUCKETS, SEP, bucket_of
from core.queues import PRIORITIES, queue_name, split
from core.rq_internals import queue_list_key, workers_by_queue_key


def higher_queues(queue: str) -> list[str]:
    """The queues of the same pool whose jobs a worker takes before those of `queue`."""
    pool, priority = split(queue)
    return [queue_name(pool, p) for p in PRIORITIES[: PRIORITIES.index(priority)]]


def mean_of(values: list[bytes | None]) -> float | None:
    """The mean of a duration histogram read as its bucket counts then its sum (core/job_metrics.py)."""
    count = sum(int(v) for v in values[:-1] if v is not None)
    return float(values[-1] or 0) / count if count else None


def place(job: RQJob, index: int | None) -> tuple[int | None, float | None]:
    """(position from 1, seconds until it likely starts) of a queued job at `index` of its own queue's list: the
    jobs of the pool's higher priorities go first, and each job ahead takes the mean run of this job's kind and
    model, spread over the queue's workers. One round trip. (None, None) for a job in no queue's list (a retry on
    its way back)."""
    if index is None:
        return None, None
    params = job.args[0] if job.args and isinstance(job.args[0], dict) else {}
    labels = SEP.join((str(params.get("kind")), str(params.get("model"))))
    fields = [SEP.join((labels, bucket_of(b))) for b in BUCKETS] + [SEP.join((labels, "sum"))]
    higher = higher_queues(job.origin)
    with job.connection.pipeline(transaction=False) as pipe:
        for name in higher:
            pipe.llen(queue_list_key(name))
        pipe.hmget(keys.METRICS_DURATION, fields)
        pipe.scard(workers_by_queue_key(job.origin))
        *lengths, durations, workers = pipe.execute()
    position = index + 1 + sum(int(n) for n in lengths)
    mean = mean_of(durations)
    if mean is None:
        return position, None
    return position, round(position * mean / max(1, int(workers)), 1)
