"""What a worker adds to a job's end for `/metrics` (service/metrics.py, core/endings.py): this worker's GPU
memory, on CUDA."""

from collections.abc import Callable

import redis
import torch
from rq.job import Job as RQJob

from core import keys
from core.job_metrics import SEP


def gpu_memory(job: RQJob) -> Callable[[redis.client.Pipeline], None] | None:
    """The commands that record this worker's GPU memory (allocated now, its last job's peak); None off CUDA."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized() and job.worker_name):
        return None
    name = job.worker_name
    memory = {
        SEP.join((name, "allocated")): torch.cuda.memory_allocated(),
        SEP.join((name, "peak")): torch.cuda.max_memory_allocated(),
    }

    def record(pipe: redis.client.Pipeline) -> None:
        pipe.hset(keys.METRICS_GPU, mapping=memory)  # type: ignore[arg-type]

    return record
