"""Image inputs of a job, resolved to tensors: (1, C, H, W) in [0, 1]."""

import base64
import io

import torch
from PIL import Image

from core import keys
from core.schemas.images import ImageInput
from core.store import ArtifactStore
from models.datasets import load_dataset
from models.imageio import to_tensor
from worker.errors import InputError


def image_bytes(image: ImageInput, store: ArtifactStore) -> bytes:
    if image.base64 is not None:
        return base64.b64decode(image.base64)
    if image.upload_id is not None:
        key, what = keys.upload_blob(image.upload_id), f"upload {image.upload_id}"
    elif image.job_id is not None and image.artifact is not None:
        key, what = (
            keys.artifact(image.job_id, image.artifact),
            f"artifact {image.artifact} of job {image.job_id}",
        )
    else:
        raise InputError(f"image input of form {image.form} holds no bytes")
    blob = store.get(key)
    if blob is None:
        raise InputError(f"{what} has expired; upload the image again")
    return blob.data


def load_image(image: ImageInput, store: ArtifactStore, channels: int) -> torch.Tensor:
    if image.dataset is not None and image.index is not None:
        data = load_dataset(image.dataset)
        if image.index >= len(data.images):
            raise InputError(f"dataset {image.dataset} has {len(data.images)} items; index {image.index} is past it")
        pixels = torch.from_numpy(data.images[image.index]).float() / 255  # (H, W) or (H, W, 3)
        x = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        x = x.mean(0, keepdim=True) if channels == 1 else x.expand(channels, -1, -1)
        return x[None].contiguous()  # (1, C, H, W)
    try:
        with Image.open(io.BytesIO(image_bytes(image, store))) as img:
            return to_tensor(img, channels)
    except (OSError, Image.DecompressionBombError) as exc:
        raise InputError(f"the image could not be decoded: {exc}") from exc
