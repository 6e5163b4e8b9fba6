"""The artifact store: job outputs and uploads, with a time-to-live. One interface, two backends.

- `RedisStore` (default): works when the API and the workers are on different machines.
- `FileStore`: a folder, e.g. a shared volume; expiry is checked on read and swept by `sweep()`.
A `ttl_s` of None keeps a blob until it is deleted (the checkpoints of trained models).
Keys are slash-separated paths of safe characters (`jobs/<id>/image_0.png`); nothing else is accepted.
"""

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis

from core.settings import Settings

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str


def check_key(key: str) -> str:
    if not KEY_RE.fullmatch(key) or ".." in key:
        raise ValueError(f"not a valid artifact key: {key!r}")
    return key


class ArtifactStore(Protocol):
    def put(self, key: str, data: bytes, media_type: str, ttl_s: int | None) -> None: ...

    def get(self, key: str) -> Blob | None: ...

    def delete(self, key: str) -> None: ...


class RedisStore:
    prefix = "dj:blob:"

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn

    def put(self, key: str, data: bytes, media_type: str, ttl_s: int | None) -> None:
        name = self.prefix + check_key(key)
        with self.conn.pipeline() as pipe:  # MULTI/EXEC: a reader sees the old blob or the new one, never half
            pipe.delete(name)
            pipe.hset(name, mapping={"data": data, "media_type": media_type})
            if ttl_s is not None:
                pipe.expire(name, ttl_s)
            pipe.execute()

    def delete(self, key: str) -> None:
        self.conn.delete(self.prefix + check_key(key))

    def get(self, key: str) -> Blob | None:
        data, media_type = self.conn.hmget(self.prefix + check_key(key), ["data", "media_type"])
        if data is None or media_type is None:
            return None
        return Blob(
            data if isinstance(data, bytes) else data.encode(),
            str(media_type, "utf-8") if isinstance(media_type, bytes) else media_type,
        )


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _paths(self, key: str) -> tuple[Path, Path]:
        path = self.root / check_key(key)
        return path, path.with_name(path.name + ".meta.json")

    def put(self, key: str, data: bytes, media_type: str, ttl_s: int | None) -> None:
        path, meta = self._paths(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        expires_at = None if ttl_s is None else time.time() + ttl_s
        for target, content in (
            (path, data),
            (meta, json.dumps({"media_type": media_type, "expires_at": expires_at}).encode()),
        ):
            tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
            tmp.write_bytes(content)
            tmp.replace(target)  # atomic: a reader sees the old file or the new one, never half

    def get(self, key: str) -> Blob | None:
        path, meta = self._paths(key)
        try:
            info = json.loads(meta.read_bytes())
            if _expired(info):
                return None
            return Blob(path.read_bytes(), info["media_type"])
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        path, meta = self._paths(key)
        meta.unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    def sweep(self) -> int:
        """Deletes expired files; returns how many."""
        removed = 0
        for meta in self.root.rglob("*.meta.json"):
            try:
                if _expired(json.loads(meta.read_bytes())):
                    meta.with_name(meta.name.removesuffix(".meta.json")).unlink(missing_ok=True)
                    meta.unlink(missing_ok=True)
                    removed += 1
            except (FileNotFoundError, ValueError, KeyError):
                continue
        return removed


def _expired(info: dict[str, Any]) -> bool:
    return info["expires_at"] is not None and bool(info["expires_at"] < time.time())


def make_store(settings: Settings, conn: redis.Redis) -> ArtifactStore:
    if settings.artifact_backend == "filesystem":
        return FileStore(settings.artifact_root)
    return RedisStore(conn)
