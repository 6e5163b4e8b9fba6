"""Decompositions of factorized diffusion (models/factorize.py) sum to the image exactly, the `Factorized` rule
generalises CS180 A 1.9's hybrid (models/guidance.py), and `Hold` keeps a component on a reference image's."""

import math

import pytest
import torch

from models.factorize import Color, Frequency, Hold, Motion, Scale, motion_kernel
from models.filters import gaussian_blur, highpass
from models.guidance import CFG, Factorized
from models.processes import CLEAN, DDPM, Flow
from models.sampling import generators, sample_loop, start
from models.schedules import linear_schedule
from models.solvers import Native

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
EVERY = [Frequency(33, (2.0,)), Frequency(17, (4.0, 1.0)), Color(), Motion(9), Scale(4)]


@pytest.mark.parametrize("decompose", EVERY, ids=repr)
def test_the_components_sum_to_the_image(decompose):
    parts = decompose(X)
    assert all(p.shape == X.shape for p in parts)
    assert torch.allclose(sum(parts, torch.zeros_like(X)), X, atol=1e-6)
    assert not torch.allclose(parts[0], X)  # a component of its own, not the image


def test_three_bands_are_low_middle_and_high():
    low, middle, high = Frequency(17, (4.0, 1.0))(X)
    energy = [float(torch.fft.fft2(p).abs()[..., 8:24, 8:24].mean()) for p in (low, middle, high)]  # high freqs
    assert energy[0] < energy[1] < energy[2]


def test_each_component_is_what_it_says():
    gray, colour = Color()(X)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.allclose(colour.mean(dim=1), torch.zeros(2, 32, 32), atol=1e-6)
    coarse, _ = Scale(4)(X)
    assert torch.equal(coarse[..., :4, :4], coarse[..., :1, :1].expand(-1, -1, 4, 4))
    blurred, _ = Motion(9)(X)
    assert blurred.diff(dim=-1).abs().mean() < X.diff(dim=-1).abs().mean() / 3  # smooth along the motion
    assert blurred.diff(dim=-2).abs().mean() > X.diff(dim=-2).abs().mean() / 3  # not across it


def predictor(x, t, cond):
    return torch.cat([x * (1 + c.view(-1, 1, 1, 1).float()) for c in cond.split(len(x))])


@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_a_two_band_frequency_factorization_is_the_cs180_hybrid(scale):
    low, high, uncond = torch.tensor([1, 1]), torch.tensor([3, 3]), torch.tensor([-1, -1])
    t = torch.zeros(2)
    e_low, e_high = (CFG(c, uncond, scale)(predictor, X, t) for c in (low, high))
    hybrid = gaussian_blur(e_low, 33, 2.0) + highpass(e_high, 33, 2.0)
    factorized = Factorized((low, high), uncond, Frequency(33, (2.0,)), scale)(predictor, X, t)
    assert torch.allclose(hybrid, factorized, atol=1e-6)


def test_three_prompts_run_in_one_pass_with_the_unconditional():
    calls = []

    def counting(x, t, cond):
        calls.append(len(cond) // len(x))
        return predictor(x, t, cond)

    conds = tuple(torch.tensor([k, k]) for k in (1, 2, 3))
    out = Factorized(conds, torch.tensor([-1, -1]), Frequency(17, (4.0, 1.0)), 5.0)(counting, X, torch.zeros(2))
    assert calls == [4] and out.shape == X.shape


REF = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
PROJECTIONS = [Color(), Scale(4)]  # a component of a component is itself: the held one is the result's exactly


def others(parts, index):
    return sum((p for j, p in enumerate(parts) if j != index), torch.zeros_like(X))


@pytest.mark.parametrize("decompose", EVERY, ids=repr)
@pytest.mark.parametrize(
    ("process", "clean"), [(Flow(), 1.0), (DDPM(linear_schedule(300)), CLEAN)], ids=["flow", "ddpm"]
)
def test_at_the_clean_end_the_held_component_is_the_references_and_the_others_are_xs(decompose, process, clean):
    index = len(decompose(X)) - 1  # the finest: the residual, the hardest to keep apart
    for held in {0, index}:
        out = Hold(process, decompose, held, REF, generators(0, 2))(X, clean)
        assert torch.allclose(out, decompose(REF)[held] + others(decompose(X), held), atol=1e-5)
        if decompose in PROJECTIONS:
            parts = decompose(out)
            assert torch.allclose(parts[held], decompose(REF)[held], atol=1e-5)
            assert torch.allclose(others(parts, held), others(decompose(X), held), atol=1e-5)


@pytest.mark.parametrize("decompose", EVERY, ids=repr)
def test_before_the_end_the_held_component_is_the_noised_references_own_noise(decompose):
    process, t = Flow(), 0.25
    out = Hold(process, decompose, 0, REF, generators(7, 2))(X, t)
    noise = torch.stack([torch.randn(REF.shape[1:], generator=g) for g in generators(7, 2)])
    noised = process.noise_to(REF, t, noise)
    assert torch.allclose(out, decompose(noised)[0] + others(decompose(X), 0), atol=1e-5)
    assert not torch.allclose(out, decompose(REF)[0] + others(decompose(X), 0), atol=1e-2)  # noised, not clean
    again = Hold(process, decompose, 0, REF, generators(8, 2))(X, t)
    assert not torch.allclose(out, again, atol=1e-2)  # the noise is the generators'


@pytest.mark.parametrize("decompose", PROJECTIONS, ids=repr)
def test_a_sampling_run_under_hold_ends_on_the_references_component(decompose):
    process = Flow(default_steps=6)
    times, gens = process.times(), generators(3, 2)

    def drift(x, t, cond):  # any estimate: the constraint alone decides the held component
        return torch.cat([torch.sin(3 * x) for _ in cond.split(len(x))])

    hold = Hold(process, decompose, 0, REF, generators(3, 2, offset=1_000_003))
    free = sample_loop(
        Native(process, times), drift, CFG(torch.zeros(2), None), start(process, times, 0, gens, X), gens
    )
    gens = generators(3, 2)
    held = sample_loop(
        Native(process, times), drift, CFG(torch.zeros(2), None), start(process, times, 0, gens, X), gens, hold
    )
    assert torch.allclose(decompose(held)[0], decompose(REF)[0], atol=1e-5)
    assert not torch.allclose(decompose(free)[0], decompose(REF)[0], atol=1e-2)
    assert not torch.allclose(decompose(held)[1], decompose(REF)[1], atol=1e-2)  # the rest is generated


def test_a_scaled_decomposition_splits_an_image_f_times_the_side_as_the_small_one():
    """Stage II of DeepFloyd IF (worker/hybrid.py): on an image upscaled f times, the scaled decomposition's coarse
    component is the small one's, upscaled: exactly for a block average, within a few per cent for the blurs."""
    small = gaussian_blur(X, 9, 1.5)  # smooth enough that upscaling adds little of its own

    def up(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)

    nearest = small.repeat_interleave(4, -2).repeat_interleave(4, -1)
    expected = Scale(4)(small)[0].repeat_interleave(4, -2).repeat_interleave(4, -1)
    assert torch.allclose(Scale(4).scaled(4)(nearest)[0], expected, atol=1e-6)
    assert Color().scaled(4) == Color() and Motion(9).scaled(4) == Motion(37)
    assert Frequency(33, (2.0, 0.5)).scaled(4) == Frequency(133, (8.0, 2.0))
    for decompose in (Frequency(17, (2.0,)), Motion(5)):
        want = up(decompose(small)[0])[..., 16:-16, 16:-16]  # away from the border, where padding differs
        got, unscaled = (d(up(small))[0][..., 16:-16, 16:-16] for d in (decompose.scaled(4), decompose))
        error, error_unscaled = ((g - want).norm() / want.norm() for g in (got, unscaled))
        assert error < 0.05 and error_unscaled > 3 * error, (decompose, float(error), float(error_unscaled))


@pytest.mark.parametrize("length", [3, 9, 33])
@pytest.mark.parametrize("angle", [0.0, 30.0, 45.0, 90.0, -60.0, 135.0, 180.0])
def test_a_motion_kernel_is_a_line_of_unit_weight_through_the_centre(length, angle):
    kernel = motion_kernel(length, angle)
    h, w = kernel.shape
    assert h % 2 == 1 and w % 2 == 1 and max(h, w) <= length
    assert torch.isclose(kernel.sum(), torch.tensor(1.0, dtype=kernel.dtype)) and (kernel >= 0).all()
    assert torch.allclose(kernel, kernel.flip(0, 1))  # the line runs both ways from the centre
    ys, xs = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    theta = math.radians(angle)
    off_line = (xs * math.sin(theta) + ys * math.cos(theta)).abs()  # each pixel's distance from the line
    assert float((kernel * off_line).sum()) < 0.5  # the weight sits within half a pixel of the line, on average


def test_horizontal_and_vertical_motion_are_boxes_and_each_others_transpose():
    assert torch.equal(motion_kernel(9, 0.0), torch.full((1, 9), 1 / 9, dtype=torch.float64))
    assert torch.equal(motion_kernel(9, 90.0), motion_kernel(9, 0.0).T)
    assert torch.equal(motion_kernel(9, 180.0), motion_kernel(9, 0.0))
    across = Motion(9, 90.0)(X.transpose(-1, -2))[0].transpose(-1, -2)
    assert torch.allclose(Motion(9)(X)[0], across, atol=1e-6)


def test_a_diagonal_motion_blur_smooths_along_its_line_not_across_it():
    blurred, sharp = Motion(9, 45.0)(X)
    assert torch.allclose(blurred + sharp, X, atol=1e-6)
    along = (blurred[..., 1:, :-1] - blurred[..., :-1, 1:]).abs().mean()  # up and to the right: 45 degrees
    across = (blurred[..., 1:, 1:] - blurred[..., :-1, :-1]).abs().mean()
    assert along < across / 2, (float(along), float(across))
    assert Motion(9, 45.0).scaled(4) == Motion(37, 45.0)
