"""Checks that bytes are an accepted image, before anything decodes their pixels."""

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from core.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int  # width x height, read from the header: a decompression bomb is refused before it is decoded
    max_side: int  # a 1 x 100,000 strip has few pixels but no use


def guard_decoder(limits: ImageLimits) -> None:
    """Pillow's own bomb check at the same limit, for every decode in this process (it warns past the limit and
    raises past twice it), so no path that opens an image can be made to inflate one."""
    Image.MAX_IMAGE_PIXELS = limits.max_pixels


@dataclass(frozen=True)
class ImageInfo:
    media_type: str
    width: int
    height: int


def probe_image(data: bytes, limits: ImageLimits, field: list[str | int] | None = None) -> ImageInfo:
    """Reads the header only (no pixel decoding), so a decompression bomb is refused cheaply.

    `field` set: the image came inside a JSON body, and errors are 422s on that field; unset: it is an upload.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(MEDIA_TYPES))
            width, height = img.size
            fmt = img.format or ""
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        width, height, fmt = limits.max_pixels + 1, 1, "PNG"
    except Exception as exc:  # Pillow raises many types for bytes that are not an image
        msg = "is not a PNG, JPEG or WebP image"
        if field is not None:
            raise InvalidRequest.field(field, msg) from exc
        raise UnsupportedMediaType(f"The body {msg}; send one of those formats.") from exc
    too_big: str | None = None
    if width * height > limits.max_pixels:
        too_big = f"has {width}x{height} pixels, more than the limit of {limits.max_pixels}"
    elif max(width, height) > limits.max_side:
        too_big = f"is {width}x{height} pixels; a side may be at most {limits.max_side}"
    if too_big is not None:
        if field is not None:
            raise InvalidRequest.field(field, too_big)
        raise PayloadTooLarge(f"The image {too_big}.")
    return ImageInfo(MEDIA_TYPES[fmt], width, height)


def verify_pixels(data: bytes, field: list[str | int] | None = None) -> None:
    """Decodes the pixels once, to refuse a truncated or corrupt file at the door, not in a worker."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception as exc:
        msg = "is truncated or corrupt"
        if field is not None:
            raise InvalidRequest.field(field, msg) from exc
        raise UnsupportedMediaType(f"The image {msg}.") from exc
