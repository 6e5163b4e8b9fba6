"""Checks at the door that need the deployment's state: the model, its capabilities, and every image input.

The schema checks each field alone; here each rule that involves a model, a dataset, an upload or an earlier job.
A request that passes never reaches a worker only to fail on its input.
"""

import base64
import binascii
from typing import cast

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer

from core import keys
from core.dataset_specs import DATASETS
from core.errors import Forbidden, InvalidRequest
from core.images import ImageLimits, probe_image, verify_pixels
from core.job_state import artifact_key, status_and_error
from core.kinds import kind_of
from core.kinds.base import Conditioned, Door, Guidance, JobBase, Solving, Stepping, Upsampled
from core.model_registry import ModelRegistry
from core.model_spec import ModelSpec
from core.model_status import as_loaded
from core.samplers import Sampler
from core.schemas.images import ImageInput
from core.settings import Settings
from service.auth import ANONYMOUS, key_hash


def check_model(conn: redis.Redis, models: dict[str, ModelSpec], owner: str, req: JobBase) -> ModelSpec:
    """A shipped model, or one the caller trained (another caller's is unknown here)."""
    spec = models.get(req.model) or ModelRegistry(conn).spec(owner, req.model)
    if spec is None:
        raise InvalidRequest.field(["model"], f"unknown model {req.model!r}; GET /v1/models lists them")
    spec = as_loaded(conn, spec)
    if not spec.capabilities:
        raise InvalidRequest.field(["model"], f"model {spec.id} is not available here: {spec.reason}")
    if req.capability not in spec.capabilities:
        what = req.capability.replace(".", " with method ")
        why = f"now: {spec.reason}" if spec.reason else f"(it runs {', '.join(sorted(spec.capabilities))})"
        raise InvalidRequest.field(["kind"], f"model {spec.id} cannot run {what} {why}")
    return spec


def check_image(conn: redis.Redis, owner: str, image: ImageInput, loc: list[str | int], limits: ImageLimits) -> None:
    if image.upload_id is not None:
        if conn.hget(keys.upload(image.upload_id), "owner") != owner.encode():
            raise InvalidRequest.field([*loc, "upload_id"], "no upload of yours has this id (uploads expire)")
    elif image.base64 is not None:
        try:
            data = base64.b64decode(image.base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest.field([*loc, "base64"], "is not valid base64") from exc
        probe_image(data, limits, [*loc, "base64"])
        verify_pixels(data, [*loc, "base64"])
    elif image.dataset is not None:
        dataset = DATASETS.get(image.dataset)
        if dataset is None:
            raise InvalidRequest.field([*loc, "dataset"], f"unknown dataset; known: {', '.join(DATASETS)}")
        if image.index is not None and image.index >= dataset.size:
            raise InvalidRequest.field([*loc, "index"], f"must be below {dataset.size}, the size of {dataset.id}")
    elif image.job_id is not None and image.artifact is not None:
        check_artifact_ref(conn, owner, image.job_id, image.artifact, loc)


def check_artifact_ref(conn: redis.Redis, owner: str, job_id: str, name: str, loc: list[str | int]) -> None:
    try:
        job = RQJob.fetch(job_id, connection=conn, serializer=JSONSerializer)
    except NoSuchJobError:
        job = None
    if job is None or job.meta.get("owner") != owner:
        raise InvalidRequest.field([*loc, "job_id"], "no job of yours has this id (finished jobs expire)")
    if artifact_key(job, name) is None:
        status, _ = status_and_error(job)
        raise InvalidRequest.field([*loc, "artifact"], f"job {job_id} ({status}) has no artifact {name!r}")


def fill_defaults(spec: ModelSpec, req: JobBase) -> None:
    """The model's defaults, written into the request so that `params` shows what runs."""
    if isinstance(req, Guidance) and req.guidance_scale is None:
        req.guidance_scale = spec.defaults.get("guidance_scale")
    if isinstance(req, Solving) and spec.samplers and req.sampler is None and req.runs_solver:
        req.sampler = cast(Sampler, spec.default_sampler)
        req.spacing = req.spacing or spec.defaults.get("spacing")
    if isinstance(req, Stepping) and req.steps is None and req.stride is None:
        if req.sampler in (None, spec.default_sampler):
            req.steps, req.stride = spec.defaults.get("steps"), spec.defaults.get("stride")
        elif req.sampler in spec.samplers:
            req.steps = spec.samplers[req.sampler].default_steps


def check_solver(spec: ModelSpec, req: JobBase) -> None:
    """The sampler exists for the model's family and takes what the request gives it (docs/api.md, "Samplers")."""
    if not isinstance(req, Solving):
        return
    given = [name for name in ("sampler", "eta", "spacing") if getattr(req, name) is not None]
    if given and not req.runs_solver:
        raise InvalidRequest.field([given[0]], "only iterative denoising runs a sampler")
    if given and not spec.samplers:
        raise InvalidRequest.field([given[0]], f"{spec.id} denoises in one call: it runs no sampler")
    if req.sampler is None:
        return
    if req.sampler not in spec.samplers:
        family = "flow-matching" if spec.is_flow else "noise-prediction"
        raise InvalidRequest.field(
            ["sampler"], f"{spec.id} is a {family} model; its samplers are {', '.join(spec.samplers)}"
        )
    info = spec.samplers[req.sampler]
    if req.eta is not None and not info.eta:
        raise InvalidRequest.field(["eta"], f"{req.sampler} takes no eta; only ddim does")
    if req.spacing is not None and not info.spacing:
        raise InvalidRequest.field(["spacing"], f"{req.sampler} takes no spacing (its times are its own)")
    steps, stride = getattr(req, "steps", None), getattr(req, "stride", None)
    if stride is not None and not info.stride:
        raise InvalidRequest.field(["stride"], f"{req.sampler} takes `steps`; only ddpm steps by stride")
    if stride is not None and req.spacing is not None:
        raise InvalidRequest.field(["spacing"], "spacing picks `steps` timesteps; give `steps`, not `stride`")
    if steps is not None and steps < info.min_steps:
        raise InvalidRequest.field(
            ["steps"], f"{req.sampler} needs at least {info.min_steps} steps (a second-order step needs two times)"
        )
    limit = None if spec.is_flow else int(spec.schedule["num_timesteps"])
    if steps is not None and limit is not None and steps > limit and req.sampler != "ddpm":
        raise InvalidRequest.field(["steps"], f"must be at most {limit}, the length of {spec.id}'s schedule")


Prompts = list[tuple[list[str | int], str]]  # (where in the request, the prompt)


def check_text(spec: ModelSpec, req: JobBase, prompts: Prompts) -> None:
    """A text model takes no class label, and any prompt unless its workers serve precomputed embeddings only (then
    its `prompts` lists them)."""
    if isinstance(req, Conditioned) and req.class_label is not None:
        raise InvalidRequest.field(["class_label"], f"{spec.id} is conditioned on text; give `prompt`")
    served: list[str] = spec.info.get("prompts", [])
    for loc, prompt in prompts if "prompts" in spec.info else []:
        if prompt not in served:
            raise InvalidRequest.field(
                loc, f"{spec.id} serves only the prompts of its precomputed embeddings (GET /v1/models/{spec.id})"
            )


def check_classes(spec: ModelSpec, req: JobBase) -> None:
    """Prompts of the in-house models are their class names."""
    prompts = req.prompt_inputs()
    if spec.text:
        check_text(spec, req, prompts)
        return
    if isinstance(req, Conditioned) and req.class_label is not None and req.class_label >= len(spec.classes):
        raise InvalidRequest.field(["class_label"], f"must be below {len(spec.classes)}, {spec.id}'s classes")
    for loc, prompt in prompts:
        if not spec.classes:
            raise InvalidRequest.field(loc, f"{spec.id} takes no prompt")
        if prompt not in spec.classes:
            raise InvalidRequest.field(loc, f"{spec.id} knows the prompts {', '.join(spec.classes)}")


def check_stride(spec: ModelSpec, req: JobBase) -> None:
    """Flow runs take `steps`."""
    if isinstance(req, Stepping) and req.stride is not None and spec.is_flow:
        raise InvalidRequest.field(["stride"], f"{spec.id} is a flow-matching model; give `steps`")


def check_limits(req: JobBase, settings: Settings) -> None:
    """The deployment's own caps, each at most the schema's."""
    caps = {
        "n": settings.max_n,
        "steps": settings.max_steps,
        "epochs": settings.max_epochs,
        "batch_size": settings.max_batch_size,
    }
    for name, cap in caps.items():
        value = getattr(req, name, None)
        if isinstance(value, int) and value > cap:
            raise InvalidRequest.field([name], f"must be at most {cap} on this deployment")


def check_scheduling(req: JobBase, owner: str, settings: Settings) -> None:
    """Priority "high" only for the keys HIGH_PRIORITY_KEYS names (every key with "*"; anyone when the deployment
    has no keys at all); `timeout_s` at most the kind's bound (docs/operations/scaling.md, "Priorities" and "Time
    limits")."""
    bound = settings.timeout_bound_s(req.kind)
    if req.timeout_s is not None and req.timeout_s > bound:
        raise InvalidRequest.field(["timeout_s"], f"must be at most {bound} s for a {req.kind} job on this deployment")
    if req.priority == "high" and owner != ANONYMOUS:
        allowed = settings.high_priority_key_list
        if "*" not in allowed and owner not in {key_hash(key)[:32] for key in allowed}:
            raise Forbidden(
                'priority: "high" is for the keys the deployment lists in HIGH_PRIORITY_KEYS, and this key is not '
                'one of them; submit with "normal" or "low"',
                [{"loc": ["body", "priority"], "msg": "this key may not use high"}],
            )


def admit(conn: redis.Redis, models: dict[str, ModelSpec], owner: str, req: JobBase, settings: Settings) -> str:
    """Checks the request against this deployment, the shared rules then its kind's, and fills in the model's
    defaults; returns the pool it goes to (its priority picks the pool's queue). (A train job's name is claimed when
    it is enqueued: `service.jobs.JobRepo.create`.)"""
    check_limits(req, settings)
    check_scheduling(req, owner, settings)
    kind, door = kind_of(req), Door(conn, owner, settings)
    if kind.route is not None:
        return kind.route(req, door)
    spec = check_model(conn, models, owner, req)
    if isinstance(req, Upsampled) and req.upsample and "upsample" not in spec.capabilities:
        raise InvalidRequest.field(["upsample"], f"model {spec.id} has no stage II to upsample with")
    if kind.fill is not None:
        kind.fill(req, spec)
    fill_defaults(spec, req)
    check_classes(spec, req)
    check_stride(spec, req)
    check_solver(spec, req)
    for name, image in req.image_inputs().items():
        check_image(conn, owner, image, [name], settings.image_limits)
    if kind.check is not None:  # after the image inputs: a kind's rule may read them (inpaint's mask size)
        kind.check(req, spec, door)
    return spec.queue
