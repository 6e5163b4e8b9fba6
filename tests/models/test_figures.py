import io
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from models.figures import (
    SIGMAS,
    class_samples,
    denoised_figure,
    is_frame,
    loss_figure,
    mean_image,
    noising_figure,
    ood_figure,
    pure_noise_figure,
    uncond_samples,
)
from models.processes import DDPM, Flow
from models.sampling import Step
from models.schedules import linear_schedule
from models.train_config import TrainConfig, build_model
from models.unet import Net

CELL = 28 + 2  # a 28 x 28 tile and make_grid's padding of 2


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: on a busy two-core machine two threads make them slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def net(objective: str, num_classes: int = 0) -> Net:
    return build_model(TrainConfig(objective=objective, hidden=8, num_classes=num_classes)).eval()  # type: ignore[arg-type]


def digits(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(3))  # (n, 1, 28, 28) in [0, 1]


def tile(grid: torch.Tensor, row: int, col: int) -> torch.Tensor:
    return grid[:, 2 + row * CELL : row * CELL + CELL, 2 + col * CELL : col * CELL + CELL]  # (C, 28, 28)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_noising_figure_has_a_row_per_image_and_a_column_per_sigma() -> None:
    x = digits(2)
    grid = noising_figure(x, generator=gen())
    assert grid.shape == (1, 2 * CELL + 2, len(SIGMAS) * CELL + 2)
    assert grid.min() >= 0 and grid.max() <= 1
    torch.testing.assert_close(tile(grid, 1, 0), x[1])  # sigma 0: the clean image
    eps = torch.randn(x.shape, generator=gen())
    torch.testing.assert_close(tile(grid, 0, 3), (x[0] + 0.5 * eps[0]).clamp(0, 1))  # z = x + sigma eps
    assert torch.equal(grid, noising_figure(x, generator=gen()))
    assert not torch.equal(grid, noising_figure(x, generator=gen(1)))


def test_denoised_figure_rows_are_clean_noisy_denoised() -> None:
    denoiser, x = net("denoiser"), digits(3)
    grid = denoised_figure(denoiser, x, 0.5, gen())
    assert grid.shape == (1, 3 * CELL + 2, 3 * CELL + 2)
    torch.testing.assert_close(tile(grid, 0, 2), x[2])
    z = x + 0.5 * torch.randn(x.shape, generator=gen())
    torch.testing.assert_close(tile(grid, 1, 0), z[0].clamp(0, 1))
    with torch.no_grad():
        torch.testing.assert_close(tile(grid, 2, 1), denoiser(z)[1].clamp(0, 1))
    assert torch.equal(grid, denoised_figure(denoiser, x, 0.5, gen()))


def test_ood_figure_puts_each_noisy_row_over_its_denoised_row() -> None:
    denoiser, x = net("denoiser"), digits(2)
    sigmas = (0.0, 0.5, 1.0)
    grid = ood_figure(denoiser, x, sigmas, gen())
    assert grid.shape == (1, 4 * CELL + 2, 3 * CELL + 2)
    torch.testing.assert_close(tile(grid, 2, 0), x[1])  # image 1's noisy row, sigma 0
    with torch.no_grad():
        torch.testing.assert_close(tile(grid, 3, 0), denoiser(x[1:]).clamp(0, 1)[0], atol=1e-5, rtol=0)
    assert grid.min() >= 0 and grid.max() <= 1


def test_pure_noise_figure_and_mean_image() -> None:
    denoiser = net("denoiser")
    grid = pure_noise_figure(denoiser, 4, gen())
    assert grid.shape == (1, 2 * CELL + 2, 4 * CELL + 2)
    assert torch.equal(grid, pure_noise_figure(denoiser, 4, gen(), (1, 28, 28)))
    x = digits(5)
    mean = mean_image(x)
    assert mean.shape == (1, 28, 28)
    torch.testing.assert_close(mean[0, 3, 4], x[:, 0, 3, 4].mean())


def test_class_samples_are_a_column_per_class_and_repeat_for_a_seed() -> None:
    model, process = net("ddpm", num_classes=10), DDPM(linear_schedule(300))
    times = process.times(steps=4)
    seen: list[int] = []
    images, frames = class_samples(
        model, process, times, 3, per_class=2, seed=5, on_step=lambda s: seen.append(s.index)
    )
    assert images.shape == (6, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert seen == [1, 2, 3, 4] and len(frames) == 4  # short runs keep every step
    assert frames[0].shape == (1, 2 * CELL + 2, 3 * CELL + 2)
    again, _ = class_samples(model, process, times, 3, per_class=2, seed=5)
    assert torch.equal(images, again)
    other, _ = class_samples(model, process, times, 3, per_class=2, seed=6)
    assert not torch.equal(images, other)


def test_uncond_samples_keep_the_gif_frames_the_worker_keeps() -> None:
    model, process = net("flow"), Flow(default_steps=30)
    images, frames = uncond_samples(model, process, process.times(), n=3, seed=1)
    assert images.shape == (3, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert len(frames) == 10
    assert [i for i in range(1, 31) if is_frame(i, 30)] == [1, 20, *range(23, 31)]


def test_a_hook_that_raises_stops_sampling() -> None:
    class Canceled(Exception):
        pass

    def cancel(step: Step) -> None:
        if step.index == 2:
            raise Canceled

    model, process = net("flow"), Flow(default_steps=5)
    with pytest.raises(Canceled):
        uncond_samples(model, process, process.times(), n=2, on_step=cancel)


def test_loss_figure_is_a_png() -> None:
    losses = list(np.exp(-np.linspace(0, 3, 90)) + 0.01)
    png = loss_figure(losses, steps_per_epoch=9, title="flow, mnist-5k")
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (640, 400)
        assert len(np.unique(np.asarray(image.convert("L")))) > 10  # something is drawn
    assert loss_figure([0.5], 1, "one step")[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="at least one loss"):
        loss_figure([], 10, "nothing")
