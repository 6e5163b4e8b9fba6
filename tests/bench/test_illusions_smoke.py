"""Smoke test of bench/illusions.py on the shipped mnist-ddpm at tiny sizes: the staged search screens every ordered
pair, scores the best at fresh seeds, builds triples from the pairs' screens; and an anagram's pixels depend on its
seed alone, not on its batch-mates (which the search's per-pair scores rely on)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tqdm import tqdm

from bench.illusions import SCORE_SEED, parse_args, sample, subject_of
from core.catalog import builtin_models
from core.settings import Settings
from models.views import VIEWS
from tests.bench.test_bench_smoke import one_thread, run_bench  # noqa: F401 (one_thread: an autouse fixture)
from tests.helpers import decode


def test_the_illusions_benchmark_screens_every_pair_and_scores_the_best(tmp_path: Path) -> None:
    out_json = tmp_path / "illusions.json"
    args = ["--views", "flip,negate", "--triples", "flip+rotate_180", "--steps", "2", "--screen-seeds", "2"]
    args += ["--top", "2", "--seeds", "3", "--triple-screen", "4", "--threads", "1", "--json", str(out_json)]
    args += ["--grids", str(tmp_path / "grids")]
    out = run_bench("bench/illusions.py", *args, timeout=240)
    rows = [line.split() for line in out.splitlines() if line.startswith("mnist-ddpm ")]
    assert [row[1] for row in rows] == ["identity+flip", "identity+negate", "identity+flip+rotate_180"], out
    assert all(row[-1] in ("ok", "MISSED") for row in rows), out
    record = json.loads(out_json.read_text())
    assert record["models"]["mnist-ddpm"]["settings"]["sampler"] == "ddim"
    pairs, (triple,) = record["models"]["mnist-ddpm"]["pairs"], record["models"]["mnist-ddpm"]["triples"]
    for search in pairs:
        screened = [tuple(s["prompts"]) for s in search["screened"]]
        assert sorted(screened) == [(a, b) for a in range(10) for b in range(10) if a != b]
        assert {s["seeds"] for s in search["screened"]} == {2}
        keys = [(-s["score"], -s["soft"]) for s in search["screened"]]
        assert keys == sorted(keys)  # best first
        scored = search["scored"]
        assert {tuple(s["prompts"]) for s in scored} == set(screened[:2]) and {s["seeds"] for s in scored} == {3}
        assert search["best"] == scored[0] and scored[0]["score"] >= scored[1]["score"]
    assert triple["views"] == ["identity", "flip", "rotate_180"] and len(triple["screened"]) == 4
    assert all(len(set(s["prompts"])) == 3 for s in triple["screened"])
    # A negated MNIST canvas is below 0 everywhere: its PNG is black, which reads as nothing, so no pair holds.
    assert all(s["score"] == 0 for s in pairs[1]["screened"] + pairs[1]["scored"])
    best = "".join(map(str, triple["best"]["prompts"]))
    grid = decode((tmp_path / "grids" / f"mnist-ddpm-identity+flip+rotate_180-{best}.png").read_bytes())
    assert grid.shape == (3 * 30 + 2, 3 * 30 + 2)  # a row per view, a column per scored seed, 2-pixel padding
    canvas, flipped = grid[2:30, 2:30], grid[32:60, 2:30]  # the first seed upright, and as view_1.png shows it
    assert canvas.max() > 0.5 and np.array_equal(flipped, np.flipud(canvas))


def test_an_anagram_depends_on_its_seed_not_its_batch() -> None:
    subject = subject_of(builtin_models(Settings())["mnist-ddpm"], parse_args(["--steps", "2"]))
    views = (VIEWS["identity"], VIEWS["rotate_180"])
    jobs = [((6, 9), SCORE_SEED), ((1, 7), SCORE_SEED), ((6, 9), SCORE_SEED + 1)]
    with tqdm(disable=True) as bar:
        together = sample(subject, views, jobs, 3, bar)
        alone = torch.cat([sample(subject, views, [job], 1, bar) for job in jobs])
    assert together.shape == (3, 1, 28, 28)
    assert torch.allclose(together, alone, atol=1 / 255 + 1e-6)  # float rounding may cross a uint8 step
    assert (together[0] - together[2]).abs().max() > 0.2  # another seed: another image
    assert (together[0] - together[1]).abs().max() > 0.2  # other prompts: another image


@pytest.mark.parametrize("bad", [["--views", "identity"], ["--triples", "flip"], ["--top", "0"]])
def test_the_illusions_benchmark_refuses_bad_options(bad: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(bad)
