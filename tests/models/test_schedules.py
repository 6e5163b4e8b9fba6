import pytest
import torch

from models.schedules import DDPMSchedule, cosine_schedule, eps_loss_weights, linear_schedule, make_schedule


def test_linear_schedule_endpoints_and_length() -> None:
    sched = linear_schedule()
    assert sched.num_timesteps == 300
    assert sched.betas.dtype == torch.float32
    assert sched.betas[0].item() == pytest.approx(1e-4)
    assert sched.betas[-1].item() == pytest.approx(0.02)
    torch.testing.assert_close(sched.alphas, 1 - sched.betas)
    torch.testing.assert_close(sched.alphas_cumprod, torch.cumprod(sched.alphas, 0))


def test_alphas_cumprod_decreases() -> None:
    for sched in (linear_schedule(), cosine_schedule(1000)):
        assert (sched.alphas_cumprod.diff() < 0).all()


def test_cosine_schedule_starts_near_one_and_ends_near_zero() -> None:
    sched = cosine_schedule(1000)
    assert sched.num_timesteps == 1000
    assert sched.alphas_cumprod[0].item() == pytest.approx(1.0, abs=1e-3)
    assert sched.alphas_cumprod[-1].item() < 1e-4
    assert sched.betas.max().item() == pytest.approx(0.999)


def test_make_schedule_by_name() -> None:
    assert make_schedule("linear", 50, 1e-4, 0.02).num_timesteps == 50
    assert make_schedule("cosine", 50, 1e-4, 0.02).num_timesteps == 50
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("quadratic", 50, 1e-4, 0.02)


def test_schedule_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        linear_schedule(0)
    with pytest.raises(ValueError):
        linear_schedule(10, beta_start=0.5, beta_end=0.1)
    with pytest.raises(ValueError):
        DDPMSchedule(betas=torch.zeros(3), alphas=torch.zeros(3), alphas_cumprod=torch.zeros(4))


def test_eps_loss_weights_known_answers() -> None:
    abar = torch.tensor([0.99, 0.8, 0.5, 0.1])  # SNR 99, 4, 1, 1/9
    torch.testing.assert_close(eps_loss_weights("uniform", abar), torch.ones(4))
    v = torch.tensor([1 / 0.99, 1 / 0.8, 2.0, 10.0])  # 1 / abar = 1 + 1 / SNR
    torch.testing.assert_close(eps_loss_weights("v", abar), v / v.mean())
    min_snr = torch.tensor([5 / 99, 1.0, 1.0, 1.0])  # min(SNR, 5) / SNR
    torch.testing.assert_close(eps_loss_weights("min-snr", abar), min_snr / min_snr.mean())
    gamma_1 = torch.tensor([1 / 99, 1 / 4, 1.0, 1.0])
    torch.testing.assert_close(eps_loss_weights("min-snr", abar, gamma=1.0), gamma_1 / gamma_1.mean())
    with pytest.raises(ValueError, match="unknown loss weighting 'snr'"):
        eps_loss_weights("snr", abar)


def test_eps_loss_weights_on_the_spec_schedule_weigh_noisy_steps_more() -> None:
    abar = linear_schedule().alphas_cumprod
    for kind in ("v", "min-snr"):
        w = eps_loss_weights(kind, abar)
        assert w.mean().item() == pytest.approx(1.0) and (w.diff() >= 0).all()  # never less weight as noise grows
        assert w[-1] > 5 * w[0]
