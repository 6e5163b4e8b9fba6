"""Every view is a fixed permutation of pixel positions (with signs only for `negate`): exactly undone by its
inverse, a signed one-hot for a one-hot, the same sum of squares, Gaussian noise in and Gaussian noise out."""

import pytest
import torch

from models.views import PARAMS, VIEWS, make_view

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


# Views with arguments (`view_args`), given at a base side and applied at multiples of it (stage II of IF).
ARGUED = [
    ("patch_permute", {"patch_size": 8, "seed": 1}),
    ("patch_permute", {"patch_size": 2, "seed": 0}),
    ("jigsaw", {"patch_size": 4, "seed": 2}),
    ("pixel_permute", {"seed": 5}),
    ("pixel_permute", {}),
    ("skew", {"factor": -2.5}),
    ("inner_circle", {"radius": 0.5}),
    ("inner_circle", {"radius": 0.1}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in args.items())}" for name, args in ARGUED]


@pytest.mark.parametrize("side", [16, 32, 64])
@pytest.mark.parametrize(("name", "args"), ARGUED, ids=IDS)
def test_an_argued_view_is_undone_by_its_inverse_at_its_base_and_its_multiples(name, args, side):
    view, x = make_view(name, args, 16), torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(7))
    assert torch.equal(view.inverse(view.view(x)), x) and torch.equal(view.view(view.inverse(x)), x)
    assert not torch.equal(view.view(x), x)


@pytest.mark.parametrize(("name", "args"), ARGUED, ids=IDS)
def test_an_argued_view_is_a_permutation_that_keeps_gaussian_noise_gaussian(name, args):
    view = make_view(name, args, 16)
    basis = torch.eye(32 * 32).view(32 * 32, 1, 32, 32)  # at stage II's side, twice the base
    out = view.view(basis).flatten(1)
    assert torch.equal(out.sum(0), torch.ones(32 * 32)) and torch.equal(out.sum(1), torch.ones(32 * 32))
    noise = torch.randn(10_000, 1, 16, 16, generator=torch.Generator().manual_seed(8))
    moved = view.view(noise).flatten(1)
    assert moved.mean(0).abs().max() < 0.05 and (moved.std(0) - 1).abs().max() < 0.05
    corr = torch.corrcoef(moved.T)
    assert (corr - torch.diag(torch.diag(corr))).abs().max() < 0.06


@pytest.mark.parametrize("side", [28, 64])
@pytest.mark.parametrize("name", sorted(VIEWS))
def test_no_arguments_at_the_images_own_side_is_the_default_view(name, side):
    x = torch.randn(1, 2, side, side, generator=torch.Generator().manual_seed(9))
    for args in ({}, None, dict.fromkeys(PARAMS.get(name, ()))):  # None for an argument: its default
        assert torch.equal(make_view(name, args, side).view(x), VIEWS[name].view(x))


@pytest.mark.parametrize(("base", "factor"), [(16, 2), (16, 4), (8, 4)])
def test_a_blown_up_pixel_permutation_moves_the_base_permutations_blocks_whole(base, factor):
    """At f x base, pixel_permute moves f x f blocks as the base permutation moves pixels (as the paper derives its
    256 px permutation from the 64 px one): block b of the output is block source[b] of the input, untouched."""
    seed = 4
    small = make_view("pixel_permute", {"seed": seed}, base)
    source = small.view(torch.arange(base * base).double().view(1, 1, base, base)).flatten().long()
    side = base * factor
    x = torch.randn(3, side, side, generator=torch.Generator().manual_seed(10))
    out = small.view(x[None])[0]

    def blocks(image: torch.Tensor) -> torch.Tensor:  # (C, side, side) -> (base * base, C, f, f), row by row
        return image.view(3, base, factor, base, factor).permute(1, 3, 0, 2, 4).reshape(base * base, 3, factor, factor)

    assert torch.equal(blocks(out), blocks(x)[source])
    y = torch.randn(1, 3, base, base, generator=torch.Generator().manual_seed(11))
    up = y.repeat_interleave(factor, -2).repeat_interleave(factor, -1)  # a nearest-neighbour blow-up
    assert torch.equal(small.view(up), small.view(y).repeat_interleave(factor, -2).repeat_interleave(factor, -1))


@pytest.mark.parametrize("name", ["patch_permute", "jigsaw"])
def test_a_tiled_view_keeps_its_grid_of_patches_at_a_multiple_of_its_base(name):
    """patch_size 4 at 16 px is a 4 x 4 grid; at 32 px the same grid, patches of 8: the view patch_size 8 makes."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(12))
    at_base = make_view(name, {"patch_size": 4, "seed": 3}, 16)
    assert torch.equal(at_base.view(x), make_view(name, {"patch_size": 8, "seed": 3}, 32).view(x))
    assert not torch.equal(at_base.view(x), make_view(name, {"patch_size": 4, "seed": 3}, 32).view(x))


@pytest.mark.parametrize(
    ("name", "one", "other"),
    [
        ("patch_permute", {"patch_size": 4}, {"patch_size": 8}),
        ("patch_permute", {"seed": 0}, {"seed": 1}),
        ("jigsaw", {"patch_size": 2}, {"patch_size": 4}),
        ("jigsaw", {"seed": 0}, {"seed": 1}),
        ("pixel_permute", {"seed": 0}, {"seed": 1}),
        ("skew", {"factor": 1.5}, {"factor": 0.5}),
        ("inner_circle", {"radius": 1 / 3}, {"radius": 0.25}),
    ],
)
def test_each_argument_changes_the_permutation(name, one, other):
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(13))
    assert not torch.equal(make_view(name, one, 16).view(x), make_view(name, other, 16).view(x))


@pytest.mark.parametrize(
    ("name", "args", "base", "says"),
    [
        ("patch_permute", {"patch_size": 5}, 16, "does not divide"),
        ("jigsaw", {"patch_size": 3}, 64, "does not divide"),
        ("pixel_permute", {"patch_size": 2}, 16, "no argument"),
        ("flip", {"seed": 1}, 16, "no argument"),
        ("spin", {}, 16, "no view"),
    ],
)
def test_bad_arguments_are_refused_when_the_view_is_made(name, args, base, says):
    with pytest.raises(ValueError, match=says):
        make_view(name, args, base)


def test_a_view_made_for_one_base_refuses_a_side_that_is_not_a_multiple_of_it():
    view = make_view("pixel_permute", {"seed": 1}, 16)
    with pytest.raises(ValueError, match="multiples of 16"):
        view.view(torch.zeros(1, 1, 24, 24))


def test_a_view_made_twice_with_the_same_arguments_is_the_same_object():
    """So that what is cached per view (models/animate.py) is reused from job to job."""
    assert make_view("jigsaw", {"seed": 1}, 64) is make_view("jigsaw", {"seed": 1, "patch_size": None}, 64)
    assert make_view("jigsaw", {"seed": 1}, 64) is not make_view("jigsaw", {"seed": 2}, 64)
