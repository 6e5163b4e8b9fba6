"""`checker`: a checkerboard of `squares` squares a side at the model's size; the API's side of the kind."""

from typing import Annotated, Literal

from pydantic import Field

from core.errors import InvalidRequest
from core.kinds.base import Door, JobBase, Kind
from core.model_spec import ModelSpec


class CheckerJob(JobBase):
    """A checkerboard, light square first (top left)."""

    kind: Literal["checker"]
    squares: Annotated[int, Field(ge=1, le=64)] = 2


def check(req: CheckerJob, spec: ModelSpec, door: Door) -> None:
    if spec.image_size % req.squares:
        raise InvalidRequest.field(["squares"], f"must divide {spec.id}'s image size, {spec.image_size}")


KIND = Kind("checker", CheckerJob, {"checker": frozenset({"any"})}, check=check)
