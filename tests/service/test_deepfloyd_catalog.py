"""`deepfloyd-if` as the API describes it from its stages' configs alone (no torch in the API), and the queues `up`
serves accordingly."""

from pathlib import Path

import pytest

from core.catalog import DIFFUSION, TEXT_TO_IMAGE, deepfloyd
from core.settings import Settings
from diffusion_jobs.supervisor import queues_to_serve
from tests.tiny_if import STAGE1_SIZE, STAGE2_SIZE, build


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build(tmp_path_factory.mktemp("deepfloyd"))


def test_unset_it_runs_nothing_and_says_why() -> None:
    spec = deepfloyd(Settings())
    assert not spec.available and not spec.capabilities and "DEEPFLOYD_STAGE1 is not set" in str(spec.reason)
    assert queues_to_serve(Settings()) == ["mnist", "train"]


def test_both_stages_give_sizes_schedule_and_every_kind(stages: tuple[Path, Path]) -> None:
    settings = Settings(deepfloyd_stage1=str(stages[0]), deepfloyd_stage2=str(stages[1]))
    spec = deepfloyd(settings)
    assert spec.available and spec.capabilities == TEXT_TO_IMAGE and spec.text
    assert spec.image_size == STAGE1_SIZE and spec.info["stage2"]["image_size"] == STAGE2_SIZE
    assert spec.schedule["beta_schedule"] == "squaredcos_cap_v2" and spec.schedule["variance"] == "learned_range"
    assert queues_to_serve(settings) == ["deepfloyd", "mnist", "train"]


def test_without_stage_two_there_is_no_upsample(stages: tuple[Path, Path], tmp_path: Path) -> None:
    alone = deepfloyd(Settings(deepfloyd_stage1=str(stages[0])))
    assert alone.capabilities == DIFFUSION and alone.info["stage2"]["reason"] == "DEEPFLOYD_STAGE2 is not set"
    missing = deepfloyd(Settings(deepfloyd_stage1=str(stages[0]), deepfloyd_stage2=str(tmp_path / "nowhere")))
    assert missing.capabilities == DIFFUSION and "no such folder" in missing.info["stage2"]["reason"]


@pytest.mark.parametrize(
    ("source", "says"),
    [("/no/such/folder", "no such folder"), ("some-org/not-cached", "not in the local Hugging Face cache")],
)
def test_a_stage_one_that_is_not_here_is_unavailable_with_the_reason(source: str, says: str) -> None:
    spec = deepfloyd(Settings(deepfloyd_stage1=source))
    assert not spec.available and not spec.capabilities and says in str(spec.reason)


def test_an_empty_setting_is_unset() -> None:
    settings = Settings(deepfloyd_stage1="", deepfloyd_variant="", deepfloyd_prompt_embeds="")
    assert settings.deepfloyd_stage1 is None and settings.deepfloyd_variant is None
    assert settings.deepfloyd_prompt_embeds is None
