"""The one sampling loop: every technique is a start, a guidance rule and a constraint around it
(docs/architecture.md, "The sampling loop").

Images are (B, C, H, W) in the model's value range. Randomness comes from one generator per sample, so a sample
never depends on its batch-mates: the same seed gives the same pixels in any batch.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from models.forward import randn_like_per_sample
from models.guidance import Guide, Predict
from models.processes import NoiseProcess
from models.solvers import Solver

Constrain = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class Step:
    index: int  # 1-based: the number of steps done
    total: int
    t: float  # the time stepped from
    x: torch.Tensor  # (B, C, H, W) the state after the step
    preview: Callable[[], torch.Tensor]  # (B, C, H, W) the clean image the step's estimate implies; computed on demand


OnStep = Callable[[Step], None]


def generators(seed: int, n: int, offset: int = 0) -> list[torch.Generator]:
    """Sample i draws from seed + offset + i."""
    return [torch.Generator().manual_seed((seed + offset + i) % 2**63) for i in range(n)]


def sample_loop(
    solver: Solver,
    predict: Predict,
    guide: Guide,
    x: torch.Tensor,
    gens: list[torch.Generator],
    constrain: Constrain | None = None,
    on_step: OnStep | None = None,
    begin: int = 0,
) -> torch.Tensor:
    """Runs `x` (at solver.times[begin]) through the solver's later times; returns the state at the last."""
    process, times = solver.process, solver.times

    def denoise(x: torch.Tensor, t: float) -> torch.Tensor:
        t_model = torch.full((x.shape[0],), process.model_time(t), device=x.device)  # (B,)
        return guide(predict, x, t_model)  # one batched forward pass, all branches

    total = len(times) - 1 - begin
    for i in range(begin, len(times) - 1):
        x_prev, (x, est) = x, solver.step(denoise, x, i, gens)
        if constrain is not None:
            x = constrain(x, times[i + 1])
        if on_step is not None:
            on_step(Step(i - begin + 1, total, times[i], x, partial(process.preview, x_prev, est, times[i])))
    return x


def start(
    process: NoiseProcess,
    times: list[float],
    i_start: int,
    gens: list[torch.Generator],
    like: torch.Tensor,
    image: torch.Tensor | None = None,
) -> torch.Tensor:
    """The state at times[i_start]: pure noise, or `image` (B, C, H, W) noised to it (SDEdit, CS180 A 1.7)."""
    noise = randn_like_per_sample(like, gens)
    return noise if image is None else process.noise_to(image, times[i_start], noise)


@dataclass(frozen=True)
class Inpaint:
    """After each step, the kept pixels are put back, noised to the new time (CS180 A 1.7.2). mask: 1 = regenerate."""

    process: NoiseProcess
    original: torch.Tensor  # (B, C, H, W)
    mask: torch.Tensor  # (B, 1 or C, H, W) in {0, 1}
    gens: list[torch.Generator]

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        known = self.process.noise_to(self.original, t, randn_like_per_sample(self.original, self.gens))
        return self.mask * x + (1 - self.mask) * known
