"""Trained models: a registry per owner in Redis, their checkpoints in the artifact store.

A train job claims its model's name when it is accepted (so a second job for the same name answers 409 while the
first is queued or running), and its worker registers the model the moment the job succeeds. A record says what the
model is (dataset, objective, classes, schedule, size, training time, metrics; a distilled model's teacher, method
and served defaults) and where its checkpoint lives:
`models/<owner>/<id>/<version>/{config.json, diffusion_pytorch_model.safetensors}`, kept until the model is deleted,
so a model trained on one worker machine is served by any other. The version is the id of the job that made it.

Another owner's model does not exist for a caller: it is neither listed nor found (404).
"""

import json
from typing import Any

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer

from core import keys
from core.catalog import DENOISER, DIFFUSION, UNCONDITIONAL
from core.errors import Conflict
from core.job_state import status_and_error
from core.model_spec import ModelSpec
from core.queues import MNIST_QUEUE
from core.schemas.responses import TERMINAL
from core.store import ArtifactStore

CHECKPOINT_FILES = {
    "config.json": "application/json",
    "diffusion_pytorch_model.safetensors": "application/octet-stream",
}
TRAINED_QUEUE = MNIST_QUEUE  # the in-house models' workers serve trained models too
_RELEASE = """
if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('hdel', KEYS[1], ARGV[1]) end
return 0
"""


def schedule_of(objective: str, beta_schedule: str, num_timesteps: int = 300, flow_steps: int = 50) -> dict[str, Any]:
    """A trained model's noise process as `ModelSpec.schedule` writes it (the denoiser's: for `noise` jobs only)."""
    if objective == "flow":
        return {"type": "flow", "steps": flow_steps}
    return {
        "type": "ddpm",
        "num_timesteps": num_timesteps,
        "beta_schedule": beta_schedule if objective == "ddpm" else "linear",
        "beta_start": 1e-4,
        "beta_end": 0.02,
    }


def spec_of(record: dict[str, Any]) -> ModelSpec:
    """The ModelSpec of a trained model's record: what admission checks and the worker loads."""
    objective, classes = record["objective"], tuple(record["classes"])
    if objective == "denoiser":
        capabilities, defaults = DENOISER, {"sigma": record["sigma"]}
    else:
        capabilities = DIFFUSION if classes else UNCONDITIONAL
        defaults = {"guidance_scale": 5.0, **({"steps": 50} if objective == "flow" else {"stride": 1})}
        defaults = record.get("defaults") or defaults  # a distilled model's: its steps and sampler, guidance baked in
    info_keys = (
        "dataset",
        "conditioning",
        "arch",
        "created_at",
        "job_id",
        "training_seconds",
        "metrics",
        "size_bytes",
        "distilled_from",
    )
    return ModelSpec(
        id=record["id"],
        description=record["description"],
        queue=TRAINED_QUEUE,
        image_size=int(record["image_size"]),
        channels=int(record["channels"]),
        value_range=(0.0, 1.0),
        schedule=record["schedule"],
        capabilities=capabilities,
        classes=classes,
        defaults=defaults,
        shipped=False,
        info={k: record[k] for k in info_keys if k in record},
        objective=objective,
        owner=record["owner"],
        checkpoint_key=record["checkpoint_key"],
        version=record["version"],
    )


class ModelRegistry:
    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn

    def record(self, owner: str, model_id: str) -> dict[str, Any] | None:
        raw = self.conn.hget(keys.owner_models(owner), model_id)
        return json.loads(raw) if raw else None

    def spec(self, owner: str, model_id: str) -> ModelSpec | None:
        record = self.record(owner, model_id)
        return spec_of(record) if record else None

    def specs(self, owner: str) -> list[ModelSpec]:
        raw = self.conn.hgetall(keys.owner_models(owner))
        return sorted((spec_of(json.loads(v)) for v in raw.values()), key=lambda s: s.id)

    def claim(self, owner: str, name: str, job_id: str, shipped: set[str]) -> None:
        """Reserves `name` for the train job `job_id`, or raises Conflict: a shipped model, a model of the owner's,
        or another train job of the owner's still queued or running makes the same name."""
        if name in shipped:
            raise Conflict(f"{name!r} is a shipped model's id; name your model otherwise.")
        if self.conn.hexists(keys.owner_models(owner), name):
            raise Conflict(f"You already have a model named {name!r}; delete it first or pick another name.")
        claims = keys.model_claims(owner)
        if self.conn.hsetnx(claims, name, job_id):
            return
        raw = self.conn.hget(claims, name)
        holder = raw.decode() if isinstance(raw, bytes) else raw
        if holder is not None and _in_flight(self.conn, holder):
            raise Conflict(f"Your train job {holder} is already making a model named {name!r}.")
        self.conn.hset(claims, name, job_id)  # the earlier job ended without a model: the name is free

    def release(self, owner: str, name: str, job_id: str) -> None:
        """Frees the name, if `job_id` still holds it."""
        self.conn.eval(_RELEASE, 1, keys.model_claims(owner), name, job_id)

    def register(self, owner: str, record: dict[str, Any]) -> None:
        """Makes the model visible and frees its name's claim, in one transaction."""
        with self.conn.pipeline() as pipe:
            pipe.hset(keys.owner_models(owner), record["id"], json.dumps(record))
            pipe.hdel(keys.model_claims(owner), record["id"])
            pipe.execute()

    def delete(self, owner: str, model_id: str, store: ArtifactStore) -> bool:
        """Deletes the model and its checkpoint; False if the owner has no such model."""
        record = self.record(owner, model_id)
        if record is None or not self.conn.hdel(keys.owner_models(owner), model_id):
            return False
        for name in CHECKPOINT_FILES:
            store.delete(f"{record['checkpoint_key']}/{name}")
        return True


def _in_flight(conn: redis.Redis, job_id: str) -> bool:
    try:
        job = RQJob.fetch(job_id, connection=conn, serializer=JSONSerializer)
    except NoSuchJobError:
        return False
    return status_and_error(job)[0] not in TERMINAL
