"""A training run, shared by the worker's `train` jobs and `diffusion-jobs train`: the data, the network, the loop of
`models.training`, and every CS180 part B deliverable, each written as soon as it exists.

No Redis here. Where artifacts, the resumable state and progress go is the caller's `Sink`: the artifact store and
the step hook in a worker (worker/train.py), a folder and a progress bar on the command line.

A distillation (`distill`, docs/training.md) runs the same loop from a `Teacher`: its student starts from the
teacher's weights; reflow's training set is the teacher's pairs (worker/train_data.py: drawn first, as stage `pairs`,
and kept in the sink so a resumed run does not draw them again); progressive noises the dataset's images for the
teacher's two steps. Its figures are the student's, at its own steps and sampler, guidance 1 (the teacher's is
baked in).

Per epoch, in this order: the EMA checkpoint (`config.json`, `diffusion_pytorch_model.safetensors`), `loss.png`,
`metrics.json`, `epoch_{k}.png` when k is a sample epoch (and `frames.gif` at the last epoch), then the resumable
state. A run stopped anywhere keeps the last finished epoch's checkpoint and artifacts; a run started again with the
state goes on after that epoch, with the same weights, optimizer, schedule, EMA and random streams.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from core.kinds.base import Admitted
from core.kinds.train import TrainJob
from models.figures import (
    class_samples,
    denoised_figure,
    loss_figure,
    mean_image,
    noising_figure,
    ood_figure,
    pure_noise_figure,
    uncond_samples,
)
from models.grid import make_grid
from models.imageio import encode_gif, encode_png
from models.judge import judge_digits
from models.processes import NoiseProcess
from models.sampling import Step
from models.solvers import Native, Solver, make_solver
from models.train_config import TrainConfig, TrainState, build_model, fused_adam_works, noise_process, use_bf16
from models.training import TrainResult, train
from models.unet import Net, set_memory_format
from worker.train_data import PairSink, Teacher, TrainData

PER_CLASS = 4  # samples of each class in a class model's epoch figure (the spec's 4)
UNCOND_SAMPLES = 40  # samples in an unconditional model's epoch figure (the spec's 40)
JUDGED_DATASETS = ("mnist-5k", "mnist")  # digits: the judge of models/judge.py reads them
JUDGED_PER_CLASS = 10  # samples of each class the judge reads at the end of a class model's run
JUDGED_SAMPLES = 100  # samples of an unconditional model it reads
JUDGED_GUIDANCE = 5.0  # CFG gamma of the class samples it reads (the spec's, as bench/quality.py)
CHECKPOINT = {"config.json": "application/json", "diffusion_pytorch_model.safetensors": "application/octet-stream"}


@dataclass(frozen=True)
class TrainingProgress:
    """Where a run is, after each optimizer step."""

    epoch: int  # the epoch in progress, from 1
    epochs: int
    step: int  # optimizer steps done in the whole run (earlier attempts included)
    total: int  # optimizer steps of the whole run
    loss: float  # this step's
    images_per_second: float  # over this attempt
    eta_seconds: float  # to the last step, at this attempt's rate


class Sink(PairSink, Protocol):
    """Where a run's outputs go."""

    def artifact(self, name: str, data: bytes, media_type: str) -> None: ...

    def load_state(self) -> bytes | None: ...  # the state of an earlier attempt of this run, if any

    def save_state(self, data: bytes) -> None: ...  # atomically: a reader sees the old state or the new one

    def training(self, progress: TrainingProgress) -> None: ...  # once per step; raise to stop the run

    def sampling(self, epoch: int, step: int, total: int) -> None: ...  # per step of a figure's loop; may raise


@dataclass
class Trained:
    """What a finished run made: the checkpoint's files, and the summary that becomes the job's result."""

    checkpoint: dict[str, bytes]
    summary: dict[str, Any] = field(default_factory=dict)


def train_config(
    req: TrainJob, seed: int, num_classes: int, device: torch.device, teacher: Teacher | None = None
) -> TrainConfig:
    config = TrainConfig(
        objective=req.objective_name,
        epochs=req.num_epochs,
        batch_size=req.batch_size or 1,
        lr=req.lr,
        hidden=req.hidden or 1,
        num_classes=num_classes,
        modulation="mul" if req.objective == "flow" and req.conditioning == "time" else "add",  # the flow spec's
        p_uncond=req.p_uncond,
        sigma=req.sigma or 0.5,
        ema_decay=req.ema_decay,
        grad_clip=req.grad_clip or None,
        seed=seed,
        channels_last=device.type == "cpu",  # ~15 % faster on a CPU (scripts/train_shipped.py)
        bf16=use_bf16(req.precision, device),
        fused_adam=fused_adam_works(device),
        arch=req.arch or "cs180",
        schedule=req.schedule,
        loss=req.loss,
        loss_weight=req.loss_weight,
    )
    return config if teacher is None else distill_config(config, req, teacher)


def distill_config(config: TrainConfig, req: TrainJob, teacher: Teacher) -> TrainConfig:
    """A distillation's: the teacher's network and noise process, the method's loss. Reflow's unguided pairs carry
    label -1, so no other label is dropped (p_uncond 0); progressive drops labels as a class model's training does."""
    distill, unet, s = req.distill, teacher.net.config, teacher.schedule
    assert distill is not None and distill.teacher_steps is not None
    fields: dict[str, Any] = {
        "hidden": int(unet["hidden"]),
        "modulation": str(unet.get("modulation", "add")),
        "arch": teacher.arch,
        "p_uncond": 0.0 if distill.method == "reflow" else req.p_uncond,
        "distill": distill.method,
        "distill_steps": distill.steps,
        "teacher_steps": distill.teacher_steps,
        "guidance_scale": distill.guidance_scale if distill.guidance_scale is not None else 1.0,
    }
    if s["type"] == "ddpm":
        fields |= {"schedule": s["beta_schedule"], "num_timesteps": int(s["num_timesteps"])}
        fields |= {"beta_start": float(s["beta_start"]), "beta_end": float(s["beta_end"])}
    return replace(config, **fields)


def state_bytes(state: TrainState) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


SPEED_ONLY = ("bf16", "channels_last", "fused_adam")  # config fields that change speed, not what is learned


def read_state(data: bytes | None, config: TrainConfig) -> TrainState | None:
    """An earlier attempt's state, if it was written by this run's config (anything else starts afresh), on a device
    of any kind: what is learned does not depend on the fields in SPEED_ONLY."""
    if data is None:
        return None
    state: TrainState = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    saved, wanted = dict(state.get("config", {})), asdict(config)
    for name in SPEED_ONLY:
        saved.pop(name, None)
        wanted.pop(name, None)
    if saved != wanted:
        return None
    state["config"] = asdict(config)
    return state


def checkpoint_files(net: Net) -> dict[str, bytes]:
    """The network as `save_pretrained` writes it: config.json and diffusion_pytorch_model.safetensors."""
    set_memory_format(net, torch.contiguous_format)  # safetensors wants contiguous tensors
    with tempfile.TemporaryDirectory() as tmp:
        net.save_pretrained(tmp)
        return {name: (Path(tmp) / name).read_bytes() for name in CHECKPOINT}


def to_device(net: Net, device: torch.device) -> Net:
    """`net.to(device)`, typed (diffusers' ModelMixin types `to` as its own wrapper)."""
    moved: Net = nn.Module.to(net, device)
    return moved


class Run:
    """One attempt at a training run; `go()` runs it to the end (or until the sink raises)."""

    def __init__(
        self,
        admitted: Admitted[TrainJob],
        data: TrainData,
        sink: Sink,
        device: torch.device,
        teacher: Teacher | None = None,
    ) -> None:
        self.req, self.seed = admitted.req, admitted.seed
        self.data, self.sink, self.device, self.teacher = data, sink, device, teacher
        self.config = train_config(self.req, self.seed, len(data.class_names), device, teacher)
        self.guidance = 1.0 if teacher is not None else JUDGED_GUIDANCE  # a student's CFG is baked in
        self.steps_per_epoch = math.ceil(len(data.images) / self.config.batch_size)
        self.total = self.config.epochs * self.steps_per_epoch
        self.state = read_state(sink.load_state(), self.config)
        self.start_epoch = self.state["epoch"] if self.state is not None else 0
        self.began = time.perf_counter()
        self.figure_seconds = 0.0  # spent on epochs' artifacts: not training, so not in images per second
        self.images_done = 0
        self.frames: list[Tensor] = []
        self.last_state: TrainState | None = self.state

    def figures_generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def ema_net(self, weights: dict[str, Tensor]) -> Net:
        net = build_model(self.config, self.data.channels, self.data.image_size)
        net.load_state_dict(weights)
        return to_device(net, self.device).eval()

    def on_batch(self, epoch: int, i: int, steps: int, loss: float) -> None:
        self.images_done += min(self.config.batch_size, len(self.data.images) - i * self.config.batch_size)
        done = epoch * steps + i + 1
        elapsed = max(time.perf_counter() - self.began - self.figure_seconds, 1e-9)
        steps_here = done - self.start_epoch * steps
        eta = (self.total - done) * elapsed / max(steps_here, 1)
        self.sink.training(
            TrainingProgress(epoch + 1, self.config.epochs, done, self.total, loss, self.images_done / elapsed, eta)
        )

    def on_epoch(self, epoch: int, state: TrainState) -> None:
        began = time.perf_counter()
        try:
            self.epoch_outputs(epoch + 1, state)
        finally:
            self.figure_seconds += time.perf_counter() - began

    def epoch_outputs(self, k: int, state: TrainState) -> None:
        net = self.ema_net(state["ema"])
        for name, data in checkpoint_files(net).items():
            self.sink.artifact(name, data, CHECKPOINT[name])
        title = f"{self.req.name}: {self.req.objective} ({self.req.conditioning}) on {self.req.dataset}"
        if self.req.distill is not None:
            d = self.req.distill
            title = f"{self.req.name}: {d.method} of {d.teacher} to {d.steps} steps"
        self.sink.artifact("loss.png", loss_figure(state["step_losses"], self.steps_per_epoch, title), "image/png")
        self.sink.artifact("metrics.json", json.dumps(self.metrics(state), indent=1).encode(), "application/json")
        if k in (self.req.sample_epochs or []) or k == self.config.epochs:
            self.epoch_figure(net, k)
        self.sink.save_state(state_bytes(state))  # last: an epoch counts as done once its artifacts are out
        self.last_state = state

    def epoch_figure(self, net: Net, k: int) -> None:
        """epoch_{k}.png: denoised test images (denoiser), 4 samples of each class, or 40 samples."""
        if self.config.objective == "denoiser":
            grid = denoised_figure(net, self.data.test_images, self.config.sigma, self.figures_generator())
        else:
            solver = self.solver()
            process, times = solver.process, solver.times

            def on_step(step: Step) -> None:
                self.sink.sampling(k, step.index, step.total)

            if self.data.class_names:
                images, self.frames = class_samples(
                    net,
                    process,
                    times,
                    len(self.data.class_names),
                    PER_CLASS,
                    self.guidance,
                    self.seed,
                    on_step,
                    solver,
                )
                grid = make_grid(images, nrow=len(self.data.class_names))
            else:
                images, self.frames = uncond_samples(net, process, times, UNCOND_SAMPLES, self.seed, on_step, solver)
                grid = make_grid(images, nrow=8)
        if k in (self.req.sample_epochs or []):
            self.sink.artifact(f"epoch_{k}.png", encode_png(grid), "image/png")

    def solver(self) -> Solver:
        """What the figures sample with: the process's own step over `sample_steps`, or a student's own sampler at its
        steps (reflow: Euler; progressive: DDIM on the trailing grid it was trained on)."""
        process: NoiseProcess = noise_process(self.config)
        distill = self.req.distill
        if distill is None:
            return Native(process, process.times(self.req.sample_steps))
        if distill.method == "reflow":
            return make_solver(process, "euler", steps=distill.steps)
        return make_solver(process, "ddim", steps=distill.steps, spacing="trailing")

    def metrics(self, state: TrainState) -> dict[str, Any]:
        n = len(self.data.images)
        seconds = state["epoch_seconds"]
        return {
            "epochs_done": state["epoch"],
            "epochs": self.config.epochs,
            "steps": state["step"],
            "steps_per_epoch": self.steps_per_epoch,
            "num_images": n,
            "epoch_losses": [round(v, 6) for v in state["epoch_losses"]],
            "epoch_seconds": [round(s, 3) for s in seconds],
            "epoch_images_per_second": [round(n / s, 1) if s > 0 else None for s in seconds],
            "images_per_second": round(n * len(seconds) / sum(seconds), 1) if sum(seconds) > 0 else None,
            "training_seconds": round(sum(seconds), 3),
            "start_epoch": self.start_epoch,  # where this attempt began: > 0 after a resume
            "lr": self.config.learning_rate,
            "device": self.device.type,
            "precision": "bf16" if self.config.bf16 else "fp32",
            "loss_weight": self.config.loss_weight,
        }

    def judged(self, net: Net) -> dict[str, Any] | None:
        """What the digit judge reads in samples of a generative model of digits (bench/quality.py's figures, on
        fewer samples): class accuracy (class models, CFG gamma 5) and the Frechet distance to held-out digits."""
        dataset = self.teacher.dataset if self.teacher is not None else self.req.dataset
        if self.config.objective == "denoiser" or dataset not in JUDGED_DATASETS:
            return None
        solver = self.solver()
        process, times = solver.process, solver.times
        k = len(self.data.class_names)

        def on_step(step: Step) -> None:
            self.sink.sampling(self.config.epochs, step.index, step.total)

        if k:
            images, _ = class_samples(
                net, process, times, k, JUDGED_PER_CLASS, self.guidance, self.seed, on_step, solver
            )
            classes: Tensor | None = torch.arange(k).repeat(JUDGED_PER_CLASS)  # sample i is of class i % k
        else:
            images, _ = uncond_samples(net, process, times, JUDGED_SAMPLES, self.seed, on_step, solver)
            classes = None
        quality = judge_digits(images, classes, self.seed).as_dict()
        return {**quality, "guidance_scale": self.guidance if k else None, "steps": len(times) - 1}

    def final_figures(self, net: Net) -> None:
        gen = self.figures_generator()
        if self.config.objective == "denoiser":
            test = self.data.test_images
            self.sink.artifact("ood.png", encode_png(ood_figure(net, test[:4], generator=gen)), "image/png")
            self.sink.artifact("pure_noise.png", encode_png(pure_noise_figure(net, 8, gen)), "image/png")
            self.sink.artifact("mean_image.png", encode_png(mean_image(self.data.images)), "image/png")
        elif self.frames:
            self.sink.artifact("frames.gif", encode_gif(self.frames, duration_ms=80), "image/gif")

    def go(self) -> Trained:
        """Runs the epochs left; raises models.training.TrainingDiverged, or what the sink raises to stop."""
        if self.state is None and self.req.dataset is not None:  # reflow has no dataset to noise
            noising = noising_figure(self.data.test_images, generator=self.figures_generator())
            self.sink.artifact("noising.png", encode_png(noising), "image/png")
        student = build_model(self.config, self.data.channels, self.data.image_size)
        if self.teacher is not None:  # a student starts as its teacher (a resumed run then loads its state)
            student.load_state_dict(self.teacher.net.state_dict())
        model = to_device(student, self.device)
        teacher = self.teacher if self.config.distill == "progressive" else None  # reflow's taught in its pairs
        result = train(
            model,
            self.data.images,
            self.data.labels,
            self.config,
            on_batch=self.on_batch,
            on_epoch=self.on_epoch,
            state=self.state,
            pair_noise=self.data.pair_noise,
            teacher=teacher.for_device(self.device) if teacher is not None else None,
        )
        net = result.ema.eval()
        self.final_figures(net)
        quality = self.judged(net)
        if quality is not None and self.last_state is not None:  # metrics.json again, with what the judge read
            metrics = {**self.metrics(self.last_state), "quality": quality}
            self.sink.artifact("metrics.json", json.dumps(metrics, indent=1).encode(), "application/json")
        files = checkpoint_files(net)
        return Trained(files, self.summary(result, net, files, quality))

    def summary(
        self, result: TrainResult, net: Net, files: dict[str, bytes], quality: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The finished run, as the job's result."""
        seconds = sum(result.epoch_seconds)
        return {
            "model": self.req.name,
            "epochs": self.config.epochs,
            "steps": len(result.step_losses),
            "steps_per_epoch": self.steps_per_epoch,
            "start_epoch": self.start_epoch,
            "resumed": self.start_epoch > 0,
            "num_images": len(self.data.images),
            "final_loss": round(result.epoch_losses[-1], 6) if result.epoch_losses else None,
            "epoch_losses": [round(v, 6) for v in result.epoch_losses],
            "training_seconds": round(seconds, 3),
            "images_per_second": round(result.images_per_second, 1),
            "precision": "bf16" if self.config.bf16 else "fp32",
            "num_parameters": sum(p.numel() for p in net.parameters()),
            "size_bytes": len(files["diffusion_pytorch_model.safetensors"]),
            "classes": list(self.data.class_names),
            "image_size": self.data.image_size,
            "channels": self.data.channels,
            "quality": quality,
        }


def run_training(
    admitted: Admitted[TrainJob],
    data: TrainData,
    sink: Sink,
    device: torch.device | None = None,
    teacher: Teacher | None = None,
) -> Trained:
    """Trains the model the request describes on `data` (a distillation: from `teacher`), resuming from the sink's
    state if it has one (module doc)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return Run(admitted, data, sink, device, teacher).go()
