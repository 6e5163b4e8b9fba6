"""What a kind's function gets besides its admitted request: the loaded model, the store, the step hook, the outputs,
and the notes that go into the job's result; and the type of such a function."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from core.kinds.base import Admitted
from core.schemas.images import ImageInput
from core.store import ArtifactStore
from models.imageio import resize
from worker.hook import StepHook
from worker.inputs import load_image
from worker.model_cache import Servable
from worker.outputs import Outputs


@dataclass
class JobContext:
    model: Servable
    store: ArtifactStore
    hook: StepHook
    outputs: Outputs
    notes: dict[str, Any] = field(default_factory=dict)  # goes into the job's result

    def image(
        self, image: ImageInput, native: bool = False, name: str = "image", side: int | None = None
    ) -> torch.Tensor:
        """(1, C, H, W) in the model's value range; `native`: resized to the model's size (noted in the result);
        `side`: resized to side x side (stage II's)."""
        spec = self.model.spec
        x = load_image(image, self.store, spec.channels)
        if native and x.shape[-2:] != (spec.image_size, spec.image_size):
            self.notes[f"{name}_resized_from"] = list(x.shape[-2:])
            side = spec.image_size
        if side is not None and x.shape[-2:] != (side, side):
            x = resize(x, (side, side)).clamp(0, 1)
        return self.from_unit(x)

    def from_unit(self, x: torch.Tensor) -> torch.Tensor:
        """From [0, 1] to the model's value range, on the model's device: `to_unit`'s inverse."""
        lo, hi = self.model.spec.value_range
        return (x * (hi - lo) + lo).to(self.model.device)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """From the model's value range back to [0, 1] (unclipped; PNG encoding clips)."""
        lo, hi = self.model.spec.value_range
        return (x.float().cpu() - lo) / (hi - lo)


Runner = Callable[[Admitted[Any], JobContext], dict[str, Any]]  # a capability's function (worker/runners.py)
