"""Decompositions of factorized diffusion (models/factorize.py) sum to the image exactly, the `Factorized` rule
generalises CS180 A 1.9's hybrid (models/guidance.py), and `Hold` keeps a component on a reference image's."""

import pytest
import torch

from models.factorize import Color, Frequency, Hold, Motion, Scale
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
