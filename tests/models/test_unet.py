from typing import Any

import pytest
import torch

from models.unet import CS180UNet, init_weights, set_memory_format

VARIANTS: dict[str, dict[str, Any]] = {
    "denoiser": dict(time_conditioned=False, num_classes=0),
    "time-add": dict(time_conditioned=True, num_classes=0, modulation="add"),
    "time-mul": dict(time_conditioned=True, num_classes=0, modulation="mul"),
    "class": dict(time_conditioned=True, num_classes=10),
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(seed: int = 0, **kwargs: object) -> CS180UNet:
    model: CS180UNet = CS180UNet(hidden=8, **kwargs)
    init_weights(model, _gen(seed))
    return model.eval()


def _inputs(model: CS180UNet, batch: int = 3) -> dict[str, torch.Tensor]:
    args = {"x": torch.randn(batch, 1, 28, 28, generator=_gen(1))}
    if model.config["time_conditioned"]:
        args["t"] = torch.rand(batch, generator=_gen(2))
    if model.config["num_classes"]:
        args["c"] = torch.randint(0, 10, (batch,), generator=_gen(3))
    return args


@pytest.mark.parametrize("name", VARIANTS)
def test_output_has_the_input_shape(name: str) -> None:
    model = _model(**VARIANTS[name])
    out = model(**_inputs(model))
    assert out.shape == (3, 1, 28, 28)
    assert torch.isfinite(out).all()


def test_hidden_widths_follow_the_figure() -> None:
    model = CS180UNet(hidden=8, time_conditioned=True, num_classes=10)
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, o.shape[1:]))
        for name in ("in_block", "down1", "down2", "flatten", "unflatten", "up1", "up2", "out_block")
    ]
    model(torch.zeros(2, 1, 28, 28), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    for hook in hooks:
        hook.remove()
    D = 8
    assert shapes == {
        "in_block": (D, 28, 28),
        "down1": (D, 14, 14),
        "down2": (2 * D, 7, 7),
        "flatten": (2 * D, 1, 1),
        "unflatten": (2 * D, 7, 7),
        "up1": (D, 14, 14),
        "up2": (D, 28, 28),
        "out_block": (D, 28, 28),
    }


def test_time_modulation_adds_or_multiplies() -> None:
    add, mul = _model(**VARIANTS["time-add"]), _model(**VARIANTS["time-mul"])
    assert add.state_dict().keys() == mul.state_dict().keys()
    mul.load_state_dict(add.state_dict())
    args = _inputs(add)
    assert not torch.allclose(add(**args), mul(**args))


def test_dropped_class_makes_the_output_independent_of_c() -> None:
    model = _model(**VARIANTS["class"])
    x, t = torch.randn(4, 1, 28, 28, generator=_gen(1)), torch.rand(4, generator=_gen(2))
    drop = torch.zeros(4)
    a = model(x, t, torch.tensor([0, 1, 2, 3]), drop)
    b = model(x, t, torch.tensor([9, 8, 7, 6]), drop)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, model(x, t), rtol=0, atol=0)  # c=None: unconditional
    kept = model(x, t, torch.tensor([0, 1, 2, 3]), torch.ones(4))
    assert not torch.allclose(kept, a)
    torch.testing.assert_close(kept, model(x, t, torch.tensor([0, 1, 2, 3])))  # no mask: keep every class


def test_mask_applies_per_item() -> None:
    model = _model(**VARIANTS["class"])
    x, t = torch.randn(2, 1, 28, 28, generator=_gen(1)), torch.rand(2, generator=_gen(2))
    c = torch.tensor([3, 5])
    mixed = model(x, t, c, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(mixed[0], model(x, t, c)[0])
    torch.testing.assert_close(mixed[1], model(x, t)[1])


def test_save_and_load_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = _model(**VARIANTS["class"])
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists()
    assert list(tmp_path.glob("*.safetensors"))
    loaded = CS180UNet.from_pretrained(tmp_path, low_cpu_mem_usage=False).eval()
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(model.config)
    args = _inputs(model)
    torch.testing.assert_close(loaded(**args), model(**args), rtol=0, atol=0)


def test_channels_last_gives_the_same_output() -> None:
    model = _model(**VARIANTS["class"])
    args = _inputs(model)
    expected = model(**args)
    set_memory_format(model, torch.channels_last)
    args["x"] = args["x"].contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model(**args), expected, rtol=1e-5, atol=1e-5)


def test_init_weights_depends_only_on_the_generator() -> None:
    a, b, c = _model(seed=0), _model(seed=0), _model(seed=1)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def test_wrong_conditioning_raises() -> None:
    with pytest.raises(ValueError, match="mul"):
        CS180UNet(hidden=8, time_conditioned=True, num_classes=10, modulation="mul")
    with pytest.raises(ValueError, match="modulation"):
        CS180UNet(hidden=8, modulation="film")
    x = torch.zeros(2, 1, 28, 28)
    with pytest.raises(ValueError, match="time-conditioned"):
        _model(**VARIANTS["time-add"])(x)
    with pytest.raises(ValueError, match="not time-conditioned"):
        _model()(x, torch.zeros(2))
    with pytest.raises(ValueError, match="not class-conditioned"):
        _model(**VARIANTS["time-add"])(x, torch.zeros(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="x must have shape"):
        _model()(torch.zeros(2, 3, 28, 28))


@pytest.mark.parametrize("name", ["time-add", "time-mul", "class"])
@pytest.mark.parametrize("k", [2, 3])
def test_k_conditions_per_image_equal_the_images_repeated(name: str, k: int) -> None:
    """The encoder runs once per image and the skips' share of each first convolution once: the same outputs as k
    full passes of the repeated images, branch-major."""
    model = _model(**VARIANTS[name])
    B = 4
    x = torch.randn(B, 1, 28, 28, generator=_gen(1))
    args: dict[str, torch.Tensor] = {"t": torch.rand(k * B, generator=_gen(2))}
    if model.config["num_classes"]:
        args["c"] = torch.randint(0, 10, (k * B,), generator=_gen(3))
        args["c_mask"] = (torch.arange(k * B) >= B).float()  # branch 0 unconditional
    expected = model(x.repeat(k, 1, 1, 1), **args)
    torch.testing.assert_close(model(x, **args), expected, rtol=1e-5, atol=1e-5)
    for j in range(k):  # row j B + i: image i under condition j
        one = {key: value[j * B : (j + 1) * B] for key, value in args.items()}
        torch.testing.assert_close(model(x, **one), expected[j * B : (j + 1) * B], rtol=1e-5, atol=1e-5)


def test_conditions_must_be_whole_branches() -> None:
    model = _model(**VARIANTS["class"])
    x = torch.zeros(2, 1, 28, 28)
    with pytest.raises(ValueError, match="k rows per image"):
        model(x, torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="c must be int64 labels of shape \\(4,\\)"):
        model(x, torch.zeros(4), torch.zeros(2, dtype=torch.long))
