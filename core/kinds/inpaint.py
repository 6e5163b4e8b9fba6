"""`inpaint`: regenerate the masked region only (CS180 A 1.7.2)."""

import base64
from typing import Literal

import redis

from core import keys
from core.dataset_specs import DATASETS
from core.errors import InvalidRequest
from core.images import ImageLimits, probe_image
from core.kinds.base import Conditioned, Count, Door, JobBase, Kind, Stepping, Upsampled
from core.model_spec import ModelSpec
from core.schemas.images import ImageInput


class InpaintJob(Conditioned, Stepping, Upsampled, JobBase):
    """Regenerate the masked region only (CS180 A 1.7.2); mask white = regenerate, black = keep."""

    kind: Literal["inpaint"]
    image: ImageInput
    mask: ImageInput
    n: Count = 1


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


def check(req: InpaintJob, spec: ModelSpec, door: Door) -> None:
    """The mask is the image's size."""
    limits = door.settings.image_limits
    image, mask = image_size(door.conn, req.image, limits), image_size(door.conn, req.mask, limits)
    if image and mask and image != mask:
        raise InvalidRequest.field(["mask"], f"is {mask[0]}x{mask[1]} but the image is {image[0]}x{image[1]}")


KIND = Kind("inpaint", InpaintJob, {"inpaint": frozenset({"diffusion"})}, check=check)
