"""The math of distillation (models/distill.py): reflow's pairs and targets, progressive's grid and target."""

import math

import torch

from models.distill import (
    Round,
    ddim_step,
    grid,
    pair_labels,
    pair_noise,
    progressive_target,
    reflow_pairs,
    reflow_target,
    rounds,
    straight,
    teacher_two_steps,
    trailing_timesteps,
)
from models.predictors import UNCONDITIONAL
from models.processes import CLEAN, DDPM
from models.schedules import make_schedule
from models.solvers import make_solver

SCHEDULE = make_schedule("linear", 300, 1e-4, 0.02)


def test_pair_labels_cycle_the_classes_with_the_unguided_last() -> None:
    labels = pair_labels(20, 10, 0.1)
    assert labels[:18].tolist() == [*range(10), *range(8)]
    assert labels[18:].tolist() == [UNCONDITIONAL, UNCONDITIONAL]
    assert (pair_labels(5, 0, 0.1) == UNCONDITIONAL).all()


def test_pair_noise_of_a_pair_does_not_depend_on_how_many_are_drawn() -> None:
    assert torch.equal(pair_noise(3, (1, 4, 4), 7), pair_noise(5, (1, 4, 4), 7)[:3])


def test_reflow_pairs_solve_a_known_velocity_field_and_its_line_has_that_target() -> None:
    """A teacher whose velocity is x1* - x (toward a fixed point) reaches x1* - (1 - 1/n)^n... by Euler; the pairs
    are what the loop makes, guided or not, and the line's velocity is x1 - z at every t."""
    target = torch.full((1, 2, 2), 0.5)

    def predict(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        k = cond.shape[0] // x.shape[0]
        return (target - x).repeat(k, 1, 1, 1)

    z = pair_noise(6, (1, 2, 2), 0)
    labels = pair_labels(6, 3, 0.34)  # 4 guided, 2 unguided: two chunks of the teacher
    steps = 4
    pairs = reflow_pairs(predict, z, labels, steps, guidance=5.0, batch=4)
    # Euler on dx/dt = (x1* - x) / (1 - t) would be exact; on dx/dt = x1* - x each step keeps (1 - 1/steps) of the gap
    expected = target + (z - target) * (1 - 1 / steps) ** steps
    torch.testing.assert_close(pairs.images, expected)
    x1, t = pairs.images, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 0.3])
    x_t = straight(z, x1, t)
    torch.testing.assert_close(x_t[0], z[0])
    torch.testing.assert_close(x_t[4], x1[4])
    u = reflow_target(z, x1)
    torch.testing.assert_close(x_t + (1 - t.view(-1, 1, 1, 1)) * u, x1)  # one Euler step from any t lands on x1


def test_the_student_grid_is_the_services_ddim_trailing_timesteps() -> None:
    for steps in (1, 2, 4, 8, 16):
        times = grid(SCHEDULE.betas, steps)
        assert times[-1] == CLEAN and times[0] == 299
        solver = make_solver(DDPM(SCHEDULE), "ddim", steps=steps, spacing="trailing")
        assert [int(t) for t in solver.times] == times
    assert trailing_timesteps(SCHEDULE.betas, 4) == [299, 224, 149, 74]
    assert grid(SCHEDULE.betas, 16)[::2] == grid(SCHEDULE.betas, 8)  # nested: a round halves the steps exactly


def test_rounds_halve_to_the_target() -> None:
    assert rounds(64, 2) == 5 and rounds(4, 2) == 1
    for bad in ((6, 2), (2, 2), (3, 2)):
        try:
            rounds(*bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_the_progressive_target_reproduces_the_teachers_two_ddim_steps_in_one() -> None:
    """On a toy teacher (eps depends on x and t nonlinearly), one DDIM step with the target noise from x_t lands
    exactly where the teacher's two steps land, for every step of the student's grid, the last one to the clean
    image included."""
    gen = torch.Generator().manual_seed(0)
    abar = SCHEDULE.alphas_cumprod.double()

    def toy(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None, c_mask: torch.Tensor | None) -> torch.Tensor:
        return torch.tanh(x) * (1 + t.view(-1, 1, 1, 1)) + 0.1 * x**2

    steps = 4
    times, fine = torch.tensor(grid(SCHEDULE.betas, steps)), torch.tensor(grid(SCHEDULE.betas, 2 * steps))
    i = torch.arange(steps)  # every step of the grid
    x = torch.randn(steps, 1, 3, 3, generator=gen, dtype=torch.float64)
    t, t_mid, t_far = times[i], fine[2 * i + 1], times[i + 1]
    x_far = teacher_two_steps(toy, x, t, t_mid, t_far, abar, None, None, 1.0, 300)
    a = torch.tensor([float(abar[int(s)]) if s != CLEAN else 1.0 for s in t.tolist()], dtype=torch.float64)
    a_far = torch.tensor([float(abar[int(s)]) if s != CLEAN else 1.0 for s in t_far.tolist()], dtype=torch.float64)
    eps = progressive_target(x, x_far, a, a_far)
    torch.testing.assert_close(ddim_step(x, eps, a, a_far), x_far)
    assert t_far[-1] == CLEAN and math.isclose(float(a_far[-1]), 1.0)


def test_a_round_guides_the_class_rows_only() -> None:
    """CFG at scale s on the rows with c_mask 1; the dropped rows get the unconditional estimate."""

    def toy(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None, c_mask: torch.Tensor | None) -> torch.Tensor:
        assert c is not None and c_mask is not None
        return x + (c * c_mask).view(-1, 1, 1, 1).to(x.dtype)

    abar = SCHEDULE.alphas_cumprod.double()
    r = Round.of(toy, SCHEDULE.betas, 2, guidance=3.0)
    x = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    c, c_mask = torch.tensor([1, 1]), torch.tensor([1.0, 0.0], dtype=torch.float64)
    i = torch.tensor([1, 1])  # the last step: t -> clean
    guided = teacher_two_steps(
        toy, x, r.times[i], r.teacher_times[2 * i + 1], r.times[i + 1], abar, c, c_mask, 3.0, 300
    )
    plain = teacher_two_steps(toy, x, r.times[i], r.teacher_times[2 * i + 1], r.times[i + 1], abar, c, c_mask, 1.0, 300)
    assert not torch.allclose(guided[0], plain[0])  # the class row: guided
    torch.testing.assert_close(guided[1], plain[1])  # the dropped row: unconditional either way
