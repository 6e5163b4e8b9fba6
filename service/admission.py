"""Checks at the door that need the deployment's state: the model, its capabilities, and every image input.

The schema checks each field alone; here each rule that involves a model, a dataset, an upload or an earlier job.
A request that passes never reaches a worker only to fail on its input.
"""

import base64
import binascii

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer

from service import keys
from service.catalog import DATASETS, ModelSpec
from service.errors import InvalidRequest
from service.images import probe_image, verify_pixels
from service.job_state import artifact_key, status_and_error
from service.schemas.images import ImageInput
from service.schemas.jobs import DenoiseJob, JobBase, NoiseJob


def check_model(models: dict[str, ModelSpec], req: JobBase) -> ModelSpec:
    spec = models.get(req.model)
    if spec is None:
        raise InvalidRequest.field(["model"], f"unknown model {req.model!r}; GET /v1/models lists them")
    if req.capability not in spec.capabilities:
        what = req.capability.replace(".", " with method ")
        raise InvalidRequest.field(["kind"], f"model {spec.id} cannot run {what} now: {spec.reason}")
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


def check_image(conn: redis.Redis, owner: str, image: ImageInput, loc: list[str | int], max_pixels: int) -> None:
    if image.upload_id is not None:
        if conn.hget(keys.upload(image.upload_id), "owner") != owner.encode():
            raise InvalidRequest.field([*loc, "upload_id"], "no upload of yours has this id (uploads expire)")
    elif image.base64 is not None:
        try:
            data = base64.b64decode(image.base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest.field([*loc, "base64"], "is not valid base64") from exc
        probe_image(data, max_pixels, [*loc, "base64"])
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


def admit(conn: redis.Redis, models: dict[str, ModelSpec], owner: str, req: JobBase, max_pixels: int) -> ModelSpec:
    spec = check_model(models, req)
    check_schedule(spec, req)
    for name, image in req.image_inputs().items():
        check_image(conn, owner, image, [name], max_pixels)
    return spec
