"""Uploaded images: the bytes in the artifact store, the facts (owner, type, size) in a Redis hash, both expiring."""

import uuid

import redis

from core import keys
from core.errors import UnsupportedMediaType
from core.images import MEDIA_TYPES, probe_image, verify_pixels
from core.schemas.responses import Upload
from core.settings import Settings
from core.store import ArtifactStore


def save_upload(
    conn: redis.Redis, store: ArtifactStore, settings: Settings, owner: str, data: bytes, declared: str | None
) -> Upload:
    if declared is not None and declared not in MEDIA_TYPES.values():
        raise UnsupportedMediaType(f"Media type {declared} is not accepted; send image/png, image/jpeg or image/webp.")
    info = probe_image(data, settings.image_limits)
    if declared is not None and declared != info.media_type:
        raise UnsupportedMediaType(f"The body was declared {declared} but its bytes are {info.media_type}.")
    verify_pixels(data)
    upload = Upload(
        id=str(uuid.uuid4()), media_type=info.media_type, width=info.width, height=info.height, bytes=len(data)
    )
    ttl = settings.artifact_ttl_s
    store.put(keys.upload_blob(upload.id), data, info.media_type, ttl)
    with conn.pipeline() as pipe:
        pipe.hset(
            keys.upload(upload.id),
            mapping={
                "owner": owner,
                "media_type": upload.media_type,
                "width": upload.width,
                "height": upload.height,
                "bytes": upload.bytes,
            },
        )
        pipe.expire(keys.upload(upload.id), ttl)
        pipe.execute()
    return upload
