"""Known answers for the sampling core: processes, guidance rules, views, the inpainting constraint, the loop."""

import dataclasses

import pytest
import torch

from models.factorize import Frequency
from models.filters import gaussian_blur, highpass
from models.guidance import CFG, Factorized, Interval, MultiView
from models.processes import CLEAN, DDPM, Flow, clipped
from models.sampling import Inpaint, generators, sample_loop, start
from models.schedules import linear_schedule, make_schedule
from models.solvers import Native
from models.views import VIEWS

X1 = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # "data"


def oracle(process, target):
    """A perfect predictor for `target`: the exact noise (DDPM) or velocity (flow) of the current state."""

    def predict(x, t, cond):
        if isinstance(process, DDPM):
            abar = process.abar(float(t[0]) * process.schedule.num_timesteps)
            return (x - abar**0.5 * target) / (1 - abar) ** 0.5
        tt = float(t[0])
        return target - (x - tt * target) / (1 - tt)

    return predict


def unguided(predict, x, t):
    return predict(x, t, torch.zeros(len(x)))


@pytest.mark.parametrize("process", [DDPM(linear_schedule(300)), Flow(default_steps=20)])
def test_a_perfect_predictor_lands_exactly_on_the_data(process):
    times = process.times()
    gens = generators(0, 3)
    x = start(process, times, 0, gens, X1)
    out = sample_loop(Native(process, times), oracle(process, X1), unguided, x, gens)
    assert torch.allclose(out, X1, atol=1e-4)


def test_ddpm_times_follow_the_course():
    strided = DDPM(make_schedule("linear", 1000, 1e-4, 0.02)).times(stride=30)
    assert strided[:3] == [990, 960, 930] and strided[-2:] == [0, CLEAN] and len(strided) == 35
    full = DDPM(linear_schedule(300)).times()
    assert full[0] == 299 and full[-2:] == [0, CLEAN] and len(full) == 301
    assert DDPM(linear_schedule(300)).times(steps=4) == [299, 199, 100, 0, CLEAN]
    assert Flow().times()[:2] == [0, 0.02] and len(Flow().times()) == 51


X_EPS_Z = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1)).unbind(0)  # x_t, the estimate, z


def spec_step(t: int, clip: tuple[float, float] | None = None) -> torch.Tensor:
    """Algorithm B.2's step from X_EPS_Z at schedule index t, written out (x0 clipped to `clip` where given)."""
    s = DDPM(linear_schedule(300)).schedule
    x, eps, z = X_EPS_Z
    a, ab, ab_prev, b = s.alphas[t], s.alphas_cumprod[t], s.alphas_cumprod[t - 1], s.betas[t]
    x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
    if clip is not None:
        x0 = x0.clamp(*clip)
    return (ab_prev.sqrt() * b / (1 - ab)) * x0 + (a.sqrt() * (1 - ab_prev) / (1 - ab)) * x + b.sqrt() * z


def test_ddpm_step_is_the_spec_formula():
    x, eps, z = X_EPS_Z
    assert torch.allclose(DDPM(linear_schedule(300)).step(x, eps, 120, 119, z), spec_step(120), atol=1e-5)


def test_a_clipped_ddpm_step_is_the_spec_formula_on_the_clipped_clean_estimate():
    process, (x, eps, z), t = DDPM(linear_schedule(300)), X_EPS_Z, 200
    expected = spec_step(t, clip=(0, 1))
    assert not torch.allclose(process.step(x, eps, t, t - 1, z), expected, atol=1e-3)  # this x0 leaves [0, 1]
    assert torch.allclose(clipped(process, 0, 1).step(x, eps, t, t - 1, z), expected, atol=1e-5)


def test_a_clipped_flow_step_heads_for_the_clipped_clean_estimate():
    x, u = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2)).unbind(0)
    t, t_next = 0.3, 0.4
    x1 = (x + (1 - t) * u).clamp(-0.5, 0.5)  # Flow.preview, clipped
    step = clipped(Flow(), -0.5, 0.5).step(x, u, t, t_next, None)
    assert torch.allclose(step, x + (t_next - t) * (x1 - x) / (1 - t), atol=1e-6)
    assert torch.allclose(clipped(Flow(), -0.5, 0.5).step(x, u, t, 1.0, None), x1, atol=1e-6)  # to t = 1: x1 itself


@pytest.mark.parametrize("process", [DDPM(linear_schedule(300)), Flow(default_steps=20)])
def test_clipping_leaves_a_loop_whose_estimates_stay_in_range_alone(process):
    times = process.times()
    gens = generators(0, 3)
    x = start(process, times, 0, gens, X1)
    plain = sample_loop(Native(process, times), oracle(process, X1), unguided, x, generators(0, 3))
    clip = clipped(process, 0, 1)
    assert torch.allclose(
        sample_loop(Native(clip, times), oracle(clip, X1), unguided, x, generators(0, 3)), plain, atol=1e-5
    )


def test_forward_process_statistics():
    process = DDPM(linear_schedule(300))
    x0 = torch.full((1, 1, 256, 256), 0.5)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    xt = process.noise_to(x0, 150, noise)
    abar = float(process.schedule.alphas_cumprod[150])
    assert float((xt - abar**0.5 * x0).std()) == pytest.approx((1 - abar) ** 0.5, rel=0.02)
    assert torch.equal(process.noise_to(x0, CLEAN, noise), x0)
    assert torch.allclose(Flow().noise_to(x0, 0.25, noise), 0.75 * noise + 0.25 * x0)


def toy_predict(x, t, cond):
    """Deterministic, per-sample, and different per condition; each image under each of its k conditions."""
    k = len(cond) // len(x)
    x, t = x.repeat(k, 1, 1, 1), t.repeat(k)
    return torch.tanh(x * (cond.view(-1, 1, 1, 1).float() + 2) + t.view(-1, 1, 1, 1))


def test_cfg_with_scale_one_is_the_conditional_estimate():
    x, t = torch.randn(2, 1, 4, 4), torch.full((2,), 0.3)
    cond, uncond = torch.tensor([3, 4]), torch.tensor([-1, -1])
    assert torch.allclose(CFG(cond, uncond, 1.0)(toy_predict, x, t), toy_predict(x, t, cond))
    c, u = toy_predict(x, t, cond), toy_predict(x, t, uncond)
    assert torch.allclose(CFG(cond, uncond, 7.0)(toy_predict, x, t), u + 7 * (c - u), atol=1e-6)


def test_an_anagram_of_the_identity_view_and_one_prompt_is_plain_cfg():
    x, t = torch.randn(2, 1, 4, 4), torch.full((2,), 0.3)
    cond, uncond = torch.tensor([3, 4]), torch.tensor([-1, -1])
    anagram = MultiView((cond, cond), uncond, (VIEWS["identity"], VIEWS["identity"]), scale=5.0)
    assert torch.allclose(anagram(toy_predict, x, t), CFG(cond, uncond, 5.0)(toy_predict, x, t), atol=1e-6)


def test_a_hybrid_of_one_prompt_is_plain_cfg():
    x, t = torch.randn(2, 1, 16, 16), torch.full((2,), 0.3)
    cond, uncond = torch.tensor([3, 4]), torch.tensor([-1, -1])
    hybrid = Factorized((cond, cond), uncond, Frequency(5, (1.0,)), 5.0)
    assert torch.allclose(hybrid(toy_predict, x, t), CFG(cond, uncond, 5.0)(toy_predict, x, t), atol=1e-5)


@pytest.mark.parametrize("name", ["flip", "rotate_180", "negate", "identity"])
def test_views_are_undone_by_their_inverse(name):
    view = VIEWS[name]
    assert torch.equal(view.inverse(view.view(X1)), X1)


def test_every_branch_goes_in_one_forward_pass_and_each_image_once():
    calls = []

    def counting(x, t, cond):
        calls.append((len(x), len(cond)))
        return toy_predict(x, t, cond)

    process = DDPM(linear_schedule(300))
    times = process.times(steps=5)
    gens = generators(0, 2)
    cond, uncond = torch.tensor([1, 2]), torch.tensor([-1, -1])
    sample_loop(Native(process, times), counting, CFG(cond, uncond, 5.0), start(process, times, 0, gens, X1[:2]), gens)
    assert calls == [(2, 4)] * 5  # 2 images, each conditional and unconditional
    calls.clear()
    anagram = MultiView((cond, cond), uncond, (VIEWS["identity"], VIEWS["flip"]))
    sample_loop(Native(process, times), counting, anagram, start(process, times, 0, gens, X1[:2]), gens)
    assert calls == [(4, 8)] * 5  # the images and their views, each under its prompt and unconditional
    calls.clear()
    hybrid = Factorized((cond, cond), uncond, Frequency(3, (1.0,)))
    sample_loop(Native(process, times), counting, hybrid, start(process, times, 0, gens, X1[:2]), gens)
    assert calls == [(2, 6)] * 5


@pytest.mark.parametrize("process", [DDPM(linear_schedule(300)), Flow(default_steps=10)])
def test_inpainting_keeps_every_unmasked_pixel(process):
    mask = torch.zeros(3, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    times = process.times(steps=10)
    gens = generators(5, 3)
    x = start(process, times, 0, gens, X1)
    cond = torch.zeros(3)
    out = sample_loop(
        Native(process, times),
        toy_predict,
        CFG(cond, None),
        x,
        gens,
        constrain=Inpaint(process, X1, mask, generators(99, 3)),
    )
    assert torch.equal(out[mask.expand_as(out) == 0], X1[mask.expand_as(X1) == 0])
    assert not torch.allclose(out[mask.expand_as(out) == 1], X1[mask.expand_as(X1) == 1])


def test_same_seed_same_pixels_in_any_batch():
    process = DDPM(linear_schedule(300))
    times = process.times(steps=8)
    cond = torch.tensor([1, 2, 3])

    def run(gens, c):
        x = start(process, times, 0, gens, torch.zeros(len(gens), 1, 8, 8))
        return sample_loop(Native(process, times), toy_predict, CFG(c, torch.full_like(c, -1), 3.0), x, gens)

    batch = run(generators(40, 3), cond)
    alone = run(generators(41, 1), cond[1:2])
    assert torch.allclose(batch[1:2], alone, atol=1e-6)
    assert torch.equal(run(generators(40, 3), cond), batch)


def test_sdedit_starts_from_the_image_noised_to_i_start():
    process = DDPM(linear_schedule(300))
    times = process.times(stride=10)
    gens = generators(3, 3)
    x = start(process, times, 25, gens, X1, image=X1)
    noise = torch.stack([torch.randn(1, 8, 8, generator=g) for g in generators(3, 3)])
    assert torch.allclose(x, process.noise_to(X1, times[25], noise))


def test_on_step_reports_every_step_with_a_preview():
    process = Flow(default_steps=4)
    times = process.times()
    gens = generators(0, 3)
    steps = []
    sample_loop(
        Native(process, times),
        oracle(process, X1),
        unguided,
        start(process, times, 0, gens, X1),
        gens,
        on_step=steps.append,
    )
    assert [s.index for s in steps] == [1, 2, 3, 4] and steps[0].total == 4
    assert torch.allclose(steps[0].preview(), X1, atol=1e-5)  # the oracle's clean estimate is the data


def test_ddpm_noise_is_the_specs_beta_for_one_step_and_the_posterior_variance_over_a_stride():
    process = DDPM(linear_schedule(300))
    betas = linear_schedule(300).betas
    assert process.variance(200, 199) == pytest.approx(float(betas[200]), rel=1e-3)  # B.2: sigma^2 = beta_t
    abar = linear_schedule(300).alphas_cumprod
    beta = 1 - float(abar[30] / abar[0])  # the jump 30 -> 0
    assert process.variance(30, 0) == pytest.approx(float((1 - abar[0]) / (1 - abar[30])) * beta, rel=1e-5)
    assert process.variance(30, 0) < 0.01 * beta  # almost no noise is put back into the last image


def test_sigma_is_the_noise_level_of_the_time_the_network_is_given():
    ddpm, flow = DDPM(linear_schedule(300)), Flow()
    abar = float(linear_schedule(300).alphas_cumprod[150])
    assert ddpm.sigma(ddpm.model_time(150)) == pytest.approx(((1 - abar) / abar) ** 0.5)
    t32 = float(torch.tensor(ddpm.model_time(299), dtype=torch.float32))  # as the loop's float32 tensor holds it
    assert ddpm.sigma(t32) == ddpm.sigma(ddpm.model_time(299))
    assert flow.sigma(0.25) == pytest.approx(3.0) and flow.sigma(1.0) == 0 and flow.sigma(0.0) == float("inf")


@pytest.mark.parametrize("rule", ["cfg", "anagram", "hybrid"])
def test_an_interval_guides_inside_it_and_runs_the_conditional_branches_alone_outside(rule):
    calls = []

    def counting(x, t, cond):
        calls.append(len(cond) // len(x))
        return toy_predict(x, t, cond)

    x, cond, uncond = torch.randn(2, 1, 8, 8), torch.tensor([3, 4]), torch.tensor([-1, -1])
    guide = {
        "cfg": CFG(cond, uncond, 5.0),
        "anagram": MultiView((cond, cond), uncond, (VIEWS["identity"], VIEWS["flip"]), scale=5.0),
        "hybrid": Factorized((cond, cond), uncond, Frequency(3, (1.0,)), 5.0),
    }[rule]
    unguided_rule = dataclasses.replace(guide, scale=1.0)
    flow = Flow()
    limited = Interval(guide, flow.sigma, 0.0, 1.0)  # sigma <= 1: t >= 0.5
    late, early = torch.full((2,), 0.75), torch.full((2,), 0.25)
    assert torch.allclose(limited(counting, x, late), guide(toy_predict, x, late))
    assert torch.allclose(limited(counting, x, early), unguided_rule(toy_predict, x, early))
    assert calls[0] == calls[1] + 1  # outside the interval, no unconditional branch
    if rule == "cfg":
        assert torch.allclose(limited(toy_predict, x, early), toy_predict(x, early, cond))  # the conditional alone


def test_at_scale_one_every_rule_is_its_conditional_estimates():
    x, t = torch.randn(2, 1, 16, 16), torch.full((2,), 0.3)
    cond, other, uncond = torch.tensor([3, 4]), torch.tensor([5, 6]), torch.tensor([-1, -1])
    view = VIEWS["rotate_180"]
    e1, e2 = toy_predict(x, t, cond), view.inverse(toy_predict(view.view(x), t, other))
    anagram = MultiView((cond, other), uncond, (VIEWS["identity"], view), scale=1.0)
    assert torch.allclose(anagram(toy_predict, x, t), (e1 + e2) / 2, atol=1e-6)
    hybrid = Factorized((cond, other), uncond, Frequency(5, (1.0,)), 1.0)(toy_predict, x, t)
    low, high = toy_predict(x, t, cond), toy_predict(x, t, other)
    assert torch.allclose(hybrid, gaussian_blur(low, 5, 1.0) + highpass(high, 5, 1.0), atol=1e-6)
