"""What a worker loads once per process and keeps between jobs: each model's noise process and network.

Shipped models come from their folders. A trained model comes from the artifact store (its checkpoint is copied once
to MODELS_DIR/trained/<owner>/<id>/<version>/), looked up in its owner's registry at every job: a cached network is
used only while the registry still names its version, so a deleted or retrained model is never served stale (and its
local copy is removed when a job finds it gone). At most MAX_TRAINED trained models stay loaded (the least recently
used goes first). DeepFloyd IF loads once per worker (worker/deepfloyd.py); a worker that cannot load it says why in
Redis, so the API shows it unavailable with that reason and refuses its jobs.

Every model is a `Servable`: what the loops need of it, whatever its network.
"""

import logging
import os
import shutil
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Protocol, Self

import redis
import torch

from core.catalog import IF_ID, NETWORK_FREE, builtin_models
from core.model_registry import CHECKPOINT_FILES, ModelRegistry
from core.model_spec import ModelSpec
from core.model_status import Conn, failed, loaded, publish
from core.settings import Settings, get_settings
from core.store import ArtifactStore
from core.tracing import tracer
from models.guidance import Predict
from models.inference import chunk_size, chunked, for_inference
from models.predictors import labels, unet_predictor
from models.processes import DDPM, Flow, NoiseProcess, clipped
from models.schedules import make_schedule
from models.unet import Net, load_network
from worker.deepfloyd import load_if
from worker.errors import InputError, ModelUnavailable, ModelUnreadable

log = logging.getLogger(__name__)
MAX_TRAINED = 8
REPORT_TTL_S = 120  # a load report's first life; each heartbeat of the worker renews it (worker/main.py)


class Servable(Protocol):
    """What the job kinds use of a model."""

    @property
    def spec(self) -> ModelSpec: ...

    @property
    def process(self) -> NoiseProcess: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def predict(self) -> Predict: ...

    def condition(self, prompt: str | None, class_label: int | None, n: int) -> torch.Tensor:
        """(n, ...) the condition of each of n samples; neither given: the unconditional one."""
        ...

    def clipped(self) -> Self: ...


@dataclass(frozen=True)
class LoadedModel:
    spec: ModelSpec
    process: NoiseProcess  # for the forward process of every model, and the loops of diffusion models
    net: Net | None  # None until the model's checkpoint ships
    device: torch.device

    @property
    def predict(self) -> Predict:
        if self.net is None:
            raise InputError(f"{self.spec.id} has no network here: {self.spec.reason}")
        return chunked(unet_predictor(self.net), chunk_size(self.device))

    def condition(self, prompt: str | None, class_label: int | None, n: int) -> torch.Tensor:
        """(n,) class labels: a prompt is a class name; neither: UNCONDITIONAL."""
        classes = self.spec.classes
        if prompt is not None:
            if prompt not in classes:
                raise InputError(f"{self.spec.id} knows the prompts {', '.join(classes)}; not {prompt!r}")
            class_label = classes.index(prompt)
        elif class_label is not None and class_label >= len(classes):
            raise InputError(f"{self.spec.id} has {len(classes)} classes; class_label {class_label} is past them")
        return labels(class_label, n, self.device)

    def clipped(self) -> "LoadedModel":
        """The same model, its loops' clean estimates clipped to its value range (a job's `clip_denoised`)."""
        return replace(self, process=clipped(self.process, *self.spec.value_range))


def make_process(spec: ModelSpec) -> NoiseProcess:
    s = spec.schedule
    if s["type"] == "flow":
        return Flow(default_steps=int(s["steps"]))
    return DDPM(make_schedule(s["beta_schedule"], int(s["num_timesteps"]), s["beta_start"], s["beta_end"]))


class ModelCache:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.specs = builtin_models(settings)
        self.models_dir = settings.models_dir
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._loaded: dict[str, Servable] = {}
        self._trained: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._reports: dict[str, str] = {}  # what this worker found loading an external model (service/model_status)

    def spec(self, model_id: str) -> ModelSpec:
        try:
            return self.specs[model_id]
        except KeyError:
            raise InputError(f"model {model_id!r} is not served by this worker") from None

    def load(
        self,
        model_id: str,
        owner: str | None = None,
        conn: redis.Redis | None = None,
        store: ArtifactStore | None = None,
    ) -> Servable:
        """A shipped model, or (given the owner, Redis and the store) one the owner trained."""
        with tracer.start_as_current_span("model load", attributes={"model.id": model_id}):  # under the job's span
            if model_id in self.specs or owner is None or conn is None or store is None:
                return self._shipped(model_id, conn)
            return self._trained_model(model_id, owner, conn, store)

    def warm(self, queue: str, conn: redis.Redis) -> None:
        """Loads the shipped models of `queue` before the first job; one that does not load is reported, not fatal."""
        for spec in self.specs.values():
            if spec.queue == queue and spec.capabilities - NETWORK_FREE:
                try:
                    self._shipped(spec.id, conn)
                except ModelUnavailable as exc:
                    log.error("%s", exc)

    def _shipped(self, model_id: str, conn: redis.Redis | None = None) -> Servable:
        if model_id == IF_ID and model_id not in self._loaded:
            self._loaded[model_id] = self._deepfloyd(conn)
        if model_id not in self._loaded:
            spec = self.spec(model_id)
            net = None
            if spec.checkpoint is not None:
                net = for_inference(load_network(spec.checkpoint), self.device)
            self._loaded[model_id] = LoadedModel(spec, make_process(spec), net, self.device)
        return self._loaded[model_id]

    def _deepfloyd(self, conn: redis.Redis | None) -> Servable:
        spec = self.spec(IF_ID)
        if not spec.available or conn is None:
            raise ModelUnavailable(f"{IF_ID} is not available here: {spec.reason}")
        try:
            model = load_if(spec, self.settings, self.device, conn)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:300]
            log.exception("%s did not load", IF_ID)
            self._report(conn, IF_ID, failed(reason))
            raise ModelUnavailable(f"{IF_ID} did not load on this worker: {reason}") from exc
        self._report(conn, IF_ID, loaded(model.spec))
        return model

    def _report(self, conn: redis.Redis, model_id: str, report: str) -> None:
        self._reports[model_id] = report
        publish(conn, model_id, report, REPORT_TTL_S)

    def renew_reports(self, conn: Conn, ttl_s: int) -> None:
        """Keeps this worker's load reports alive as long as its own registration."""
        for model_id, report in self._reports.items():
            publish(conn, model_id, report, ttl_s)

    def _trained_model(self, model_id: str, owner: str, conn: redis.Redis, store: ArtifactStore) -> LoadedModel:
        key = (owner, model_id)
        spec = ModelRegistry(conn).spec(owner, model_id)
        if spec is None:
            self._trained.pop(key, None)
            shutil.rmtree(self.models_dir / "trained" / owner / model_id, ignore_errors=True)  # its local copy
            raise InputError(f"model {model_id!r} no longer exists (it was deleted); train it again or pick another")
        cached = self._trained.get(key)
        if cached is None or cached.spec.version != spec.version:
            if cached is not None and cached.spec.version is not None:  # retrained under the same name
                shutil.rmtree(self.models_dir / "trained" / owner / model_id / cached.spec.version, ignore_errors=True)
            folder = self.fetch(spec, store)
            try:
                net = for_inference(load_network(folder), self.device)
            except Exception as exc:
                shutil.rmtree(folder, ignore_errors=True)  # the next attempt copies it from the store again
                raise ModelUnreadable(
                    f"the checkpoint of model {model_id!r} could not be read ({type(exc).__name__}); train it again"
                ) from exc
            cached = self._trained[key] = LoadedModel(spec, make_process(spec), net, self.device)
            while len(self._trained) > MAX_TRAINED:
                self._trained.popitem(last=False)
        self._trained.move_to_end(key)
        return cached

    def fetch(self, spec: ModelSpec, store: ArtifactStore) -> Path:
        """The trained model's checkpoint folder on this machine, copied from the store once (atomically)."""
        assert spec.owner is not None and spec.version is not None and spec.checkpoint_key is not None
        folder = self.models_dir / "trained" / spec.owner / spec.id / spec.version
        if all((folder / name).is_file() for name in CHECKPOINT_FILES):
            return folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.version}-", dir=folder.parent))
        try:
            for name in CHECKPOINT_FILES:
                blob = store.get(f"{spec.checkpoint_key}/{name}")
                if blob is None:
                    raise InputError(f"the checkpoint of model {spec.id!r} is missing from the store; train it again")
                (tmp / name).write_bytes(blob.data)
            os.replace(tmp, folder)  # another process may have won the race: then ours is dropped below
        except OSError:
            if not all((folder / name).is_file() for name in CHECKPOINT_FILES):
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder


@lru_cache(maxsize=1)
def get_cache() -> ModelCache:
    return ModelCache(get_settings())
