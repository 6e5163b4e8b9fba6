"""Known answers for DeepFloyd IF in the loops: the learned-variance DDPM step against diffusers' own scheduler, the
guidance rules' handling of the variance channels, and IF's UNets behind the predictor call (tiny random UNets)."""

import pytest
import torch
from diffusers import DDPMScheduler

from models.deepfloyd import if_predictor, low_res
from models.factorize import Frequency
from models.guidance import CFG, Factorized, MultiView, cfg_combine
from models.processes import CLEAN, DDPM
from models.schedules import from_betas
from models.views import VIEWS
from tests.tiny_if import STAGE1_SIZE, STAGE2_SIZE, _unet

G = torch.Generator().manual_seed(0)


def rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=G)


def if_scheduler() -> DDPMScheduler:
    """IF's scheduler as its repos configure it, less thresholding and clipping (the course's loop does neither)."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        variance_type="learned_range",
        clip_sample=False,
        thresholding=False,
    )


@pytest.mark.parametrize(("t", "t_next"), [(990, 960), (510, 480), (30, 0), (1, 0), (0, CLEAN)])
def test_the_learned_variance_step_is_diffusers_step(t, t_next):
    scheduler = if_scheduler()
    scheduler.set_timesteps(timesteps=[t] if t_next == CLEAN else [t, t_next])  # diffusers then steps t -> t_next
    process = DDPM(from_betas(scheduler.betas))
    x, est = rand(1, 3, 8, 8), rand(1, 6, 8, 8).clamp(-1, 1)
    gen = _replaying(noise := torch.empty(1, 3, 8, 8))
    theirs = scheduler.step(est, t, x, generator=gen).prev_sample
    ours = process.step(x, est, t, t_next, noise if process.is_stochastic(t_next) else None)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def _replaying(noise: torch.Tensor) -> torch.Generator:
    """A generator whose next standard normal draw of noise's shape is `noise` (diffusers draws its variance noise
    from the generator it is given)."""
    gen = torch.Generator().manual_seed(123)
    state = gen.get_state()
    drawn = torch.randn(noise.shape, generator=gen)
    gen.set_state(state)
    noise.copy_(drawn)
    return gen


def test_strided_steps_are_diffusers_steps_over_the_same_timesteps():
    scheduler = if_scheduler()
    strided = list(range(990, -1, -30))
    scheduler.set_timesteps(timesteps=strided)
    process = DDPM(from_betas(scheduler.betas))
    x = rand(1, 3, 8, 8)
    ours = theirs = x
    for t, t_next in zip(strided, [*strided[1:], CLEAN], strict=True):
        est = rand(1, 6, 8, 8).clamp(-1, 1)
        gen = _replaying(noise := torch.empty(1, 3, 8, 8))
        theirs = scheduler.step(est, t, theirs, generator=gen).prev_sample
        ours = process.step(ours, est, t, t_next, noise if process.is_stochastic(t_next) else None)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_a_learned_variance_of_minus_one_is_the_posterior_variance_and_plus_one_is_beta():
    process = DDPM(from_betas(if_scheduler().betas))
    t, t_next = 600, 570
    abar, abar_next = process.abar(t), process.abar(t_next)
    beta = 1 - abar / abar_next
    low = process.learned_std(-torch.ones(1), t, t_next) ** 2
    high = process.learned_std(torch.ones(1), t, t_next) ** 2
    torch.testing.assert_close(low, torch.tensor([(1 - abar_next) / (1 - abar) * beta]))
    torch.testing.assert_close(high, torch.tensor([beta]))


def test_cfg_guides_the_noise_and_keeps_the_conditional_variance():
    cond, uncond = rand(2, 6, 4, 4), rand(2, 6, 4, 4)
    out = cfg_combine(cond, uncond, 7.0, 3)
    torch.testing.assert_close(out[:, :3], uncond[:, :3] + 7.0 * (cond[:, :3] - uncond[:, :3]))
    assert torch.equal(out[:, 3:], cond[:, 3:])
    assert cfg_combine(cond[:, :3], uncond[:, :3], 7.0, 3).shape == (2, 3, 4, 4)  # no variance: the image's channels


def fixed(estimates: dict[float, torch.Tensor]):
    """A predictor that answers each condition row (a scalar tag) with a fixed estimate."""

    def predict(x, t, cond):
        k = cond.shape[0] // x.shape[0]
        xs = x.repeat(k, 1, 1, 1)
        return torch.stack([estimates[float(c)] + 0 * xs[i, :1] for i, c in enumerate(cond)])

    return predict


def test_anagram_variance_is_brought_back_per_view_without_the_views_sign():
    x = rand(1, 3, 4, 4)
    e_up, e_view, e_u = rand(6, 4, 4), rand(6, 4, 4), rand(6, 4, 4)
    predict = fixed({1.0: e_up, 2.0: e_view, 0.0: e_u})
    tags = torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([0.0])
    for name in ("flip", "rotate_180", "negate"):
        view = VIEWS[name]
        up, viewed, uncond = tags
        out = MultiView((up, viewed), uncond, (VIEWS["identity"], view), scale=1.0)(predict, x, torch.zeros(1))[0]
        torch.testing.assert_close(out[:3], (e_up[:3] + view.inverse(e_view[None])[0, :3]) / 2)
        torch.testing.assert_close(out[3:], (e_up[3:] + view.inverse_map(e_view[None])[0, 3:]) / 2)
    negate = VIEWS["negate"]
    assert torch.equal(negate.inverse_map(e_view), e_view) and torch.equal(negate.inverse(e_view), -e_view)


def test_hybrid_averages_the_variance():
    x = rand(1, 3, 8, 8)
    e_low, e_high, e_u = rand(6, 8, 8), rand(6, 8, 8), rand(6, 8, 8)
    predict = fixed({1.0: e_low, 2.0: e_high, 0.0: e_u})
    rule = Factorized((torch.tensor([1.0]), torch.tensor([2.0])), torch.tensor([0.0]), Frequency(5, (1.0,)), 3.0)
    out = rule(predict, x, torch.zeros(1))[0]
    low, high = cfg_combine(e_low[None], e_u[None], 3.0, 3), cfg_combine(e_high[None], e_u[None], 3.0, 3)
    torch.testing.assert_close(out[3:], ((low + high) / 2)[0, 3:])


def test_the_stage_one_predictor_runs_every_branch_in_one_pass_as_separate_passes_would():
    torch.manual_seed(0)  # test-only weights
    unet = _unet(3, STAGE1_SIZE).eval()
    predict = if_predictor(unet, 1000)
    x, t = rand(2, 3, STAGE1_SIZE, STAGE1_SIZE), torch.full((2,), 0.5)
    cond, uncond = rand(2, 7, 32), rand(2, 7, 32)
    with torch.inference_mode():
        both = predict(x, t, torch.cat([cond, uncond]))
        alone = torch.cat([predict(x, t, cond), predict(x, t, uncond)])
        guided = CFG(cond, uncond, 7.0)(predict, x, t)
    assert both.shape == (4, 6, STAGE1_SIZE, STAGE1_SIZE)
    torch.testing.assert_close(both, alone, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(guided[:, 3:], alone[:2, 3:], rtol=1e-4, atol=1e-4)


def stage_two_unet() -> torch.nn.Module:
    """A tiny random stage II UNet: 6 input channels (x and the low-resolution image), noise level as class."""
    return _unet(
        6,
        STAGE2_SIZE,
        class_embed_type="timestep",
        mid_block_scale_factor=1.414,
        time_embedding_act_fn="gelu",
        time_embedding_dim=32,
    ).eval()


def test_the_stage_two_predictor_sees_the_noised_low_resolution_image():
    torch.manual_seed(0)  # test-only weights
    unet = stage_two_unet()
    noising = DDPM(from_betas(DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").betas))
    small = rand(1, 3, STAGE1_SIZE, STAGE1_SIZE).clamp(-1, 1)
    noise = rand(1, 3, STAGE2_SIZE, STAGE2_SIZE)
    clean, noisy = (low_res(small, STAGE2_SIZE, noising, level, noise) for level in (0, 250))
    assert clean.image.shape == (1, 3, STAGE2_SIZE, STAGE2_SIZE)
    up = torch.nn.functional.interpolate(small, (STAGE2_SIZE, STAGE2_SIZE), mode="bilinear", align_corners=True)
    torch.testing.assert_close(noisy.image, noising.noise_to(up, 250, noise))
    x, t, cond = rand(1, 3, STAGE2_SIZE, STAGE2_SIZE), torch.full((1,), 0.3), rand(1, 7, 32)
    with torch.inference_mode():
        a, b = (if_predictor(unet, 1000, c)(x, t, cond) for c in (clean, noisy))
    assert a.shape == (1, 6, STAGE2_SIZE, STAGE2_SIZE) and not torch.allclose(a, b)
