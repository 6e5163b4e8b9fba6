"""Which weights `deepfloyd-if` loads (worker/deepfloyd.py): DEEPFLOYD_VARIANT's files where a folder or a hub
snapshot has them, else the plain files with one log line per stage, on a tiny random IF saved both ways and loaded
through the worker's own `load_if` (diffusers' and transformers' `from_pretrained`)."""

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch
from huggingface_hub import constants
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from core.catalog import deepfloyd
from core.settings import Settings
from tests.tiny_if import PROMPTS, build
from worker.deepfloyd import IFModel, load_if

CPU = torch.device("cpu")
UNET = "unet/diffusion_pytorch_model"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Both stages saved without a variant, as a local fp32 folder is."""
    return build(tmp_path_factory.mktemp("plain"), variant=None)


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, plain: tuple[Path, Path]) -> tuple[Path, Path]:
    """The plain files and, beside them, fp16 files holding other numbers (each weight + 0.01)."""
    root = tmp_path_factory.mktemp("both")
    stages = (root / "IF-I", root / "IF-II")
    for source, target in zip(build(tmp_path_factory.mktemp("fp16")), stages, strict=True):
        shutil.copytree(plain[stages.index(target)], target)
        for path in source.glob("*/*.fp16.safetensors"):
            with safe_open(str(path), "pt") as f:
                metadata = f.metadata()
            moved = {name: weight + 0.01 for name, weight in load_file(path).items()}
            save_file(moved, target / path.relative_to(source), metadata=metadata)
    return stages


@pytest.fixture
def conn(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def load(stages: tuple[Path, Path] | tuple[str, str], conn: redis.Redis, **settings: object) -> IFModel:
    config = Settings(deepfloyd_stage1=str(stages[0]), deepfloyd_stage2=str(stages[1]), **settings)  # type: ignore[arg-type]
    spec = deepfloyd(config)
    assert spec.available, spec.reason  # the API reads configs only: a folder of either kind is listed
    return load_if(spec, config, CPU, conn)


def same_weights(model: IFModel, stages: tuple[Path, Path], file: str) -> bool:
    """Whether both stages' UNets hold the numbers of `file` (`UNET` + ".safetensors" or ".fp16.safetensors")."""
    assert model.stage2 is not None, model.stage2_reason
    units = [(model.stage1.unet, stages[0]), (model.stage2.unet, stages[1])]
    return all(
        torch.equal(unet.state_dict()[name], weight)
        for unet, folder in units
        for name, weight in load_file(folder / file).items()
    )


def fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "worker.deepfloyd" and r.levelno == logging.WARNING]


def test_a_folder_without_the_variant_loads_its_plain_weights_and_says_so_once_per_stage(
    plain: tuple[Path, Path], conn: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "worker.deepfloyd")
    model = load(plain, conn)  # DEEPFLOYD_VARIANT's default, fp16
    assert same_weights(model, plain, f"{UNET}.safetensors")
    assert fallbacks(caplog) == [
        f"stage I: no fp16 weights in {plain[0]}, loading its plain weights",
        f"stage II: no fp16 weights in {plain[1]}, loading its plain weights",
    ]
    assert model.prompts.embed(PROMPTS[0]).shape[0] == 1  # the text encoder too, with no second line
    assert len(fallbacks(caplog)) == 2


def test_a_folder_with_the_variant_loads_it_and_an_empty_variant_the_plain_weights(
    both: tuple[Path, Path], conn: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "worker.deepfloyd")
    fp16 = load(both, conn)
    assert same_weights(fp16, both, f"{UNET}.fp16.safetensors")
    assert not same_weights(fp16, both, f"{UNET}.safetensors")
    unvaried = load(both, conn, deepfloyd_variant="")
    assert same_weights(unvaried, both, f"{UNET}.safetensors")
    assert not fallbacks(caplog)
    encoders = [model.prompts.load_encoder()(PROMPTS[0]) for model in (fp16, unvaried)]  # type: ignore[attr-defined]
    assert not torch.equal(*encoders)  # the text encoder's files chosen the same way
    assert not fallbacks(caplog)


def hub_cache(root: Path, repo_id: str, folder: Path) -> None:
    """A Hugging Face cache holding `folder` as `repo_id`'s main revision, as `hf download` leaves it."""
    commit = "0" * 40
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


def test_a_hub_snapshot_without_the_variant_loads_its_plain_weights(
    plain: tuple[Path, Path],
    conn: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "worker.deepfloyd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # where huggingface_hub looks, read per call
    repos = ("test-org/fp32-if-i", "test-org/fp32-if-ii")
    for repo, folder in zip(repos, plain, strict=True):
        hub_cache(tmp_path, repo, folder)
    model = load(repos, conn)
    snapshots = [tmp_path / f"models--{r.replace('/', '--')}" / "snapshots" / ("0" * 40) for r in repos]
    assert same_weights(model, (snapshots[0], snapshots[1]), f"{UNET}.safetensors")
    assert [m.split(":")[0] for m in fallbacks(caplog)] == ["stage I", "stage II"]
    assert all(str(s) in m for s, m in zip(snapshots, fallbacks(caplog), strict=True))
