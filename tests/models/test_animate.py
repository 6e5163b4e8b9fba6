"""The anagram animation: views held, moves between them that end exactly on the next view, turns along arcs,
negation through the empty value, for every view, any batch and 1 or 3 channels."""

import math
from collections.abc import Callable

import pytest
import torch

from models.animate import animation_frames, path, positions, transition
from models.views import VIEWS, View

ID = VIEWS["identity"]
ToUnit = Callable[[torch.Tensor], torch.Tensor]


def signed(x: torch.Tensor) -> torch.Tensor:  # a [-1, 1] model's to_unit
    return (x + 1) / 2


def image(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (3, 1, 28, 28)])
@pytest.mark.parametrize("names", [["identity", "rotate_cw", "negate"], ["flip", "jigsaw"], ["skew"]])
def test_frames_hold_each_view_then_move_and_loop_back_to_the_first(names: list[str], shape: tuple[int, ...]) -> None:
    x, views, steps, hold = image(shape), [VIEWS[n] for n in names], 6, 3
    frames = animation_frames(x, views, signed, steps=steps, hold=hold)
    assert len(frames) == len(views) * (hold + steps)
    assert all(f.shape == x.shape and f.min() >= 0 and f.max() <= 1 for f in frames)
    close(frames[0], signed(views[0].view(x)))
    close(frames[-1], signed(views[0].view(x)))
    for k, view in enumerate(views):
        for f in frames[k * (hold + steps) : k * (hold + steps) + hold]:
            close(f, signed(view.view(x)))
        if k + 1 < len(views):  # the move's last frame is the next view, splatted
            close(frames[(k + 1) * (hold + steps) - 1], signed(views[k + 1].view(x)))


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_every_view_animates_and_the_move_ends_exactly_on_it(name: str) -> None:
    x, view = image((2, 3, 64, 64), 1), VIEWS[name]
    close(transition(x, ID, view, 1.0), view.view(x))
    close(transition(x, view, ID, 1.0), x)
    close(transition(x, view, ID, 0.0), view.view(x))
    frames = animation_frames(x, [ID, view], signed, steps=4, hold=1)
    assert len(frames) == 10 and all(f.min() >= 0 and f.max() <= 1 for f in frames)
    if name != "identity":
        assert not torch.allclose(frames[2], frames[0]) and not torch.allclose(frames[2], frames[5])


def test_a_batch_animates_as_its_images_one_by_one() -> None:
    x, views = image((3, 3, 32, 32), 2), [ID, VIEWS["inner_circle"], VIEWS["transpose"]]
    together = animation_frames(x, views, signed, steps=5, hold=2)
    for i in range(3):
        alone = animation_frames(x[i : i + 1], views, signed, steps=5, hold=2)
        for f, g in zip(together, alone, strict=True):
            close(f[i : i + 1], g)


def test_negate_passes_through_zero_in_model_space_halfway() -> None:
    x, steps, hold = image((2, 3, 28, 28), 3), 12, 8
    frames = animation_frames(x, [ID, VIEWS["negate"]], signed, steps=steps, hold=hold)
    close(frames[hold + steps // 2 - 1], torch.full_like(x, 0.5))  # s = 1/2: to_unit(0)
    close(transition(x, ID, VIEWS["negate"], 0.25), x / 2)


def bright_pixel(n: int, row: int, col: int) -> torch.Tensor:
    x = torch.zeros(1, 1, n, n)
    x[..., row, col] = 1.0
    return x


def centroid(frame: torch.Tensor) -> torch.Tensor:
    """(row, column) of the frame's mass."""
    n = frame.shape[-1]
    rows, cols = torch.meshgrid(torch.arange(n).float(), torch.arange(n).float(), indexing="ij")
    mass = frame[0, 0]
    return torch.stack([(mass * rows).sum(), (mass * cols).sum()]) / mass.sum()


@pytest.mark.parametrize(("name", "angle"), [("rotate_cw", 90), ("rotate_ccw", -90), ("rotate_180", 180)])
def test_a_turn_carries_a_pixel_along_the_arc_about_the_centre(name: str, angle: float) -> None:
    """The pixel keeps its distance from the centre and is, at each s, turned s * angle clockwise on screen."""
    n, row, col = 64, 10, 40
    x, c = bright_pixel(n, row, col), (n - 1) / 2
    y0, x0 = row - c, col - c
    for i in range(9):
        s = i / 8
        a = math.radians(s * angle)
        frame = transition(x, ID, VIEWS[name], s)
        expected = torch.tensor([y0 * math.cos(a) + x0 * math.sin(a), x0 * math.cos(a) - y0 * math.sin(a)]) + c
        assert torch.dist(centroid(frame), expected) < 0.75, (s, centroid(frame), expected)
        assert frame.max() > 0.2  # the pixel is still there, not smeared out


def test_a_quarter_turn_halfway_is_the_image_turned_an_eighth() -> None:
    """Near the centre (away from the corners that leave the frame) the mid frame of a quarter turn is the image
    resampled at the eighth-turn positions."""
    n = 64
    x = torch.sin(torch.arange(n).float() / 5)[None, :] * torch.cos(torch.arange(n).float() / 7)[:, None]
    x = x.view(1, 1, n, n)
    mid = transition(x, ID, VIEWS["rotate_cw"], 0.5)
    c, a = (n - 1) / 2, math.radians(45)
    rows, cols = torch.meshgrid(torch.arange(n).float() - c, torch.arange(n).float() - c, indexing="ij")
    # where each output place came from: turned back an eighth (counter-clockwise on screen)
    src_r, src_c = rows * math.cos(a) - cols * math.sin(a), cols * math.cos(a) + rows * math.sin(a)
    grid = torch.stack([src_c / c, src_r / c], dim=-1)[None]  # grid_sample's (x, y) in [-1, 1]
    expected = torch.nn.functional.grid_sample(x, grid, align_corners=True)
    inner = rows**2 + cols**2 < (n / 4) ** 2
    assert (mid - expected)[0, 0][inner].abs().max() < 0.05


def test_inner_circle_turns_the_disc_and_leaves_the_rest() -> None:
    p = path(ID, VIEWS["inner_circle"], 64, 64)
    turning = p.angle != 0
    assert torch.equal(turning, (p.end != p.start).any(dim=1))  # every moving pixel turns, the rest stay
    r = (positions(p, 0.5) - 31.5).norm(dim=1)
    torch.testing.assert_close(r, (p.start - 31.5).norm(dim=1))


@pytest.mark.parametrize("name", ["flip", "transpose", "pixel_permute", "skew", "square_hinge", "jigsaw"])
def test_other_views_move_in_straight_lines(name: str) -> None:
    """No arcs where a quarter-turn only coincides for a few pixels (a flip's diagonals)."""
    p = path(ID, VIEWS[name], 64, 64)
    assert (p.angle == 0).all()
    torch.testing.assert_close(positions(p, 0.5), (p.start + p.end) / 2)


def test_a_flip_squashes_through_the_middle_line() -> None:
    x = image((1, 3, 32, 32), 4) + 3  # nowhere 0, so empty places show
    mid = transition(x, ID, VIEWS["flip"], 0.5)
    rows = (mid != 0).any(dim=1)[0].any(dim=1).nonzero().flatten().tolist()
    assert rows == [15, 16]


@pytest.mark.parametrize("to_unit", [signed, lambda y: y])
def test_empty_places_are_zero_in_model_space(to_unit: ToUnit) -> None:
    x = torch.ones(1, 1, 16, 16)
    frames = animation_frames(x, [ID, VIEWS["rotate_cw"]], to_unit, steps=2, hold=1)
    corner = frames[1][0, 0, 0, 0]  # a corner at s = 1/2: every pixel on an arc is away from it
    assert corner == to_unit(torch.zeros(())).item()


def test_bad_arguments_are_refused() -> None:
    x = image((1, 1, 8, 8))
    with pytest.raises(ValueError, match="at least one view"):
        animation_frames(x, [], signed)
    with pytest.raises(ValueError, match="at least 1"):
        animation_frames(x, [ID], signed, steps=0)
    scale = View("scale", lambda y: 2 * y, lambda y: y / 2, lambda y: y / 2)
    with pytest.raises(ValueError, match="not a signed permutation"):
        animation_frames(x, [ID, scale], signed)
