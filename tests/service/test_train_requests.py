"""Train requests without processes: the schema's defaults and rules, and the name claims of the model registry."""

import json

import pytest
import redis
from pydantic import ValidationError
from rq import Queue
from rq.serializers import JSONSerializer

from core.errors import Conflict
from core.kinds.train import TRAIN_DEFAULTS, TrainJob
from core.model_registry import ModelRegistry, spec_of
from tests.helpers import fresh_database

BASE = {"kind": "train", "name": "my-model", "dataset": "mnist-5k"}


@pytest.mark.parametrize("objective", ["denoiser", "ddpm", "flow"])
def test_the_specs_defaults_fill_in_per_objective(objective):
    req = TrainJob.model_validate({**BASE, "objective": objective})
    for name, value in TRAIN_DEFAULTS[objective].items():
        assert getattr(req, name) == value
    assert req.conditioning == ("none" if objective == "denoiser" else "class")
    assert req.sigma == (0.5 if objective == "denoiser" else None)
    assert req.model == "my-model" and req.arch == "cs180" and req.image_size is None
    assert req.sample_epochs == sorted({e for e in (1, 5, 10, 20) if e <= req.num_epochs} | {req.num_epochs})


def test_given_values_win_and_folders_default_to_unet2d():
    req = TrainJob.model_validate({**BASE, "objective": "ddpm", "epochs": 3, "lr": 2e-4, "dataset": "folder:faces"})
    assert (req.epochs, req.lr, req.hidden, req.batch_size) == (3, 2e-4, 64, 128)
    assert (req.arch, req.image_size, req.sample_epochs) == ("unet2d", 32, [1, 3])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"objective": "denoiser", "conditioning": "time"}, "conditioning"),
        ({"objective": "ddpm", "conditioning": "none"}, "conditioning"),
        ({"objective": "flow", "sigma": 0.3}, "sigma"),
        ({"objective": "flow", "schedule": "cosine"}, "schedule"),
        ({"objective": "flow", "loss_weight": "v"}, "loss_weight"),
        ({"objective": "ddpm", "loss_weight": "snr"}, "loss_weight"),
        ({"objective": "flow", "epochs": 2, "sample_epochs": [3]}, "sample_epochs"),
        ({"objective": "flow", "image_size": 64}, "image_size"),
        ({"objective": "flow", "arch": "unet2d", "hidden": 12}, "arch"),
        ({"objective": "flow", "dataset": "folder:x", "image_size": 30, "arch": "cs180"}, "arch"),
        ({"objective": "flow", "model": "other"}, None),
        ({"objective": "flow", "lr": float("nan")}, "lr"),
        ({"objective": "flow", "limit": 0}, "limit"),
    ],
)
def test_rules_between_fields_name_the_field(change, field):
    with pytest.raises(ValidationError) as info:
        TrainJob.model_validate({**BASE, **change})
    if field is not None:
        assert (field,) in [e["loc"] for e in info.value.errors()]


@pytest.fixture
def conn(redis_url):
    return redis.Redis.from_url(fresh_database(redis_url))


def test_a_name_is_claimed_once_until_its_job_ends(conn):
    registry = ModelRegistry(conn)
    queue = Queue("train", connection=conn, serializer=JSONSerializer)
    job = queue.enqueue_call("worker.tasks.run_job", args=[{}], job_id="job-1")
    registry.claim("alice", "digits", "job-1", {"mnist-ddpm"})
    with pytest.raises(Conflict, match="job-1"):
        registry.claim("alice", "digits", "job-2", set())
    registry.claim("bob", "digits", "job-3", set())  # names are per owner
    with pytest.raises(Conflict, match="shipped"):
        registry.claim("alice", "mnist-ddpm", "job-4", {"mnist-ddpm"})
    job.cancel()
    registry.claim("alice", "digits", "job-5", set())  # the holder ended: the claim was stale
    registry.release("alice", "digits", "job-1")  # not the holder: nothing happens
    assert conn.hget("dj:model-claims:alice", "digits") == b"job-5"


def test_a_registered_model_is_its_owners_only_and_blocks_its_name(conn, tmp_path):
    from core.store import FileStore

    record = {
        "id": "digits",
        "owner": "alice",
        "version": "job-5",
        "job_id": "job-5",
        "checkpoint_key": "models/alice/digits/job-5",
        "description": "flow UNet",
        "dataset": "mnist-5k",
        "objective": "flow",
        "conditioning": "time",
        "classes": [],
        "image_size": 28,
        "channels": 1,
        "schedule": {"type": "flow", "steps": 50},
        "sigma": None,
        "size_bytes": 10,
    }
    registry = ModelRegistry(conn)
    registry.claim("alice", "digits", "job-5", set())
    registry.register("alice", record)
    assert conn.hget("dj:model-claims:alice", "digits") is None
    spec = registry.spec("alice", "digits")
    assert spec is not None and spec_of(json.loads(json.dumps(record))) == spec
    assert "anagram" not in spec.capabilities and "sample" in spec.capabilities  # no classes to combine
    assert registry.spec("bob", "digits") is None and registry.specs("bob") == []
    with pytest.raises(Conflict, match="already have"):
        registry.claim("alice", "digits", "job-6", set())
    store = FileStore(tmp_path)
    store.put("models/alice/digits/job-5/config.json", b"{}", "application/json", None)
    assert not registry.delete("bob", "digits", store)
    assert registry.delete("alice", "digits", store)
    assert store.get("models/alice/digits/job-5/config.json") is None
    assert registry.specs("alice") == []
