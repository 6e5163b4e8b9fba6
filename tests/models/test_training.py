import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models.datasets import ImageDataset
from models.processes import DDPM, Flow
from models.schedules import linear_schedule
from models.train_config import OBJECTIVES, TrainConfig, TrainState, build_model, noise_process
from models.training import TrainingDiverged, _objective_loss, dataset_tensors, train
from models.unet import CS180UNet, DiffusersUNet, load_network


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
        train(build_model(config), images, labels, config, on_batch=kill, on_epoch=keep)
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
        on_batch=lambda e, i, n, loss: steps.append((e, i, n)),
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


def test_a_diverging_run_stops_with_the_reason() -> None:
    images, labels = _data(64)
    config = _config("flow", epochs=3, lr=1e12, grad_clip=None)
    states: list[TrainState] = []
    with pytest.raises(
        TrainingDiverged, match=r"loss became nan at epoch 1, step \d \(learning rate 1e\+12\): lower `lr`"
    ):
        train(build_model(config), images, labels, config, on_epoch=lambda e, s: states.append(s))
    assert issubclass(TrainingDiverged, ArithmeticError) and states == []


def test_a_loss_that_blows_up_but_stays_finite_is_divergence_too() -> None:
    images, labels = _data(64)
    config = _config("flow", epochs=3, lr=100.0, grad_clip=None)  # measured: 1.36, then 1e11, then ~1e6-1e9
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, step 2, [\d.e+]+ times its first value \(learning rate"):
        train(build_model(config), images, labels, config)
    calm = train(build_model(_config("flow", epochs=1)), images, labels, _config("flow", epochs=1))
    assert max(calm.step_losses) < 10 * calm.step_losses[0]  # an ordinary run is far from the factor


def test_throughput_is_reported() -> None:
    images, labels = _data(32)
    config = _config("ddpm", epochs=2)
    result = train(build_model(config), images, labels, config)
    assert result.num_images == 32 and len(result.epoch_seconds) == 2
    assert result.images_per_second == pytest.approx(64 / sum(result.epoch_seconds))


def _rgb(n: int = 16, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_unet2d_trains_on_rgb_with_every_objective(objective: str) -> None:
    images, labels = _rgb()
    config = _config(objective, arch="unet2d", num_classes=0 if objective == "denoiser" else 3, batch_size=8)
    model = build_model(config, in_channels=3, image_size=16)
    assert isinstance(model, DiffusersUNet)
    result = train(model, images, labels, config)
    assert len(result.step_losses) == 2 and all(np.isfinite(result.step_losses))
    t = torch.rand(2) if objective != "denoiser" else None
    c = labels[:2] if objective != "denoiser" else None
    assert result.ema(images[:2], t, c).shape == (2, 3, 16, 16)


def test_unet2d_drops_classes_to_its_null_embedding() -> None:
    config = _config("flow", arch="unet2d", num_classes=3)
    net = build_model(config, in_channels=3, image_size=8).eval()
    x, t = torch.rand(2, 3, 8, 8), torch.rand(2)
    with torch.no_grad():
        dropped = net(x, t, torch.tensor([0, 2]), torch.zeros(2))
        torch.testing.assert_close(dropped, net(x, t))  # no class = the null class
        assert not torch.allclose(net(x, t, torch.tensor([0, 2])), dropped)
    assert net.unet.class_embedding.num_embeddings == 4  # type: ignore[union-attr]
    with torch.no_grad():  # k conditions per image, as the guidance rules pass them: the image under each
        both = net(x, torch.cat([t, t]), torch.tensor([0, 2, 1, 1]), torch.tensor([1.0, 1.0, 0.0, 0.0]))
        torch.testing.assert_close(both[2:], dropped)
        torch.testing.assert_close(both[:2], net(x, t, torch.tensor([0, 2])))


def test_cs180_unet_trains_on_rgb_32() -> None:
    images, labels = _rgb(8, 32)
    config = _config("ddpm", num_classes=3, batch_size=8)
    result = train(build_model(config, in_channels=3, image_size=32), images, labels, config)
    assert np.isfinite(result.step_losses).all()


def test_schedule_and_loss_change_the_run() -> None:
    images, labels = _data(16)
    base = _config("ddpm")
    losses = {
        (schedule, loss): train(build_model(c), images, labels, c).step_losses[0]
        for schedule in ("linear", "cosine")
        for loss in ("l2", "l1")
        for c in [replace(base, schedule=schedule, loss=loss)]
    }
    assert len(set(losses.values())) == 4
    assert isinstance(noise_process(replace(base, schedule="cosine")), DDPM)
    cosine = noise_process(replace(base, schedule="cosine"))
    assert isinstance(cosine, DDPM) and float(cosine.schedule.betas[-1]) == pytest.approx(0.999)
    assert isinstance(noise_process(_config("flow")), Flow)
    with pytest.raises(ValueError, match="arch must be one of"):
        TrainConfig(arch="resnet")  # type: ignore[arg-type]


def test_loss_weights_scale_each_images_loss_by_its_timestep() -> None:
    images, labels = _data(16)
    config = _config("ddpm")
    net = build_model(config)
    abar = linear_schedule().alphas_cumprod

    def loss(weights: torch.Tensor | None) -> float:
        gen = torch.Generator().manual_seed(7)  # the same t, noise and label drops each time
        with torch.no_grad():
            return float(_objective_loss(net, images, labels, config, abar, weights, gen, True))

    plain = loss(None)
    assert loss(torch.ones(300)) == pytest.approx(plain, rel=1e-6)
    assert loss(torch.full((300,), 3.0)) == pytest.approx(3 * plain, rel=1e-6)
    assert loss(torch.arange(300.0)) != pytest.approx(loss(torch.arange(300.0).flip(0)), rel=1e-3)


def test_loss_weight_changes_the_run_and_is_checked() -> None:
    images, labels = _data(16)
    firsts = {
        w: train(build_model(c), images, labels, c).step_losses[0]
        for w in ("uniform", "v", "min-snr")
        for c in [_config("ddpm", loss_weight=w)]
    }
    assert len(set(firsts.values())) == 3 and all(np.isfinite(list(firsts.values())))
    with pytest.raises(ValueError, match="loss_weight must be one of"):
        TrainConfig(loss_weight="snr")  # type: ignore[arg-type]


def test_unet2d_resumes_exactly_and_saves(tmp_path: Path) -> None:
    images, labels = _rgb()
    config = _config("ddpm", arch="unet2d", num_classes=3, batch_size=8, epochs=2)
    straight = train(build_model(config, 3, 16), images, labels, config)
    states: list[TrainState] = []

    def stop(epoch: int, step: int, steps: int, loss: float) -> None:
        if epoch == 1:
            raise _Killed

    with pytest.raises(_Killed):
        train(build_model(config, 3, 16), images, labels, config, on_batch=stop, on_epoch=lambda e, s: states.append(s))
    resumed = train(build_model(replace(config, seed=5), 3, 16), images, labels, config, state=states[0])
    _assert_same_weights(resumed.ema.state_dict(), straight.ema.state_dict(), atol=1e-6)
    resumed.ema.save_pretrained(tmp_path / "net")
    loaded = load_network(tmp_path / "net")
    assert isinstance(loaded, DiffusersUNet) and not loaded.training
    _assert_same_weights(loaded.state_dict(), resumed.ema.state_dict())
    build_model(_config("flow")).save_pretrained(tmp_path / "cs180")
    assert isinstance(load_network(tmp_path / "cs180"), CS180UNet)


def test_dataset_tensors_are_channels_first_in_unit_range() -> None:
    gray = ImageDataset(np.full((2, 4, 4), 255, np.uint8), np.array([0, 1]), ("a", "b"))
    rgb = ImageDataset(np.zeros((3, 4, 4, 3), np.uint8), np.zeros(3, np.int64), ())
    rgb.images[0, 1, 2] = (0, 51, 255)
    images, labels = dataset_tensors(gray)
    assert images.shape == (2, 1, 4, 4) and images.dtype == torch.float32 and images.max() == 1.0
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 1]
    images, _ = dataset_tensors(rgb)
    assert images.shape == (3, 3, 4, 4) and images[0, :, 1, 2].tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_fused_adam_follows_the_default_up_to_rounding() -> None:
    images, labels = _data(48)
    config = _config("flow")
    plain = train(build_model(config), images, labels, config)
    fused = train(build_model(config), images, labels, replace(config, fused_adam=True))
    assert fused.step_losses == pytest.approx(plain.step_losses, rel=1e-4)
    # Not every weight: a convolution's bias before BatchNorm gets a zero gradient up to rounding, which Adam
    # normalises to steps of size lr, so those follow the rounding, not the data.
    torch.testing.assert_close(fused.model.out.weight, plain.model.out.weight, rtol=0, atol=1e-4)
