"""Every view is a fixed permutation of pixel positions (with signs only for `negate`): exactly undone by its
inverse, a signed one-hot for a one-hot, the same sum of squares, Gaussian noise in and Gaussian noise out."""

import pytest
import torch

from models.views import VIEWS

NEW = ["rotate_cw", "rotate_ccw", "transpose", "skew", "patch_permute", "pixel_permute", "jigsaw"]
NEW += ["inner_circle", "square_hinge"]
SHAPES = [(2, 3, 64, 64), (2, 1, 28, 28)]


def test_every_new_view_is_registered_under_its_name() -> None:
    assert set(NEW) <= set(VIEWS) and all(VIEWS[name].name == name for name in VIEWS)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(VIEWS))
def test_the_inverse_undoes_the_view_both_ways_exactly(name: str, shape: tuple[int, ...]) -> None:
    view, x = VIEWS[name], torch.randn(shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(view.inverse(view.view(x)), x) and torch.equal(view.view(view.inverse(x)), x)


@pytest.mark.parametrize("name", NEW)
def test_the_new_views_move_pixels_and_work_on_one_image_as_the_worker_saves_it(name: str) -> None:
    view, x = VIEWS[name], torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(view.view(x), x)
    assert torch.equal(view.view(x), view.view(x[None])[0])  # (C, H, W) as run_anagram's view_{i}.png


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_a_view_is_the_same_every_time(name: str) -> None:
    x = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    assert torch.equal(VIEWS[name].view(x), VIEWS[name].view(x.clone()))


@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("name", sorted(VIEWS))
def test_a_view_is_a_permutation_with_signs(name: str, size: int) -> None:
    """One-hot images in, signed one-hots out, each position hit once: the view's matrix is a signed permutation."""
    view = VIEWS[name]
    basis = torch.eye(size * size).view(size * size, 1, size, size)
    out = view.view(basis).flatten(1)
    assert torch.equal(out.abs().sum(1), torch.ones(size * size))
    assert torch.equal(out.abs().sum(0), torch.ones(size * size))
    assert set(out.unique().tolist()) <= {-1.0, 0.0, 1.0}
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(view.view(x).square().sum(), x.square().sum())


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_gaussian_noise_stays_standard_gaussian(name: str) -> None:
    """10,000 samples of 28 x 28 noise: each output pixel of mean ~0 and std ~1, pixels pairwise uncorrelated."""
    noise = torch.randn(10_000, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    out = VIEWS[name].view(noise).flatten(1)
    assert out.mean(0).abs().max() < 0.05  # 5 standard errors of a mean of 10,000
    assert (out.std(0) - 1).abs().max() < 0.05
    corr = torch.corrcoef(out.T)
    off = corr - torch.diag(torch.diag(corr))
    assert off.abs().max() < 0.06  # ~6 standard errors: 300,000 pairs


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(VIEWS))
def test_inverse_map_moves_a_map_like_the_inverse_but_keeps_its_sign(name: str, shape: tuple[int, ...]) -> None:
    """A non-negative map (IF's variance) comes back non-negative, each value where `inverse` puts it."""
    view, m = VIEWS[name], torch.randn(shape, generator=torch.Generator().manual_seed(6)).abs()
    back = view.inverse_map(m)
    assert (back >= 0).all() and torch.equal(back, view.inverse(m).abs())
