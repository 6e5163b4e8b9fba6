"""Decompositions of factorized diffusion (models/factorize.py) sum to the image exactly, and the `Factorized` rule
generalises CS180 A 1.9's hybrid (models/guidance.py)."""

import pytest
import torch

from models.factorize import Color, Frequency, Motion, Scale
from models.filters import gaussian_blur, highpass
from models.guidance import CFG, Factorized

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
