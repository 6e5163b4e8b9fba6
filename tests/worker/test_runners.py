"""The two sides of the job-kind registry agree: every capability a kind declares (core/kinds/) has the worker's
function for it (worker/runners.py), and the worker runs nothing no kind declares."""

import pytest

from core import kinds
from core.kinds.base import Kind
from core.kinds.noise import NoiseJob
from worker.runners import BUILTIN


def test_every_declared_capability_has_a_runner_and_no_runner_is_orphaned():
    declared = {c for kind in kinds.BUILTIN for c in kind.capabilities}
    assert declared == set(BUILTIN)


def test_a_kind_name_is_registered_once_and_matches_its_schema():
    with pytest.raises(ValueError, match="registered already"):
        kinds.register(Kind("noise", NoiseJob, {"noise": frozenset({"any"})}))
    with pytest.raises(ValueError, match="must be Literal"):
        kinds.register(Kind("noise-again", NoiseJob, {"noise-again": frozenset({"any"})}))
    assert "noise-again" not in kinds.names()


def test_every_example_parses_as_its_kind():
    for name, example in kinds.examples().items():
        assert kinds.parse_job(example).kind == name
