"""Checks at the door that need the deployment's state: the model, its capabilities, and every image input.

The schema checks each field alone; here each rule that involves a model, a dataset, an upload or an earlier job.
A request that passes never reaches a worker only to fail on its input.
"""

import base64
import binascii
from pathlib import Path

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer

from core import keys
from core.catalog import DATASETS, ModelSpec
from core.errors import InvalidRequest
from core.images import ImageLimits, probe_image, verify_pixels
from core.job_state import artifact_key, status_and_error
from core.model_registry import Registry
from core.model_status import as_loaded
from core.queues import TRAIN_QUEUE
from core.schemas.images import ImageInput
from core.schemas.jobs import (
    AnagramJob,
    Conditioned,
    DenoiseJob,
    Guidance,
    HybridJob,
    Img2ImgJob,
    InpaintJob,
    JobBase,
    NoiseJob,
    Schedule,
    TrainJob,
    Upsampled,
    UpsampleJob,
)
from core.settings import Settings
from models.datasets import DatasetError, dataset_info


def check_model(conn: redis.Redis, models: dict[str, ModelSpec], owner: str, req: JobBase) -> ModelSpec:
    """A shipped model, or one the caller trained (another caller's is unknown here)."""
    spec = models.get(req.model) or Registry(conn).spec(owner, req.model)
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


def check_schedule(spec: ModelSpec, req: JobBase) -> None:
    """Timesteps exist only in a DDPM schedule, and only below its length."""
    timesteps: list[tuple[list[str | int], int]] = []
    if isinstance(req, NoiseJob) and req.timesteps is not None:
        timesteps = [(["timesteps", i], t) for i, t in enumerate(req.timesteps)]
    elif isinstance(req, DenoiseJob) and req.timestep is not None:
        timesteps = [(["timestep"], req.timestep)]
    if not timesteps:
        return
    if spec.schedule["type"] != "ddpm":
        raise InvalidRequest.field(timesteps[0][0][:1], f"{spec.id} is a flow-matching model; use sigmas")
    limit = int(spec.schedule["num_timesteps"])
    for loc, t in timesteps:
        if t >= limit:
            raise InvalidRequest.field(loc, f"must be below {limit}, the length of {spec.id}'s schedule")


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


COURSE_STARTS, COURSE_STEPS = (1, 3, 5, 7, 10, 20), 33  # SDEdit's i_start list over IF's 990 -> 0 by 30 (A 1.7)


def course_starts(steps: int) -> list[int]:
    """The course's i_start list at the same fractions of a run of `steps` steps."""
    return sorted({min(steps - 1, round(i * steps / COURSE_STEPS)) for i in COURSE_STARTS})


def fill_defaults(spec: ModelSpec, req: JobBase) -> None:
    """The model's defaults, written into the request so that `params` shows what runs."""
    if isinstance(req, UpsampleJob):  # stage II's own defaults
        stage2 = spec.defaults.get("upsample", {})
        req.guidance_scale = req.guidance_scale if req.guidance_scale is not None else stage2.get("guidance_scale")
        req.steps = req.steps or stage2.get("steps")
        req.noise_level = req.noise_level if req.noise_level is not None else stage2.get("noise_level")
    if isinstance(req, Guidance) and req.guidance_scale is None:
        req.guidance_scale = spec.defaults.get("guidance_scale")
    if isinstance(req, Schedule) and req.steps is None and req.stride is None:
        req.steps, req.stride = spec.defaults.get("steps"), spec.defaults.get("stride")
    if isinstance(req, DenoiseJob) and req.method == "iterative" and req.i_start is None:
        req.i_start = 10  # the course's start
    if isinstance(req, Img2ImgJob) and req.i_start is None:
        own_run = (req.steps, req.stride) == (spec.defaults.get("steps"), spec.defaults.get("stride"))
        if own_run and "i_start" in spec.defaults:  # the course's list on the course's schedule (IF)
            req.i_start = list(spec.defaults["i_start"])
        else:
            req.i_start = course_starts(spec.num_times(req.steps, req.stride) - 1)
    if isinstance(req, DenoiseJob) and req.method == "one_step" and spec.is_denoiser and req.sigma is None:
        req.sigma = spec.defaults.get("sigma")


Prompts = list[tuple[list[str | int], str]]  # (where in the request, the prompt)


def prompts_of(req: JobBase) -> Prompts:
    prompts: Prompts = []
    if isinstance(req, Conditioned | DenoiseJob) and req.prompt is not None:
        prompts.append((["prompt"], req.prompt))
    if isinstance(req, AnagramJob | HybridJob):
        prompts += [(["prompts", i], p) for i, p in enumerate(req.prompts)]
    return prompts


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
    prompts = prompts_of(req)
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


def check_times(spec: ModelSpec, req: JobBase) -> None:
    """Flow runs take `steps`; every `i_start` lies inside the run it indexes."""
    if isinstance(req, Schedule) and req.stride is not None and spec.is_flow:
        raise InvalidRequest.field(["stride"], f"{spec.id} is a flow-matching model; give `steps`")
    starts: list[tuple[list[str | int], int]] = []
    if isinstance(req, Img2ImgJob):
        starts = [
            (["i_start", i] if isinstance(req.i_start, list) else ["i_start"], v) for i, v in enumerate(req.starts)
        ]
    elif isinstance(req, DenoiseJob) and req.i_start is not None:
        starts = [(["i_start"], req.i_start)]
    steps = req.steps if isinstance(req, Schedule) else None
    count = spec.num_times(steps, req.stride if isinstance(req, Schedule) else None)
    for loc, i_start in starts:
        if i_start >= count - 1:
            raise InvalidRequest.field(loc, f"must be below {count - 1}, the number of steps of this run")


def check_denoise(spec: ModelSpec, req: DenoiseJob) -> None:
    if req.method == "blur" and req.prompt is not None:
        raise InvalidRequest.field(["prompt"], "blur denoising runs no network: it takes no prompt")
    if req.method == "one_step" and spec.is_denoiser and req.timestep is not None:
        raise InvalidRequest.field(["timestep"], f"{spec.id} denoises z = x + sigma eps; give `sigma`")
    if req.method in ("one_step", "iterative") and not spec.is_denoiser and req.sigma is not None:
        raise InvalidRequest.field(["sigma"], f"{spec.id} is a diffusion model; give `timestep` or `i_start`")
    if req.method == "one_step" and not spec.is_denoiser and req.timestep is None and req.i_start is None:
        raise InvalidRequest.field(
            ["timestep"], "one-step denoising on a diffusion model needs `timestep` or `i_start`"
        )
    if req.method == "iterative" and req.timestep is not None:
        raise InvalidRequest.field(["timestep"], "iterative denoising starts at `i_start` of the run's times")


def image_size(conn: redis.Redis, image: ImageInput, limits: ImageLimits) -> tuple[int, int] | None:
    """(width, height) where it is known without fetching the image."""
    if image.upload_id is not None:
        width, height = conn.hmget(keys.upload(image.upload_id), ["width", "height"])
        return (int(width), int(height)) if width and height else None
    if image.base64 is not None:
        info = probe_image(base64.b64decode(image.base64), limits)
        return info.width, info.height
    if image.dataset is not None:
        side = DATASETS[image.dataset].image_size
        return side, side
    return None


def check_mask(conn: redis.Redis, req: InpaintJob, limits: ImageLimits) -> None:
    image, mask = image_size(conn, req.image, limits), image_size(conn, req.mask, limits)
    if image and mask and image != mask:
        raise InvalidRequest.field(["mask"], f"is {mask[0]}x{mask[1]} but the image is {image[0]}x{image[1]}")


def check_train(req: TrainJob, data_dir: Path) -> None:
    """The dataset exists here and fits the job (from file headers and listings; nothing is decoded)."""
    try:
        info = dataset_info(req.dataset, data_dir)
    except DatasetError as exc:
        raise InvalidRequest.field(["dataset"], str(exc)) from exc
    if not info["available"]:
        raise InvalidRequest.field(["dataset"], f"not available on this deployment: {info['reason']}")
    if req.conditioning == "class" and not info["class_names"]:
        raise InvalidRequest.field(
            ["conditioning"], f"{req.dataset} has no classes (a folder of class subfolders has); use `time`"
        )
    if req.limit is not None and info["size"] is not None and req.limit > info["size"]:
        raise InvalidRequest.field(["limit"], f"must be at most {info['size']}, the size of {req.dataset}")


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


def admit(conn: redis.Redis, models: dict[str, ModelSpec], owner: str, req: JobBase, settings: Settings) -> str:
    """Checks the request against this deployment, fills in the model's defaults; returns the queue it goes to.
    (A train job's name is claimed when it is enqueued: `service.jobs.JobRepo.create`.)"""
    check_limits(req, settings)
    if isinstance(req, TrainJob):
        check_train(req, settings.data_dir)
        return TRAIN_QUEUE
    spec = check_model(conn, models, owner, req)
    if isinstance(req, Upsampled) and req.upsample and "upsample" not in spec.capabilities:
        raise InvalidRequest.field(["upsample"], f"model {spec.id} has no stage II to upsample with")
    fill_defaults(spec, req)
    check_schedule(spec, req)
    check_classes(spec, req)
    check_times(spec, req)
    if isinstance(req, DenoiseJob):
        check_denoise(spec, req)
    limits = settings.image_limits
    for name, image in req.image_inputs().items():
        check_image(conn, owner, image, [name], limits)
    if isinstance(req, InpaintJob):
        check_mask(conn, req, limits)
    return spec.queue
