"""The inference-time rewrites of a UNet compute what the UNet computes, up to float rounding."""

import torch
from torch import nn

from models.inference import InPlaceGELU, chunked, fold_batchnorm, for_inference, gelu_in_place
from models.predictors import labels, unet_predictor
from models.unet import CS180UNet, init_weights


def trained_looking_unet() -> CS180UNet:
    """Random weights and random BatchNorm statistics, so folding has something to fold."""
    net = CS180UNet(hidden=8, time_conditioned=True, num_classes=10)
    g = torch.Generator().manual_seed(0)
    init_weights(net, g)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()


def inputs(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 28, 28, generator=g)
    t = torch.rand(n, generator=g)
    cond = torch.cat([torch.arange(n // 2) % 10, labels(None, n - n // 2)])
    return x, t, cond


@torch.inference_mode()
def test_folding_batchnorm_keeps_the_outputs_and_removes_every_batchnorm() -> None:
    net = trained_looking_unet()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    x, t, cond = inputs(6)
    expected = unet_predictor(net)(x, t, cond)
    assert torch.allclose(unet_predictor(folded)(x, t, cond), expected, atol=1e-5)
    fast = for_inference(net, torch.device("cpu"))
    assert torch.allclose(unet_predictor(fast)(x, t, cond), expected, atol=1e-5)


@torch.inference_mode()
def test_chunked_prediction_equals_one_pass() -> None:
    predict = unet_predictor(trained_looking_unet())
    x, t, cond = inputs(7)
    whole = predict(x, t, cond)
    assert torch.allclose(chunked(predict, 3)(x, t, cond), whole, atol=1e-6)  # chunks of 3, 3 and 1
    assert chunked(predict, None) is predict


@torch.inference_mode()
def test_chunked_prediction_keeps_each_images_conditions_together() -> None:
    predict = unet_predictor(trained_looking_unet())
    x, t, _ = inputs(7)
    cond = torch.cat([torch.arange(7) % 10, labels(None, 7)])  # CFG: every image conditional and unconditional
    whole = predict(x, t, cond)
    assert whole.shape == (14, 1, 28, 28)
    assert torch.allclose(chunked(predict, 6)(x, t, cond), whole, atol=1e-6)  # 3 images (6 rows) a pass
    assert torch.allclose(chunked(predict, 1)(x, t, cond), whole, atol=1e-6)  # never less than one image
    repeated = unet_predictor(trained_looking_unet())
    separately = torch.cat([repeated(x, t, cond[:7]), repeated(x, t, cond[7:])])
    assert torch.allclose(whole, separately, atol=1e-5)


@torch.inference_mode()
def test_in_place_gelus_give_the_same_bits_and_never_overwrite_an_input() -> None:
    net = fold_batchnorm(trained_looking_unet())
    x, t, cond = inputs(6)
    expected = unet_predictor(net)(x, t, cond)
    fast = gelu_in_place(fold_batchnorm(trained_looking_unet()))
    assert not any(type(m) is nn.GELU for m in fast.modules())
    assert sum(isinstance(m, InPlaceGELU) for m in fast.modules()) == 22
    x_before = x.clone()
    assert torch.equal(unet_predictor(fast)(x, t, cond), expected)
    assert torch.equal(x, x_before)
    first = gelu_in_place(nn.Sequential(nn.Identity(), nn.GELU(), nn.Linear(3, 3)))  # the GELU would see the input
    assert type(first[1]) is nn.GELU
    y = torch.randn(2, 3)
    y_before = y.clone()
    first(y)
    assert torch.equal(y, y_before)


def test_in_place_gelus_keep_their_gradient_when_one_is_recorded() -> None:
    layer = nn.Sequential(nn.Linear(3, 3), InPlaceGELU())
    x = torch.randn(4, 3)
    layer(x).sum().backward()
    grad = layer[0].weight.grad
    reference = nn.Sequential(nn.Linear(3, 3), nn.GELU())
    reference.load_state_dict(layer.state_dict())
    reference(x).sum().backward()
    assert grad is not None and torch.allclose(grad, reference[0].weight.grad)
