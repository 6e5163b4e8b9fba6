"""The `train` kind in a worker: a training run (worker/trainer.py) whose outputs go to the artifact store, whose
progress and cancel go through the step hook, and whose model is registered the moment the job succeeds.

The resumable state after each epoch is a blob of the store (`train/<job id>/state.pt`, written in one MULTI/EXEC),
so a retried job (its worker was killed) goes on after the last saved epoch, on this worker or any other; a reflow
distillation's pairs are another (`train/<job id>/pairs.pt`), so a retry does not draw them again. A distillation's
teacher is read from its checkpoint (shipped, or the owner's copied from the store) at each attempt. The job
ends without a model when it is canceled (it keeps the last epoch's checkpoint and artifacts), when its loss
diverges, or when its dataset cannot be used; its name is then free again.
"""

import logging
from typing import Any

import torch
from rq.job import Job as RQJob

from core import keys
from core.job_state import now_iso
from core.kinds.base import Admitted
from core.kinds.train import TrainJob
from core.model_registry import CHECKPOINT_FILES, ModelRegistry, schedule_of
from core.settings import Settings
from core.store import ArtifactStore
from models.datasets import DatasetError
from models.training import TrainingDiverged
from models.unet import load_network
from worker.errors import InputError, JobCanceled
from worker.hook import StepHook
from worker.model_cache import get_cache
from worker.outputs import Outputs
from worker.train_data import Teacher, TrainData, load_data, reflow_data
from worker.trainer import Trained, TrainingProgress, run_training

log = logging.getLogger(__name__)


class JobSink:
    """A run's outputs as a job's: artifacts, progress and cancel, and the state, in the store."""

    def __init__(self, job: RQJob, store: ArtifactStore, hook: StepHook, ttl_s: int, epochs: int) -> None:
        self.job, self.store, self.hook, self.ttl_s = job, store, hook, ttl_s
        self.outputs = Outputs(job, store, hook, ttl_s)
        self.job_epochs = epochs
        self.epochs_done = 0  # epochs whose state is saved: a retry goes on after them

    def artifact(self, name: str, data: bytes, media_type: str) -> None:
        self.hook.keep_alive()
        self.outputs.save(name, data, media_type)

    def load_state(self) -> bytes | None:
        blob = self.store.get(keys.train_state(self.job.id))
        return blob.data if blob is not None else None

    def save_state(self, data: bytes) -> None:
        self.hook.keep_alive()
        self.store.put(keys.train_state(self.job.id), data, "application/octet-stream", self.ttl_s)
        self.epochs_done += 1

    def training(self, p: TrainingProgress) -> None:
        self.epochs_done = max(self.epochs_done, p.epoch - 1)
        self.hook(
            "training",
            p.step,
            p.total,
            epoch=p.epoch,
            epochs=p.epochs,
            epochs_done=self.epochs_done,
            loss=round(p.loss, 6),
            images_per_second=round(p.images_per_second, 1),
            eta_seconds=round(p.eta_seconds, 1),
        )

    def sampling(self, epoch: int, step: int, total: int) -> None:
        self.hook("sampling", step, total, epoch=epoch, epochs=self.job_epochs, epochs_done=self.epochs_done)

    def pairs(self, step: int, total: int) -> None:
        self.hook("pairs", step, total, epochs=self.job_epochs, epochs_done=0)

    def load_pairs(self) -> bytes | None:
        blob = self.store.get(keys.train_pairs(self.job.id))
        return blob.data if blob is not None else None

    def save_pairs(self, data: bytes) -> None:
        self.hook.keep_alive()
        self.store.put(keys.train_pairs(self.job.id), data, "application/octet-stream", self.ttl_s)

    def finished(self, summary: dict[str, Any]) -> None:
        """The last progress of a run that succeeded: every step and epoch done (the figures came after the last
        step, so the last write was theirs)."""
        self.epochs_done = summary["epochs"]
        self.hook(
            "training",
            summary["steps"],
            summary["steps"],
            epoch=summary["epochs"],
            epochs=summary["epochs"],
            epochs_done=self.epochs_done,
            loss=summary["final_loss"],
            images_per_second=summary["images_per_second"],
            eta_seconds=0.0,
        )


def load_teacher(req: TrainJob, owner: str, job: RQJob, store: ArtifactStore) -> Teacher | None:
    """A distillation's teacher as admission found it (a shipped model or the owner's); None for other jobs."""
    if req.distill is None:
        return None
    name = req.distill.teacher
    cache = get_cache()
    spec = cache.specs.get(name) or ModelRegistry(job.connection).spec(owner, name)
    if spec is None:
        raise InputError(f"the teacher {name!r} no longer exists (it was deleted)")
    folder = spec.checkpoint if spec.checkpoint is not None else cache.fetch(spec, store)
    return Teacher(name, load_network(folder), spec.schedule, spec.classes, learned_from(spec.info))


def learned_from(info: dict[str, Any]) -> str | None:
    """The dataset a model learned from: a trained model's record names it, a shipped one's training.json."""
    trained, shipped = info.get("dataset"), info.get("training", {}).get("dataset")
    if isinstance(trained, str):
        return trained
    return str(shipped["name"]) if isinstance(shipped, dict) and "name" in shipped else None


def distilled(req: TrainJob, teacher: Teacher) -> dict[str, Any]:
    """A distilled model's record fields: its teacher, its served defaults (steps and sampler; guidance baked in)."""
    d = req.distill
    assert d is not None
    sampler = {"sampler": "euler"} if d.method == "reflow" else {"sampler": "ddim", "spacing": "trailing"}
    return {
        "description": f"{teacher.id} distilled by {d.method} to {d.steps} steps, its CFG {d.guidance_scale} baked in",
        "arch": teacher.arch,
        "schedule": schedule_of(
            req.objective_name,
            str(teacher.schedule.get("beta_schedule", "linear")),
            int(teacher.schedule.get("num_timesteps", 300)),
            flow_steps=d.steps,
        ),
        "defaults": {"steps": d.steps, "guidance_scale": 1.0, **sampler},
        "distilled_from": {"teacher": teacher.id, **d.model_dump(exclude={"teacher"}, exclude_none=True)},
    }


def model_record(req: TrainJob, job: RQJob, owner: str, trained: Trained, teacher: Teacher | None) -> dict[str, Any]:
    """The registry's record of the model a job made (core/model_registry.py reads it)."""
    s = trained.summary
    return {
        "id": req.name,
        "owner": owner,
        "version": job.id,
        "job_id": job.id,
        "checkpoint_key": keys.model_checkpoint(owner, req.name, job.id),
        "description": f"{req.objective} UNet ({req.conditioning} conditioning, D = {req.hidden}) on {req.dataset}",
        "dataset": req.dataset,
        "objective": req.objective,
        "conditioning": req.conditioning,
        "arch": req.arch,
        "sigma": req.sigma,
        "classes": s["classes"],
        "image_size": s["image_size"],
        "channels": s["channels"],
        "schedule": schedule_of(req.objective_name, req.schedule),
        "size_bytes": s["size_bytes"],
        "training_seconds": s["training_seconds"],
        "metrics": {
            k: s[k]
            for k in ("final_loss", "epoch_losses", "images_per_second", "epochs", "steps", "num_parameters", "quality")
        },
        "created_at": now_iso(),
    } | (distilled(req, teacher) if teacher is not None else {})


def run_train(
    admitted: Admitted[TrainJob], job: RQJob, store: ArtifactStore, hook: StepHook, settings: Settings
) -> dict[str, Any]:
    """Runs the job to its model; raises JobCanceled, InputError or TrainingDiverged to end it without one, and
    anything else to have it retried (its state is kept for that)."""
    req = admitted.req
    owner = str(job.meta["owner"])
    registry = ModelRegistry(job.connection)
    done = registry.record(owner, req.name)
    if done is not None and done["job_id"] == job.id:  # an earlier attempt registered it, then its worker died
        log.info("job=%s registered model %s already", job.id, req.name)
        return {"model": req.name, **done["metrics"], "training_seconds": done["training_seconds"]}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        teacher = load_teacher(req, owner, job, store)
        hook.keep_alive()
        sink = JobSink(job, store, hook, settings.artifact_ttl_s, req.num_epochs)
        data = job_data(admitted, teacher, sink, device, settings)
        hook.keep_alive()
        trained = run_training(admitted, data, sink, device, teacher)
        sink.finished(trained.summary)
    except (JobCanceled, InputError, TrainingDiverged):
        forget(store, job.id)
        registry.release(owner, req.name, job.id)
        raise
    record = model_record(req, job, owner, trained, teacher)
    for name, media_type in CHECKPOINT_FILES.items():
        store.put(f"{record['checkpoint_key']}/{name}", trained.checkpoint[name], media_type, None)
    registry.register(owner, record)
    forget(store, job.id)
    log.info("job=%s registered model %s of %s", job.id, req.name, owner)
    return trained.summary


def job_data(
    admitted: Admitted[TrainJob], teacher: Teacher | None, sink: JobSink, device: torch.device, settings: Settings
) -> TrainData:
    """The run's training items: the dataset's, or reflow's pairs from the teacher."""
    if teacher is not None and admitted.req.dataset is None:
        return reflow_data(admitted, teacher, sink, device)
    try:
        return load_data(admitted.req, settings.data_dir)
    except DatasetError as exc:
        raise InputError(str(exc)) from exc


def forget(store: ArtifactStore, job_id: str) -> None:
    """Drops what only a retry of the job would read."""
    store.delete(keys.train_state(job_id))
    store.delete(keys.train_pairs(job_id))
