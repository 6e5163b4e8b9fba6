"""`sample`: sampling from pure noise, with classifier-free guidance (CS180 A 1.5, 1.6, B 2.3, 2.6)."""

from typing import Literal

from pydantic import Field

from core.kinds.base import Conditioned, Count, JobBase, Kind, Stepping, Upsampled


class SampleJob(Conditioned, Stepping, Upsampled, JobBase):
    """Sampling from pure noise, with classifier-free guidance (CS180 A 1.5, 1.6, B 2.3, 2.6)."""

    kind: Literal["sample"]
    n: Count = 4
    frames: bool = Field(default=False, description="add frames.gif, the denoising process")


KIND = Kind(
    "sample",
    SampleJob,
    {"sample": frozenset({"diffusion"})},
    example={"kind": "sample", "model": "mnist-ddpm", "class_label": 7, "n": 2, "steps": 10, "seed": 0},
)
