"""`anagram`: a visual anagram, one image with two readings under a view (CS180 A 1.8)."""

from typing import Annotated, Literal

from pydantic import Field

from core.kinds.base import Count, Guidance, JobBase, Kind, Stepping, Upsampled


class AnagramJob(Guidance, Stepping, Upsampled, JobBase):
    """A visual anagram (CS180 A 1.8): the first prompt upright, the second under `view`."""

    kind: Literal["anagram"]
    prompts: list[Annotated[str, Field(max_length=500)]] = Field(min_length=2, max_length=2)
    view: Literal[
        "flip",
        "rotate_180",
        "negate",
        "rotate_cw",
        "rotate_ccw",
        "transpose",
        "skew",
        "patch_permute",
        "pixel_permute",
        "jigsaw",
        "inner_circle",
        "square_hinge",
    ] = "flip"
    n: Count = 1


KIND = Kind("anagram", AnagramJob, {"anagram": frozenset({"classes"})})
