"""What the workers found when they loaded a shipped model that lives outside this repository (DeepFloyd IF).

A worker that loads it records the model as it loaded (sizes from the weights' configs, what it can run); one that
cannot records why. The API shows the last report over its own view: it may not see the weights at all (in Docker
Compose only the workers mount the Hugging Face cache), and configured weights that do not load must not take jobs.
A report lives as long as its worker's registration (the worker renews it with each heartbeat), so a deployment that
no longer runs such a worker is not shown what an earlier one loaded.
"""

import json
from dataclasses import replace

import redis
from redis.client import Pipeline

from core import keys
from core.model_spec import ModelSpec

Conn = redis.Redis | Pipeline


def loaded(spec: ModelSpec) -> str:
    """The report of a worker that loaded the model."""
    status = {
        "image_size": spec.image_size,
        "schedule": spec.schedule,
        "capabilities": sorted(spec.capabilities),
        "info": spec.info,
    }
    return json.dumps(status)


def failed(reason: str) -> str:
    """The report of a worker that could not load the model."""
    return json.dumps({"reason": reason})


def publish(conn: Conn, model_id: str, report: str, ttl_s: int) -> None:
    conn.set(keys.model_status(model_id), report, ex=ttl_s)


def as_loaded(conn: redis.Redis, spec: ModelSpec) -> ModelSpec:
    """`spec` as the last worker to load it found it; as it is where no worker reported."""
    if not spec.shipped or spec.checkpoint is not None:  # the in-house models ship with their files
        return spec
    raw = conn.get(keys.model_status(spec.id))
    if not isinstance(raw, bytes):
        return spec
    status = json.loads(raw)
    if "reason" in status:
        return replace(spec, capabilities=frozenset(), reason=f"its worker could not load it: {status['reason']}")
    return replace(
        spec,
        image_size=int(status["image_size"]),
        schedule=status["schedule"],
        capabilities=frozenset(status["capabilities"]),
        reason=None,
        info=status["info"],
    )
