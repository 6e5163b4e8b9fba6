"""The `measured` fixture: a reliability test records what it measured (docs/operations/reliability.md cites the
figures) in var/reliability/measured.json, one entry per test, rewritten by each run of that test."""

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

OUT = Path(os.environ.get("RELIABILITY_OUT", "var/reliability/measured.json"))


@pytest.fixture
def measured(request: pytest.FixtureRequest) -> Callable[..., None]:
    def record(**figures: float | int | str) -> None:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        found = json.loads(OUT.read_text()) if OUT.exists() else {}
        found[request.node.name] = {**figures, "at": datetime.now(UTC).isoformat(timespec="seconds")}
        OUT.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")

    return record
