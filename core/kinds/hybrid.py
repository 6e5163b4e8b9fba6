"""`hybrid`: low frequencies of one prompt, high of another (CS180 A 1.9)."""

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from core.kinds.base import Count, Guidance, JobBase, Kind, Stepping, Upsampled


class HybridJob(Guidance, Stepping, Upsampled, JobBase):
    """A hybrid image (CS180 A 1.9): low frequencies of the first prompt, high of the second."""

    kind: Literal["hybrid"]
    prompts: list[Annotated[str, Field(max_length=500)]] = Field(min_length=2, max_length=2)
    kernel_size: Annotated[int, Field(ge=1, le=65)] = 33
    sigma: Annotated[float, Field(gt=0, le=32)] = 2.0
    n: Count = 1

    @model_validator(mode="after")
    def _odd_kernel(self) -> Self:
        if self.kernel_size % 2 == 0:
            raise ValueError("`kernel_size` must be odd")
        return self


KIND = Kind("hybrid", HybridJob, {"hybrid": frozenset({"classes"})})
