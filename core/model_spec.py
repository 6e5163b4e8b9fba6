"""What the service knows of a model without loading it: its queue, size, value range, noise process, classes,
defaults and the capabilities (`kind` or `kind.method`) it can run now."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.samplers import SamplerInfo, default_sampler, table


@dataclass(frozen=True)
class ModelSpec:
    id: str
    description: str
    queue: str  # the worker pool that serves it
    image_size: int  # pixels per side of the model's native images
    channels: int
    value_range: tuple[float, float]  # pixel values the model's loops work in
    schedule: dict[str, Any]  # the noise process: DDPM with its betas, or flow matching
    capabilities: frozenset[str] = frozenset()  # `kind` or `kind.method` strings it runs now
    reason: str | None = None  # why the network kinds cannot run now; None when they can
    classes: tuple[str, ...] = ()  # class names, the prompts of a class-conditioned model
    defaults: dict[str, Any] = field(default_factory=dict)  # guidance_scale, stride or steps
    checkpoint: Path | None = None  # a shipped model's folder (config.json + safetensors)
    shipped: bool = True
    info: dict[str, Any] = field(default_factory=dict)  # training data, size, measured quality
    objective: str = ""  # what the network predicts: "denoiser" (x from z = x + sigma eps), "ddpm" (eps), "flow" (u)
    text: bool = False  # conditioned on free text (DeepFloyd IF): any prompt, no class labels
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

    @property
    def samplers(self) -> dict[str, SamplerInfo]:
        """The samplers its loops can run: none for the single-step denoiser."""
        return {} if self.is_denoiser else table(self.is_flow)

    @property
    def default_sampler(self) -> str:
        return str(self.defaults.get("sampler") or default_sampler(self.is_flow))

    def num_times(self, steps: int | None, stride: int | None, sampler: str | None = None) -> int:
        """How many times a run visits (the clean end included), as `models.processes` and `models.solvers` count
        them."""
        if self.is_flow:
            return (steps or self.defaults.get("steps", 50)) + 1
        if sampler not in (None, "ddpm") and steps is not None:
            return steps + 1
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
            "samplers": [{**s.describe(), "default": s.name == self.default_sampler} for s in self.samplers.values()],
            "shipped": self.shipped,
            "objective": self.objective or None,
            "text": self.text,
            **self.info,
        }
