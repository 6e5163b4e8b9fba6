"""Both artifact-store backends behind the one interface: round trip, expiry, and keys that cannot escape."""

import time

import pytest
import redis

from core.store import FileStore, RedisStore, check_key
from tests.helpers import fresh_database


@pytest.fixture(params=["redis", "filesystem"])
def store(request, redis_url, tmp_path):
    if request.param == "redis":
        return RedisStore(redis.Redis.from_url(fresh_database(redis_url)))
    return FileStore(tmp_path / "artifacts")


def test_round_trip_keeps_bytes_and_media_type(store):
    store.put("jobs/abc/image_0.png", b"\x89PNG data", "image/png", 60)
    blob = store.get("jobs/abc/image_0.png")
    assert blob is not None
    assert (blob.data, blob.media_type) == (b"\x89PNG data", "image/png")
    assert store.get("jobs/abc/image_1.png") is None


def test_blobs_expire(store):
    store.put("uploads/u1", b"x", "image/png", 1)
    assert store.get("uploads/u1") is not None
    time.sleep(2.1)
    assert store.get("uploads/u1") is None


def test_file_store_sweep_deletes_expired_files(tmp_path):
    files = FileStore(tmp_path)
    files.put("jobs/a/old.png", b"1", "image/png", 0)
    files.put("jobs/a/new.png", b"2", "image/png", 60)
    time.sleep(0.01)
    assert files.sweep() == 1
    assert sorted(p.name for p in (tmp_path / "jobs" / "a").iterdir()) == ["new.png", "new.png.meta.json"]


@pytest.mark.parametrize("key", ["../etc/passwd", "jobs/../../x", "/abs", "jobs//x", "jobs/a b", "jobs/x/..", ""])
def test_keys_that_could_escape_are_refused(key):
    with pytest.raises(ValueError):
        check_key(key)


def test_a_blob_without_ttl_stays_until_deleted(store):
    store.put("models/o/m/v/config.json", b"{}", "application/json", None)
    store.put("jobs/a/x.png", b"1", "image/png", 1)
    time.sleep(2.1)
    blob = store.get("models/o/m/v/config.json")
    assert blob is not None and blob.data == b"{}"
    if isinstance(store, FileStore):
        assert store.sweep() == 1  # the expired one only
    store.delete("models/o/m/v/config.json")
    store.delete("models/o/m/v/never-there")
    assert store.get("models/o/m/v/config.json") is None
