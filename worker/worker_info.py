"""What a worker runs on, for the admin's list of workers (GET /v1/admin/workers): its GPU's name and the
CUDA_VISIBLE_DEVICES it was started with (`up` gives each worker its own with WORKER_GPUS,
diffusion_jobs/supervisor.py). A hash under `core.keys.worker_info`, written with each heartbeat of the worker, so
it expires with the worker."""

import os
from functools import lru_cache

import redis
import torch
from redis.client import Pipeline

from core import keys


@lru_cache(maxsize=1)
def gpu_name() -> str:
    """The GPU this process sees first ("" without CUDA)."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""


def report(conn: redis.Redis | Pipeline, worker_name: str, ttl_s: int) -> None:
    key = keys.worker_info(worker_name)
    conn.hset(key, mapping={"gpu": gpu_name(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")})
    conn.expire(key, ttl_s)
