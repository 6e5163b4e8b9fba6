import math

import pytest
import torch

from models.forward import ddpm_forward, randn_like_per_sample, sigma_forward
from models.schedules import linear_schedule


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_ddpm_forward_at_t0_is_close_to_x0() -> None:
    abar = linear_schedule().alphas_cumprod
    x0 = torch.rand(2, 1, 28, 28, generator=_gen(0))
    noise = torch.randn(x0.shape, generator=_gen(1))
    xt = ddpm_forward(x0, torch.zeros(2, dtype=torch.long), abar, noise)
    torch.testing.assert_close(xt, x0, atol=0.05, rtol=0)


def test_ddpm_forward_noise_std_matches_schedule() -> None:
    abar = linear_schedule().alphas_cumprod
    t = 150
    x0 = torch.rand(1, 1, 256, 256, generator=_gen(0))
    noise = torch.randn(x0.shape, generator=_gen(1))
    xt = ddpm_forward(x0, torch.tensor([t]), abar, noise)
    residual = xt - abar[t].sqrt() * x0
    assert residual.std().item() == pytest.approx(math.sqrt(1 - abar[t].item()), rel=0.02)


def test_ddpm_forward_uses_each_items_timestep() -> None:
    abar = linear_schedule().alphas_cumprod
    x0 = torch.ones(2, 1, 4, 4)
    xt = ddpm_forward(x0, torch.tensor([10, 299]), abar, torch.zeros_like(x0))
    torch.testing.assert_close(xt[0], x0[0] * abar[10].sqrt())
    torch.testing.assert_close(xt[1], x0[1] * abar[299].sqrt())


def test_sigma_forward_statistics() -> None:
    x = torch.full((2, 1, 128, 128), 0.5)
    sigma = torch.tensor([0.5, 2.0])
    noise = randn_like_per_sample(x, [_gen(0), _gen(1)])
    z = sigma_forward(x, sigma, noise)
    for i in range(2):
        assert z[i].mean().item() == pytest.approx(0.5, abs=0.05)
        assert z[i].std().item() == pytest.approx(sigma[i].item(), rel=0.02)


def test_per_sample_noise_ignores_batch_mates() -> None:
    batch = randn_like_per_sample(torch.empty(3, 1, 8, 8), [_gen(1), _gen(2), _gen(3)])
    alone = randn_like_per_sample(torch.empty(1, 1, 8, 8), [_gen(2)])
    torch.testing.assert_close(batch[1], alone[0], rtol=0, atol=0)


def test_per_sample_noise_leaves_global_rng_alone() -> None:
    before = torch.get_rng_state()
    noise = randn_like_per_sample(torch.empty(2, 3, 4, 4, dtype=torch.float64), [_gen(0), _gen(1)])
    assert noise.shape == (2, 3, 4, 4) and noise.dtype == torch.float64
    assert torch.equal(torch.get_rng_state(), before)


def test_per_sample_noise_needs_one_generator_per_item() -> None:
    with pytest.raises(ValueError):
        randn_like_per_sample(torch.empty(2, 1, 4, 4), [_gen(0)])
