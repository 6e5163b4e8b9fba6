"""What a worker records for `/metrics` (service/metrics.py) when a job ends: one pipelined round trip, nothing per
step: the job's kind, model, outcome and duration, the images it produced, and this worker's GPU memory."""

import logging
import re

import redis
import torch
from rq.job import Job as RQJob

from service import keys
from service.metrics import SEP, count_end, seconds_since

log = logging.getLogger(__name__)
IMAGE = re.compile(r"image_\d+\.png")


def record_end(job: RQJob, outcome: str) -> None:
    """Counts `job`'s end; a Redis error is logged, never raised: the job's own record matters more."""
    params = job.args[0] if job.args and isinstance(job.args[0], dict) else {}
    images = sum(1 for a in job.meta.get("artifacts", []) if IMAGE.fullmatch(a["name"]))
    try:
        with job.connection.pipeline(transaction=False) as pipe:
            kind, model = str(params.get("kind")), str(params.get("model"))
            count_end(pipe, kind, model, outcome, seconds_since(job.meta.get("started_at")), images)
            if torch.cuda.is_available() and torch.cuda.is_initialized() and job.worker_name:
                pipe.hset(
                    keys.METRICS_GPU,
                    mapping={
                        SEP.join((job.worker_name, "allocated")): torch.cuda.memory_allocated(),
                        SEP.join((job.worker_name, "peak")): torch.cuda.max_memory_allocated(),
                    },
                )
            pipe.execute()
    except redis.RedisError as exc:
        log.warning("job=%s: metrics not recorded (%s)", job.id, exc)
