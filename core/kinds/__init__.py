"""The job kinds, in one place: each kind is one module of this package that declares its request schema, its rules
at the door and the capabilities models run it under (a `Kind`, core/kinds/base.py); `BUILTIN` lists them. The
worker's function for each capability is registered on the worker's side (worker/runners.py).

Adding a kind (docs/architecture.md, "Adding a job kind"): a module here with its `KIND` and a line in `BUILTIN`; a
function in worker/ and a line in worker/runners.py. A deployment adds its own with `EXTRA_KINDS` (packages with a
`kind` module holding `KIND` and a `runner` module holding `RUNNERS`), loaded when this package is imported.
"""

import importlib
from functools import cache
from typing import Annotated, Any, Union, get_args

from pydantic import Field, TypeAdapter

from core.kinds import anagram, denoise, hybrid, img2img, inpaint, noise, sample, train, upsample
from core.kinds.base import Family, JobBase, Kind
from core.settings import get_settings

BUILTIN: tuple[Kind[Any], ...] = (
    noise.KIND,
    denoise.KIND,
    sample.KIND,
    img2img.KIND,
    inpaint.KIND,
    anagram.KIND,
    hybrid.KIND,
    upsample.KIND,
    train.KIND,
)
_registry: dict[str, Kind[Any]] = {}


def register(kind: Kind[Any]) -> None:
    """Adds a kind; its name must be new and its schema's `kind` field must be that name."""
    if kind.name in _registry:
        raise ValueError(f"job kind {kind.name!r} is registered already")
    if get_args(kind.schema.model_fields["kind"].annotation) != (kind.name,):
        raise ValueError(f"{kind.schema.__name__}.kind must be Literal[{kind.name!r}]")
    _registry[kind.name] = kind
    _adapter.cache_clear()


def registered() -> dict[str, Kind[Any]]:
    return dict(_registry)


def kind_of(req: JobBase) -> Kind[Any]:
    return _registry[req.kind]


def names() -> tuple[str, ...]:
    return tuple(_registry)


def capabilities(*families: Family) -> frozenset[str]:
    """The capabilities that models of any of `families` run."""
    wanted = set(families)
    return frozenset(c for k in _registry.values() for c, runs_on in k.capabilities.items() if runs_on & wanted)


def request_type() -> Any:
    """Every registered kind's request as one union, discriminated on `kind` (the body of POST /v1/jobs)."""
    schemas = tuple(k.schema for k in _registry.values())
    return Annotated[Union[schemas], Field(discriminator="kind")]  # noqa: UP007 (a union built at run time)


@cache
def _adapter() -> TypeAdapter[JobBase]:
    return TypeAdapter(request_type())


def parse_job(data: object) -> JobBase:
    """Validates a job payload: at the door, and again in the worker for what it dequeues."""
    return _adapter().validate_python(data)


def examples() -> dict[str, dict[str, Any]]:
    """Requests the shipped models run in seconds: the OpenAPI schema's examples (and schemathesis's first cases)."""
    return {k.name: k.example for k in _registry.values() if k.example is not None}


def load_extra(packages: list[str]) -> None:
    """Registers each package's `kind` module's `KIND` (EXTRA_KINDS)."""
    for package in packages:
        register(importlib.import_module(f"{package}.kind").KIND)


for _kind in BUILTIN:
    register(_kind)
load_extra(get_settings().extra_kind_packages)
