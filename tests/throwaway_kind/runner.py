"""`checker`: the worker's side of the kind."""

from typing import Any

import torch

from core.kinds.base import Admitted
from tests.throwaway_kind.kind import CheckerJob
from worker.job_context import JobContext, Runner


def run_checker(admitted: Admitted[CheckerJob], ctx: JobContext) -> dict[str, Any]:
    spec = ctx.model.spec
    side = spec.image_size // admitted.req.squares
    cells = torch.arange(spec.image_size) // side
    board = ((cells[:, None] + cells[None, :]) % 2 == 0).float()  # (H, W) 1 = light
    ctx.outputs.save_images(board.expand(1, spec.channels, -1, -1))
    ctx.hook("drawing", 1, 1)
    return {"squares": admitted.req.squares, "seed": admitted.seed}


RUNNERS: dict[str, Runner] = {"checker": run_checker}
