"""scripts/gallery.py against a real stack (tiny random checkpoints): the illusion figures of docs/gallery.md are
made from jobs run through HTTP, and every request is recorded."""

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.e2e.test_generation_kinds import stack  # noqa: F401 (its stack: tiny random checkpoints)
from tests.helpers import TEST_KEYS, Stack

ROOT = Path(__file__).resolve().parents[2]


def test_the_illusion_figures_are_made_from_real_jobs(stack: Stack, tmp_path: Path) -> None:  # noqa: F811
    figures = ["three-views", "factorized"]
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/gallery.py"),
            "--url",
            stack.url,
            "--key",
            TEST_KEYS[0],
            "--out",
            str(tmp_path),
            "--only",
            *figures,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    sheet = Image.open(tmp_path / "three-views.png")
    assert sheet.format == "PNG" and sheet.width > sheet.height  # a row of three views per triple
    gifs = sorted(p.name for p in tmp_path.glob("three-views-*.gif"))
    assert gifs == [
        "three-views-flip-rotate_cw.gif",
        "three-views-rotate_180-transpose.gif",
        "three-views-rotate_cw-rotate_ccw.gif",
    ]
    assert all(Image.open(tmp_path / g).n_frames > 1 for g in gifs)
    assert Image.open(tmp_path / "factorized.png").format == "PNG"
    recorded = json.loads((tmp_path / "requests.json").read_text())
    assert [len(recorded[f]) for f in figures] == [3, 7]
    assert [r["request"].get("motion_angle") for r in recorded["factorized"]].count(45) == 1
    assert {r["request"]["views"][0] for r in recorded["three-views"]} == {"identity"}
    assert sum("image" in r["request"] for r in recorded["factorized"]) == 2
    assert all(len(r["job_id"]) > 8 for f in figures for r in recorded[f])
