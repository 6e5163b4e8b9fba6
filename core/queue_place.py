"""A queued job's place: its position counting the jobs of higher priorities ahead of it, and an estimate of when it
starts (docs/api.md, "Job"; docs/operations/scaling.md, "Priorities")."""

from typing import Any

from redis.client import Pipeline
from rq.job import Job as RQJob

from core import keys
from core.job_metrics import SEP
from core.queues import PRIORITIES, queue_name, split
from core.rq_internals import queue_list_key, workers_by_queue_key

Place = tuple[int | None, float | None]  # (position from 1, seconds until it likely starts)


def higher_queues(queue: str) -> list[str]:
    """The queues of the same pool whose jobs a worker takes before those of `queue`."""
    pool, priority = split(queue)
    return [queue_name(pool, p) for p in PRIORITIES[: PRIORITIES.index(priority)]]


def read_place(pipe: Pipeline, queue: str, params: dict[str, Any]) -> int:
    """Queues on `pipe` the reads a place needs: the higher queues' lengths, how many jobs of the job's kind and model
    ran and for how long in all (core/job_metrics.py), the queue's workers. Returns how many results they take."""
    labels = SEP.join((str(params.get("kind")), str(params.get("model"))))
    higher = higher_queues(queue)
    for name in higher:
        pipe.llen(queue_list_key(name))
    pipe.hget(keys.METRICS_RUNS, labels)
    pipe.hget(keys.METRICS_DURATION, SEP.join((labels, "sum")))
    pipe.scard(workers_by_queue_key(queue))
    return len(higher) + 3


def place_of(index: int, results: list[Any]) -> Place:
    """The place of a job at `index` of its own queue's list, from what `read_place` read: the jobs of the pool's
    higher priorities go first, and each job ahead takes the mean run of this job's kind and model so far, spread
    over the queue's workers."""
    *lengths, runs, seconds, workers = results
    position = index + 1 + sum(int(n) for n in lengths)
    if not runs:
        return position, None
    mean = float(seconds or 0) / int(runs)
    return position, round(position * mean / max(1, int(workers)), 1)


def place(job: RQJob, index: int | None) -> Place:
    """The place of a queued job at `index` of its queue's list, in one round trip; (None, None) for a job in no
    queue's list (a retry on its way back)."""
    if index is None:
        return None, None
    params = job.args[0] if job.args and isinstance(job.args[0], dict) else {}
    with job.connection.pipeline(transaction=False) as pipe:
        read_place(pipe, job.origin, params)
        return place_of(index, pipe.execute())
