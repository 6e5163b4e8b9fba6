"""The counters of a job's end, written into Redis hashes by whoever ends it (worker, API, reaper) in the same
pipelined trip as the rest of the end (core/endings.py); service/metrics.py reads them at scrape time."""

import math
import re
from datetime import UTC, datetime

import redis
from rq.job import Job as RQJob

from core import keys

# Upper bounds (seconds) of the duration buckets: a noise job takes well under a second, training hours.
BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, math.inf)
IMAGE = re.compile(r"image_\d+\.png")  # the images a job produced, among its artifacts
SEP = "\t"  # between the labels packed into a hash field (no label value holds a tab: ids and kinds are validated)


def bucket_of(seconds: float) -> str:
    """The hash field suffix of the first bucket that holds `seconds` ("inf" for the last)."""
    bound = next(b for b in BUCKETS if seconds <= b)
    return "inf" if math.isinf(bound) else repr(bound)


def count_end(
    pipe: redis.client.Pipeline,
    kind: str,
    model: str,
    status: str,
    duration_s: float | None = None,
    images: int = 0,
) -> None:
    """Queues the counters of one job's end on `pipe`; `duration_s` None: the job never ran (canceled while queued)."""
    pipe.hincrby(keys.METRICS_JOBS, SEP.join((kind, status)), 1)
    if duration_s is not None:
        labels = SEP.join((kind, model))
        pipe.hincrby(keys.METRICS_DURATION, SEP.join((labels, bucket_of(duration_s))), 1)
        pipe.hincrbyfloat(keys.METRICS_DURATION, SEP.join((labels, "sum")), duration_s)
        pipe.hincrby(keys.METRICS_RUNS, labels, 1)  # the mean run at a glance (core/queue_place.py)
    if images:
        pipe.hincrby(keys.METRICS_IMAGES, SEP.join((kind, model)), images)


def seconds_since(started_at: str | None) -> float | None:
    """Seconds from a job's `started_at` (its meta, RFC 3339) to now; None for a job that never started."""
    if not started_at:
        return None
    return max(0.0, (datetime.now(UTC) - datetime.fromisoformat(started_at)).total_seconds())


def count_job_end(pipe: redis.client.Pipeline, job: RQJob, status: str) -> None:
    """Queues the counters of `job`'s end on `pipe`: its kind, model, duration (none if it never started) and the
    images it saved (`image_{i}.png` among its artifacts)."""
    params = job.args[0] if job.args and isinstance(job.args[0], dict) else {}
    images = sum(1 for a in job.meta.get("artifacts", []) if IMAGE.fullmatch(a["name"]))
    duration_s = seconds_since(job.meta.get("started_at"))
    count_end(pipe, str(params.get("kind")), str(params.get("model")), status, duration_s, images)
