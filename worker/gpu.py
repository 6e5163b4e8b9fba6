"""What a job cost the GPU: its memory before, at its peak and after (for operators sizing batches and pools, and to
check that a job gives back what it took). Nothing on a machine without CUDA."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def limit_memory(fraction: float | None) -> None:
    """Caps this process's share of its GPU (several workers on one GPU); None: no cap."""
    if fraction is not None and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction)


@contextmanager
def measured(device: torch.device) -> Iterator[dict[str, Any]]:
    """Fills the yielded dict with the job's GPU memory in bytes once the block ends (empty off CUDA)."""
    figures: dict[str, Any] = {}
    if device.type != "cuda":
        yield figures
        return
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    yield figures
    figures.update(
        before_bytes=before,
        peak_bytes=torch.cuda.max_memory_allocated(device),
        after_bytes=torch.cuda.memory_allocated(device),
    )
