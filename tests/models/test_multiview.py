"""MultiView with three and four views and each reduction, on the toy predictor and on a tiny IF stage II: each view's
guided estimate brought back by its inverse, then averaged, summed, or taken in turn; the low-resolution condition,
viewed per view, lines up with the viewed copies of x."""

import pytest
import torch

from models.deepfloyd import LowRes, if_predictor
from models.guidance import CFG, MultiView
from models.views import VIEWS, View, make_view
from tests.models.test_deepfloyd import stage_two_unet
from tests.models.test_sampling import toy_predict
from tests.tiny_if import STAGE1_SIZE, STAGE2_SIZE

THREE = ("identity", "rotate_cw", "pixel_permute")
FOUR = ("identity", "flip", "jigsaw", "negate")
SCALE = 5.0


def views_of(names: tuple[str, ...]) -> tuple[View, ...]:
    return tuple(VIEWS[name] for name in names)


def per_view(views: tuple[View, ...], conds, uncond, x, t) -> list[torch.Tensor]:
    """Each view's estimate on its own: view^-1(CFG(view(x), its prompt)), one pass per view."""
    return [v.inverse(CFG(c, uncond, SCALE)(toy_predict, v.view(x), t)) for v, c in zip(views, conds, strict=True)]


def setup(k: int):
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(k))
    conds = tuple(torch.tensor([i, i + 1]) for i in range(k))
    return x, conds, torch.tensor([-1, -1])


@pytest.mark.parametrize("names", [THREE, FOUR], ids=["3 views", "4 views"])
def test_mean_and_sum_combine_every_views_estimate(names):
    views = views_of(names)
    x, conds, uncond = setup(len(views))
    t = torch.full((2,), 0.4)
    each = per_view(views, conds, uncond, x, t)
    total = torch.stack(each).sum(0)
    mean = MultiView(conds, uncond, views, "mean", SCALE)(toy_predict, x, t)
    summed = MultiView(conds, uncond, views, "sum", SCALE)(toy_predict, x, t)
    torch.testing.assert_close(mean, total / len(views))
    torch.testing.assert_close(summed, total)
    assert not torch.allclose(mean, each[0], atol=1e-3)  # every view counts


@pytest.mark.parametrize("names", [THREE, FOUR], ids=["3 views", "4 views"])
def test_alternate_takes_view_i_mod_k_at_the_ith_time_and_still_evaluates_every_view(names):
    views = views_of(names)
    x, conds, uncond = setup(len(views))
    model_times = (0.9, 0.7, 0.5, 0.3, 0.1)
    rows = []

    def counting(x, t, cond):
        rows.append((len(x), len(cond)))
        return toy_predict(x, t, cond)

    rule = MultiView(conds, uncond, views, "alternate", SCALE, model_times)
    for i, time in enumerate(model_times):
        t = torch.full((2,), time)
        expected = per_view(views, conds, uncond, x, t)[i % len(views)]
        torch.testing.assert_close(rule(counting, x, t), expected)
    assert rows == [(2 * len(views), 4 * len(views))] * len(model_times)  # K viewed copies, 2 K conditions


def test_alternate_without_the_runs_times_is_refused():
    x, conds, uncond = setup(3)
    with pytest.raises(ValueError, match="model_times"):
        MultiView(conds, uncond, views_of(THREE), "alternate", SCALE)(toy_predict, x, torch.full((2,), 0.4))


@pytest.mark.parametrize("reduction", ["mean", "sum", "alternate"])
def test_stage_two_with_its_condition_viewed_per_view_is_each_view_run_alone(reduction):
    """Stage II's UNet sees x beside its low-resolution image, row for row: with the image viewed as MultiView views
    x, each view's estimate is the one a pass on that view alone (its image and its condition viewed) gives."""
    torch.manual_seed(0)  # test-only weights
    unet = stage_two_unet()
    names, args = ("identity", "pixel_permute", "negate"), ({}, {"seed": 2}, {})
    views = tuple(make_view(name, a, STAGE1_SIZE) for name, a in zip(names, args, strict=True))
    g = torch.Generator().manual_seed(1)
    x, image = (torch.randn(1, 3, STAGE2_SIZE, STAGE2_SIZE, generator=g) for _ in range(2))
    conds, uncond = tuple(torch.randn(1, 7, 32, generator=g) for _ in views), torch.randn(1, 7, 32, generator=g)
    t = torch.full((1,), 0.3)
    viewed = LowRes(torch.cat([v.view(image) for v in views]), 250)
    rule = MultiView(conds, uncond, views, reduction, 4.0, (0.5, 0.3, 0.1))
    with torch.inference_mode():
        out = rule(if_predictor(unet, 1000, viewed), x, t)
        alone = [
            v.inverse(CFG(c, uncond, 4.0)(if_predictor(unet, 1000, LowRes(v.view(image), 250)), v.view(x), t)[:, :3])
            for v, c in zip(views, conds, strict=True)
        ]
    expected = {"mean": sum(alone) / 3, "sum": sum(alone), "alternate": alone[1]}[reduction]  # t = 0.3: turn 1
    assert out.shape == (1, 6, STAGE2_SIZE, STAGE2_SIZE)
    torch.testing.assert_close(out[:, :3], expected, rtol=1e-4, atol=1e-4)
