"""`hybrid`: an image as a sum of components, each under its own prompt: low frequencies of one prompt and high of
another (CS180 A 1.9), or any of the factorizations of Geng et al. 2024 (docs/kinds.md, "Factorized hybrids")."""

import itertools
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from core.errors import InvalidRequest
from core.kinds.base import Count, Door, Guidance, JobBase, Kind, Stepping, Upsampled
from core.model_spec import ModelSpec
from core.schemas.images import ImageInput

Sigma = Annotated[float, Field(gt=0, le=32)]


class HybridJob(Guidance, Stepping, Upsampled, JobBase):
    """A hybrid image (CS180 A 1.9): low frequencies of the first prompt, high of the second; or, by
    `decomposition`, 2-3 frequency bands, grayscale and colour, motion-blurred and sharp, coarse and fine (Geng et
    al., "Factorized Diffusion"): the prompts name the components, coarsest first. With an `image`, component `hold`
    is the image's and the prompts name the others (the paper's inverse problems)."""

    kind: Literal["hybrid"]
    prompts: list[Annotated[str, Field(max_length=500)]] = Field(
        min_length=1,
        max_length=3,
        description="one per component, coarsest first; with `image`, one per component but the held one",
    )
    decomposition: Literal["frequency", "color", "motion", "scale"] = Field(
        default="frequency",
        description="frequency: Gaussian bands (2 or 3 prompts); color: grayscale, then colour; motion: a horizontal "
        "motion blur, then what it removes; scale: `scale_factor` blocks, then the detail (2 prompts each)",
    )
    kernel_size: Annotated[int, Field(ge=1, le=65)] = 33
    sigma: Sigma = 2.0
    sigmas: list[Sigma] | None = Field(
        default=None,
        min_length=1,
        max_length=2,
        description="frequency: the Gaussian sigmas between the bands, descending, one fewer than the bands; "
        "omitted: [sigma] for 2 bands, [2 sigma, sigma / 2] for 3",
    )
    motion_length: Annotated[int, Field(ge=3, le=65)] = Field(default=9, description="motion: the blur's length, odd")
    motion_angle: Annotated[float, Field(ge=-180, le=180)] = Field(
        default=0.0, description="motion: the blur's direction in degrees, counter-clockwise from horizontal"
    )
    scale_factor: Annotated[int, Field(ge=2, le=64)] = Field(
        default=4, description="scale: the block side, a divisor of the image's side"
    )
    image: ImageInput | None = Field(
        default=None, description="a reference image: component `hold` of the result is this image's"
    )
    hold: Annotated[int, Field(ge=0, le=2)] | None = Field(
        default=None, description="with `image`: the index of the component held to it, coarsest 0; omitted: 0"
    )
    n: Count = 1

    @model_validator(mode="after")
    def _odd_kernel(self) -> Self:
        if self.kernel_size % 2 == 0:
            raise ValueError("`kernel_size` must be odd")
        return self

    @field_validator("motion_length")
    @classmethod
    def _odd_length(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd (a blur centred on each pixel)")
        return value

    @property
    def components(self) -> int:
        """One per prompt, and the held one where there is an image."""
        return len(self.prompts) + (self.image is not None)

    @property
    def held(self) -> int | None:
        """The component held to the image; None without one."""
        return None if self.image is None else self.hold or 0

    @property
    def band_sigmas(self) -> list[float]:
        """The frequency cut-offs, coarsest first."""
        if self.sigmas is not None:
            return self.sigmas
        return [self.sigma] if self.components == 2 else [2 * self.sigma, self.sigma / 2]


def check(req: HybridJob, spec: ModelSpec, door: Door) -> None:
    """How many prompts each decomposition takes (one fewer with an image), which component may be held, and what
    the model's images allow."""
    components, with_image = req.components, req.image is not None
    if req.hold is not None and not with_image:
        raise InvalidRequest.field(["hold"], "only with an `image`: the component held to it")
    if not with_image and len(req.prompts) < 2:
        raise InvalidRequest.field(["prompts"], "at least 2 without an `image`: one per component")
    per = "1 prompt with an `image` (it is the other)" if with_image else "2 prompts"
    if req.decomposition != "frequency" and components != 2:
        raise InvalidRequest.field(["prompts"], f"a {req.decomposition} decomposition has 2 components: {per}")
    if components > 3:
        raise InvalidRequest.field(["prompts"], "at most 2 with an `image`: at most 3 bands, one of them the image's")
    if req.hold is not None and req.hold >= components:
        raise InvalidRequest.field(
            ["hold"], f"must be below {components}: the decomposition has {components} components"
        )
    if req.decomposition != "frequency" and req.sigmas is not None:
        raise InvalidRequest.field(["sigmas"], "only a frequency decomposition takes sigmas")
    if req.sigmas is not None and len(req.sigmas) != components - 1:
        raise InvalidRequest.field(["sigmas"], f"{components} bands need {components - 1} sigma(s)")
    if req.sigmas is not None and any(a <= b for a, b in itertools.pairwise(req.sigmas)):
        raise InvalidRequest.field(["sigmas"], "must be descending: the coarsest band's cut-off first")
    if req.decomposition == "color" and spec.channels < 3:
        raise InvalidRequest.field(["decomposition"], f"{spec.id}'s images have no colour: color needs 3 channels")
    if req.decomposition == "scale" and spec.image_size % req.scale_factor:
        raise InvalidRequest.field(["scale_factor"], f"must divide {spec.id}'s image side, {spec.image_size}")


KIND = Kind("hybrid", HybridJob, {"hybrid": frozenset({"classes"})}, check=check)
