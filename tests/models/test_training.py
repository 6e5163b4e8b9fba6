import io
from dataclasses import replace

import pytest
import torch

from models.training import OBJECTIVES, TrainConfig, TrainState, build_model, train


def _data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 1, 28, 28, generator=g) > 0.8).float()  # (N, 1, 28, 28) in [0, 1]
    return images, torch.randint(0, 10, (n,), generator=g)


def _config(objective: str, **kwargs: object) -> TrainConfig:
    num_classes = 0 if objective == "denoiser" else 10
    base = TrainConfig(objective=objective, epochs=1, batch_size=16, hidden=8, num_classes=num_classes)  # type: ignore[arg-type]
    return replace(base, **kwargs)  # type: ignore[arg-type]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_loss_decreases_on_a_fixed_batch(objective: str) -> None:
    images, labels = _data(16)
    config = _config(objective, epochs=30, lr=3e-3, p_uncond=0.0)  # one batch of 16, 30 steps
    result = train(build_model(config), images, labels, config)
    losses = result.step_losses
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.85 * first, (first, last)


def test_same_seed_gives_the_same_weights() -> None:
    images, labels = _data()
    config = _config("flow")
    a = train(build_model(config), images, labels, config)
    b = train(build_model(config), images, labels, config)
    _assert_same_weights(a.model.state_dict(), b.model.state_dict())
    _assert_same_weights(a.ema.state_dict(), b.ema.state_dict())
    assert a.step_losses == b.step_losses
    other = replace(config, seed=1)
    c = train(build_model(other), images, labels, other)
    assert not torch.equal(a.model.out.weight, c.model.out.weight)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("objective", ["ddpm", "flow"])
def test_resume_from_an_epoch_state_equals_a_straight_run(objective: str) -> None:
    images, labels = _data()
    config = _config(objective, epochs=2)
    straight = train(build_model(config), images, labels, config)

    saved: list[bytes] = []

    def keep(epoch: int, state: TrainState) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)  # what a worker would write to its checkpoint store
        saved.append(buffer.getvalue())

    def kill(epoch: int, step: int, steps: int, loss: float) -> None:
        if epoch == 1:
            raise _Killed

    with pytest.raises(_Killed):
        train(build_model(config), images, labels, config, on_step=kill, on_epoch=keep)
    assert len(saved) == 1
    state = torch.load(io.BytesIO(saved[0]), weights_only=True)
    assert state["epoch"] == 1 and state["step"] == 4
    fresh = build_model(replace(config, seed=7))  # the state, not the init, decides
    resumed = train(fresh, images, labels, config, state=state)
    _assert_same_weights(resumed.model.state_dict(), straight.model.state_dict(), atol=1e-6)
    _assert_same_weights(resumed.ema.state_dict(), straight.ema.state_dict(), atol=1e-6)
    assert resumed.step_losses == pytest.approx(straight.step_losses, abs=1e-6)
    assert len(resumed.epoch_losses) == 2


def test_ema_differs_from_the_raw_weights() -> None:
    images, labels = _data()
    config = _config("ddpm", ema_decay=0.9)
    result = train(build_model(config), images, labels, config)
    assert result.ema is not result.model
    assert not torch.equal(result.ema.out.weight, result.model.out.weight)
    assert not any(p.requires_grad for p in result.ema.parameters())


def test_hooks_see_every_step_and_epoch() -> None:
    images, _ = _data(40)
    config = _config("denoiser", epochs=2)
    steps: list[tuple[int, int, int]] = []
    epochs: list[int] = []
    result = train(
        build_model(config),
        images,
        None,
        config,
        on_step=lambda e, i, n, loss: steps.append((e, i, n)),
        on_epoch=lambda e, state: epochs.append(state["epoch"]),
    )
    assert steps == [(e, i, 3) for e in range(2) for i in range(3)]  # 40 images, batches of 16: 16, 16, 8
    assert epochs == [1, 2]
    assert len(result.epoch_losses) == 2 and len(result.epoch_seconds) == 2


def test_bf16_and_channels_last_train() -> None:
    images, labels = _data(32)
    config = _config("flow", bf16=True, channels_last=True)
    result = train(build_model(config), images, labels, config)
    assert all(torch.isfinite(torch.tensor(result.step_losses)))
    out = result.ema(images[:2], torch.rand(2), labels[:2])
    assert out.shape == (2, 1, 28, 28)


def test_objective_and_model_must_agree() -> None:
    images, labels = _data(16)
    with pytest.raises(ValueError, match="time_conditioned"):
        train(build_model(_config("denoiser")), images, labels, _config("flow"))
    with pytest.raises(ValueError, match="objective"):
        TrainConfig(objective="score")  # type: ignore[arg-type]
