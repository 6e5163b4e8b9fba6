"""How a kind's own guidance rule carries over to DeepFloyd IF's stage II (worker/upsample.py). Stage II guides by
CFG on the job's prompt unless the kind registers a `StageTwo` (worker/runners.py): an anagram upsamples under its
views, a hybrid under its factorization with its held component held at stage II's size."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from models.deepfloyd import LowRes
from models.guidance import Guide
from models.sampling import Constrain
from worker.deepfloyd import Stage
from worker.job_context import JobContext


@dataclass(frozen=True)
class StageTwoInputs:
    """What stage II holds when a kind's rule is made for it."""

    ctx: JobContext
    stage: Stage
    base: int  # stage I's side; stage II's is `stage.size`, a multiple of it
    n: int  # images upsampled, image i seeded with seed + i
    seed: int
    scale: float  # stage II's guidance scale
    times: Sequence[float]  # the solver's
    condition: LowRes  # (n, 3, S, S): the low-resolution images, upscaled and noised

    @property
    def factor(self) -> int:
        """Stage II's side over stage I's: what a length in stage I's pixels is multiplied by."""
        return self.stage.size // self.base


@dataclass(frozen=True)
class StageTwoRule:
    """A kind's rule at stage II: the guide; its conditioning image laid out as the guide's batch of x (None: the
    inputs' own, which every branch shares); a constraint after each step; and a function that saves the kind's
    artifacts of the upsampled images ((n, 3, S, S) in [0, 1]) and returns what they add to the job's result."""

    guide: Guide
    condition: LowRes | None = None
    constrain: Constrain | None = None
    save: Callable[[torch.Tensor], dict[str, Any]] | None = None


StageTwo = Callable[[Any, StageTwoInputs], StageTwoRule]  # (the job's request, stage II's inputs) -> its rule
