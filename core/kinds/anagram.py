"""`anagram`: a visual anagram, one image with a different reading under each of 2-4 views (CS180 A 1.8; Geng et
al., "Visual Anagrams"): the request, and its per-view arguments (`view_args`), checked here without torch."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import InvalidRequest
from core.kinds.base import Count, Door, Guidance, JobBase, Kind, Stepping, Upsampled
from core.model_spec import ModelSpec

ViewName = Literal[
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
]
AnyView = Literal["identity", ViewName]
TILES = 4  # the tiled views' default grid: 4 x 4 patches (models/views.py)
ArgSeed = Annotated[int, Field(ge=0, le=2**32 - 1, description="the fixed permutation's seed")]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class NoArgs(_Args):
    """A view without parameters: {} or null."""


class PatchArgs(_Args):
    """patch_permute, jigsaw: the side of a square patch in pixels of the model's images (default: a quarter of the
    side, a 4 x 4 grid), and the shuffle's seed."""

    patch_size: Annotated[int, Field(ge=1, le=4096)] | None = None
    seed: ArgSeed = 0


class PixelArgs(_Args):
    seed: ArgSeed = 0


class SkewArgs(_Args):
    factor: Annotated[float, Field(ge=-4, le=4, description="column j rolls by int(factor (j - N/2)) pixels")] = 1.5


class CircleArgs(_Args):
    radius: Annotated[float, Field(gt=0, le=0.5, description="the disc's radius, a fraction of the side")] = 1 / 3


VIEW_ARGS: dict[str, type[_Args]] = {
    "patch_permute": PatchArgs,
    "jigsaw": PatchArgs,
    "pixel_permute": PixelArgs,
    "skew": SkewArgs,
    "inner_circle": CircleArgs,
}


class AnagramJob(Guidance, Stepping, Upsampled, JobBase):
    """A visual anagram: prompt k reads under view k. `views` names them (2-4, the first usually "identity");
    without it, 2 prompts read upright and under `view`."""

    kind: Literal["anagram"]
    prompts: list[Annotated[str, Field(max_length=500)]] = Field(min_length=2, max_length=4)
    view: ViewName = Field(default="flip", description='shorthand for `views` ["identity", view] (2 prompts)')
    views: list[AnyView] | None = Field(
        default=None, min_length=2, max_length=4, description="one view per prompt, the first usually identity"
    )
    view_args: list[dict[str, Any] | None] | None = Field(
        default=None,
        min_length=2,
        max_length=4,
        description="per view, its parameters or null: patch_permute and jigsaw {patch_size, seed}, pixel_permute "
        "{seed}, skew {factor}, inner_circle {radius}",
    )
    reduction: Literal["mean", "sum", "alternate"] = Field(
        default="mean",
        description="how the views' estimates combine: their mean, their sum, or one view per step in turn",
    )
    n: Count = 1

    @property
    def view_names(self) -> list[str]:
        """The views, one per prompt: `views`, or ["identity", view]."""
        return list(self.views) if self.views is not None else ["identity", self.view]

    def given_args(self) -> list[tuple[str, dict[str, Any]]]:
        """Each view with the arguments the request gives it ({} for none)."""
        given = self.view_args or [None] * len(self.view_names)
        return [(name, args or {}) for name, args in zip(self.view_names, given, strict=True)]

    def view_params(self) -> list[dict[str, Any]]:
        """Each view's arguments with their defaults (patch_size None: a 4 x 4 grid), as models/views.py takes them."""
        return [VIEW_ARGS.get(name, NoArgs).model_validate(args).model_dump() for name, args in self.given_args()]


def _check_views(req: AnagramJob) -> None:
    count = len(req.prompts)
    if req.views is not None and "view" in req.model_fields_set:
        raise InvalidRequest.field(["view"], "give `views` or its shorthand `view`, not both")
    if req.views is None and count != 2:
        raise InvalidRequest.field(["views"], f"{count} prompts need `views`, one view per prompt")
    if req.views is not None and len(req.views) != count:
        raise InvalidRequest.field(["views"], f"must name one view per prompt: {count}, not {len(req.views)}")
    if req.view_args is not None and len(req.view_args) != count:
        raise InvalidRequest.field(["view_args"], f"must hold one entry per view: {count}, not {len(req.view_args)}")


def _check_args(k: int, name: str, given: dict[str, Any], side: int) -> None:
    try:
        args = VIEW_ARGS.get(name, NoArgs).model_validate(given)
    except ValidationError as e:
        error = e.errors()[0]
        rule = "takes no arguments" if name not in VIEW_ARGS else error["msg"]
        raise InvalidRequest.field(["view_args", k, *error["loc"]], f"{name}: {rule}") from None
    size = getattr(args, "patch_size", None)
    if size is not None and side % size:
        raise InvalidRequest.field(["view_args", k, "patch_size"], f"{name}: must divide the image side, {side}")
    if isinstance(args, PatchArgs) and size is None and side % TILES:
        raise InvalidRequest.field(["view_args", k], f"{name}: a side of {side} needs a patch_size that divides it")


def check(req: AnagramJob, spec: ModelSpec, door: Door) -> None:
    """One view per prompt, `view_args` aligned with them, each view's arguments valid for the model's images."""
    _check_views(req)
    for k, (name, args) in enumerate(req.given_args()):
        _check_args(k, name, args, spec.image_size)


KIND = Kind("anagram", AnagramJob, {"anagram": frozenset({"classes"})}, check=check)
