"""The solvers of models/solvers.py: each wrapped one steps as diffusers' own scheduler does on the same inputs; each
written here converges at its order on a problem with a closed-form answer (Gaussian data, whose exact denoiser is
known); every one works inside the loop with a constraint, from a mid-run start, and per-sample seeds."""

import math

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

from core.samplers import EPS, FLOW
from models.forward import randn_like_per_sample
from models.guidance import CFG
from models.processes import CLEAN, DDPM, Flow, clipped
from models.sampling import Inpaint, generators, sample_loop, start
from models.schedules import linear_schedule, make_schedule
from models.solvers import make_solver, spaced

SCHEDULE = linear_schedule(300)
MU, S = 0.3, 0.5  # the Gaussian data's mean and standard deviation, per pixel


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def gaussian_eps(process: DDPM, x: torch.Tensor, t: float) -> torch.Tensor:
    """E[eps | x_t] for x0 ~ N(MU, S^2): x_t = sqrt(a) x0 + sqrt(1 - a) eps is Gaussian, the posterior is linear."""
    a = process.abar(t)
    return math.sqrt(1 - a) / (a * S * S + 1 - a) * (x - math.sqrt(a) * MU)


def gaussian_velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    """E[x1 - z | x_t] for x1 ~ N(MU, S^2), z ~ N(0, 1), x_t = (1 - t) z + t x1."""
    v = (1 - t) ** 2 + t * t * S * S
    centred = x - t * MU
    return MU + t * S * S / v * centred - (1 - t) / v * centred


def oracle(process, exact):
    def predict(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        time = float(t[0]) * (process.schedule.num_timesteps if isinstance(process, DDPM) else 1)
        return exact(process, x, time) if isinstance(process, DDPM) else exact(x, time)

    return predict


UNGUIDED = CFG(torch.zeros(4), None)


def run(process, sampler: str, steps: int, predict, x: torch.Tensor, **options) -> torch.Tensor:
    solver = make_solver(process, sampler, steps, None, options.get("eta"), options.get("spacing"))
    return sample_loop(solver, predict, UNGUIDED, x, generators(0, len(x)))


# --- timesteps ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 2, 4, 10, 20, 50])
def test_spacing_picks_the_timesteps_diffusers_picks(spacing, steps):
    ddim = DDIMScheduler(num_train_timesteps=300, timestep_spacing=spacing)
    ddim.set_timesteps(steps)
    assert spaced(300, steps, spacing) == ddim.timesteps.tolist()


@pytest.mark.parametrize("steps", range(1, 64))
def test_trailing_spacing_never_visits_a_negative_timestep(steps):
    chosen = spaced(300, steps, "trailing")
    assert len(chosen) == steps and chosen[0] == 299 and min(chosen) >= 0
    assert chosen == sorted(set(chosen), reverse=True)


# --- known answers: one step of each wrapped solver is diffusers' step ---------------------------------------------


def wrapped_first_step(sampler: str, steps: int, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    solver = make_solver(DDPM(SCHEDULE), sampler, steps)
    out, _ = solver.step(lambda _x, _t: eps, x, 0, generators(7, len(x)))
    return out


def diffusers_scheduler(cls, **options):
    return cls(num_train_timesteps=300, trained_betas=SCHEDULE.betas.double().numpy(), **options)


@pytest.mark.parametrize(
    ("sampler", "cls", "options"),
    [
        ("dpmpp_2m", DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "timestep_spacing": "trailing"}),
        ("unipc", UniPCMultistepScheduler, {"timestep_spacing": "trailing"}),
    ],
)
def test_a_multistep_solvers_steps_are_diffusers_steps(sampler, cls, options):
    x, eps = rand(2, 1, 8, 8), [rand(2, 1, 8, 8, seed=k) for k in range(1, 5)]
    ours = make_solver(DDPM(SCHEDULE), sampler, 4)
    theirs = diffusers_scheduler(cls, **options)
    theirs.set_timesteps(4)
    assert ours.times == [*(float(t) for t in theirs.timesteps), CLEAN]
    a = b = x
    for i in range(4):
        a, _ = ours.step(lambda _x, _t, i=i: eps[i], a, i, [])
        b = theirs.step(eps[i], theirs.timesteps[i], b).prev_sample
        assert torch.allclose(a, b, atol=1e-5), f"step {i}"


def test_the_sde_solver_is_diffusers_step_with_our_per_sample_noise():
    x, eps = rand(2, 1, 8, 8), rand(2, 1, 8, 8, seed=1)
    theirs = diffusers_scheduler(
        DPMSolverMultistepScheduler, algorithm_type="sde-dpmsolver++", timestep_spacing="trailing"
    )
    theirs.set_timesteps(4)
    noise = randn_like_per_sample(x, generators(7, 2))
    expected = theirs.step(eps, theirs.timesteps[0], x, variance_noise=noise).prev_sample
    assert torch.allclose(wrapped_first_step("dpmpp_sde", 4, x, eps), expected, atol=1e-6)


@pytest.mark.parametrize(("sampler", "cls"), [("euler", EulerDiscreteScheduler), ("heun", HeunDiscreteScheduler)])
def test_karras_solvers_step_as_diffusers_does_on_their_scaled_state(sampler, cls):
    x, eps = rand(2, 1, 8, 8), rand(2, 1, 8, 8, seed=1)
    theirs = diffusers_scheduler(cls, use_karras_sigmas=True)
    theirs.set_timesteps(5)
    sigma, sigma_next = (float(s) for s in theirs.sigmas[:2])
    state = theirs.step(eps, theirs.timesteps[0], x * math.sqrt(1 + sigma**2)).prev_sample
    if sampler == "heun":  # the correction, with the same estimate at the next time
        state = theirs.step(eps, theirs.timesteps[1], state).prev_sample
    expected = state / math.sqrt(1 + sigma_next**2)  # back to x_t
    assert torch.allclose(wrapped_first_step(sampler, 5, x, eps), expected, atol=1e-5)


def test_karras_times_sit_on_the_schedule_where_their_sigma_is():
    process = DDPM(SCHEDULE)
    solver = make_solver(process, "euler", 6)
    theirs = diffusers_scheduler(EulerDiscreteScheduler, use_karras_sigmas=True)
    theirs.set_timesteps(6)
    for t, sigma in zip(solver.times[:-1], theirs.sigmas[:-1].tolist(), strict=True):
        assert process.sigma(t / 300) == pytest.approx(sigma, rel=0.05)  # sigma() reads the nearest timestep
        assert math.sqrt((1 - process.abar(t)) / process.abar(t)) == pytest.approx(sigma, rel=1e-3)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_steps_are_diffusers_ddim_steps(eta):
    x, eps = rand(2, 1, 8, 8), rand(2, 1, 8, 8, seed=1)
    theirs = diffusers_scheduler(DDIMScheduler, timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False)
    theirs.set_timesteps(10)  # 300 / 10: diffusers' previous timestep (t - 30) is the next one on the grid
    ours = make_solver(DDPM(SCHEDULE), "ddim", 10, eta=eta)
    assert ours.times[:-1] == [float(t) for t in theirs.timesteps]
    noise = randn_like_per_sample(x, generators(7, 2))
    for i in (0, 5, 9):
        t = int(theirs.timesteps[i])
        out, _ = ours.step(lambda _x, _t: eps, x, i, generators(7, 2))
        expected = theirs.step(eps, t, x, eta=eta, variance_noise=noise).prev_sample
        assert torch.allclose(out, expected, atol=1e-5), f"step {i}"


def test_ddim_at_eta_one_is_the_strided_ancestral_step():
    process, x, eps = DDPM(SCHEDULE), rand(2, 1, 8, 8), rand(2, 1, 8, 8, seed=1)
    solver = make_solver(process, "ddim", 10, eta=1.0)  # trailing: 299, 269, ..., 29, then clean
    for i in (0, 4, 8):
        t, t_next = solver.times[i], solver.times[i + 1]
        ours, _ = solver.step(lambda _x, _t: eps, x, i, generators(3, 2))
        ancestral = process.step(x, eps, t, t_next, randn_like_per_sample(x, generators(3, 2)))
        assert torch.allclose(ours, ancestral, atol=1e-4), f"step {t} -> {t_next}"


# --- order of convergence of the solvers written here -------------------------------------------------------------


def observed_order(errors: list[float]) -> float:
    """The slope of log error over log step size, steps doubling."""
    return float(-np.polyfit(np.log2([2**k for k in range(len(errors))]), np.log2(errors), 1)[0])


@pytest.mark.parametrize(("sampler", "order"), [("euler", 1), ("heun", 2), ("midpoint", 2), ("ab2", 2)])
def test_flow_solvers_converge_at_their_order_on_gaussian_data(sampler, order):
    z = rand(64, 1, 2, 2).double()  # float64: second-order errors reach float32's rounding at 64 steps
    exact = MU + S * z  # the probability-flow map of N(0, 1) onto N(MU, S^2) is affine
    process = Flow()
    errors = [
        float((run(process, sampler, n, oracle(process, gaussian_velocity), z) - exact).abs().max())
        for n in (16, 32, 64, 128)
    ]
    # at least the order (midpoint reaches 3 on this problem: its leading error term cancels for a Gaussian)
    assert order - 0.2 <= observed_order(errors) <= order + 1.2, errors
    assert errors[-1] < (0.05 if order == 1 else 5e-4)


def test_ddim_converges_at_first_order_on_gaussian_data():
    process = DDPM(make_schedule("linear", 1000, 1e-4, 0.02))
    x_T = rand(64, 1, 2, 2).double()
    a = process.abar(999)
    exact = MU + S * (x_T - math.sqrt(a) * MU) / math.sqrt(a * S * S + 1 - a)  # the ODE's affine map, from t = 999
    errors = [
        float((run(process, "ddim", n, oracle(process, gaussian_eps), x_T, spacing="trailing") - exact).abs().max())
        for n in (25, 50, 100, 200)
    ]
    assert observed_order(errors) == pytest.approx(1.0, abs=0.3), errors


@pytest.mark.parametrize(("sampler", "bound"), [("dpmpp_2m", 0.02), ("unipc", 0.02), ("heun", 0.03), ("euler", 0.2)])
def test_the_wrapped_solvers_reach_the_exact_answer_at_their_order(sampler, bound):
    """At 40 steps from t = 999 the second-order solvers are within 0.02-0.03 of the exact answer, Euler (first
    order, as DDIM) within 0.13; the schedulers compute in float32, which floors their error near 1e-3."""
    process = DDPM(make_schedule("linear", 1000, 1e-4, 0.02))
    solver = make_solver(process, sampler, 40)
    x = rand(64, 1, 2, 2).double()
    a = process.abar(solver.times[0])
    exact = MU + S * (x - math.sqrt(a) * MU) / math.sqrt(a * S * S + 1 - a)
    out = sample_loop(solver, oracle(process, gaussian_eps), UNGUIDED, x, generators(0, 64))
    assert float((out - exact).abs().max()) < bound


# --- every solver in the loop -------------------------------------------------------------------------------------


def toy_predict(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    k = len(cond) // len(x)
    return (0.5 * x + 0.1 * t.view(-1, 1, 1, 1)).repeat(k, 1, 1, 1)


EVERY = [(False, name) for name in EPS] + [(True, name) for name in FLOW]


@pytest.mark.parametrize(("flow", "sampler"), EVERY)
def test_every_solver_keeps_the_inpainted_pixels_and_per_sample_seeds(flow, sampler):
    process = Flow() if flow else DDPM(SCHEDULE)
    steps = max(EPS[sampler].min_steps if not flow else FLOW[sampler].min_steps, 4)
    original = rand(3, 1, 8, 8).clamp(-1, 1)
    mask = torch.zeros(3, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1

    def sampled(rows: list[int]) -> torch.Tensor:  # row i: seed 1 + i, the known pixels of original[i]
        gens = [torch.Generator().manual_seed(1 + i) for i in rows]
        solver = make_solver(process, sampler, steps)
        x = start(process, solver.times, 0, gens, original[rows])
        known = [torch.Generator().manual_seed(99 + i) for i in rows]
        inpaint = Inpaint(process, original[rows], mask[rows], known)
        return sample_loop(solver, toy_predict, CFG(torch.zeros(len(rows)), None), x, gens, constrain=inpaint)

    batch = sampled([0, 1, 2])
    assert torch.isfinite(batch).all()
    kept = mask.expand_as(batch) == 0
    assert torch.allclose(batch[kept], original[kept], atol=1e-6)
    assert torch.allclose(sampled([1]), batch[1:2], atol=1e-5)  # a sample never depends on its batch-mates


@pytest.mark.parametrize(("flow", "sampler"), EVERY)
def test_every_solver_starts_mid_run_and_reports_each_step(flow, sampler):
    process = Flow() if flow else DDPM(SCHEDULE)
    solver = make_solver(process, sampler, 6)
    gens = generators(0, 2)
    x = start(process, solver.times, 2, gens, torch.zeros(2, 1, 4, 4), image=torch.zeros(2, 1, 4, 4))
    steps = []
    out = sample_loop(solver, toy_predict, CFG(torch.zeros(2), None), x, gens, on_step=steps.append, begin=2)
    assert [s.index for s in steps] == [1, 2, 3, 4] and steps[0].total == 4
    assert [s.t for s in steps] == solver.times[2:-1]
    assert torch.isfinite(out).all() and torch.isfinite(steps[0].preview()).all()


@pytest.mark.parametrize("sampler", [name for name in EPS if name != "ddpm"])
def test_clipping_holds_each_clean_estimate_in_range(sampler):
    process = clipped(DDPM(SCHEDULE), 0.0, 1.0)
    wild = lambda x, t, c: 5 * torch.ones_like(x)  # noqa: E731  (x0 far below 0 at every noise level)
    x = rand(2, 1, 4, 4)
    out = run(process, sampler, 8, wild, x)
    assert float(out.min()) >= -1e-4 and float(out.max()) <= 1 + 1e-4
