"""The CS180 UNet family (part B, figures 1, 2, 8 and 9): the single-step denoiser, DDPM and flow matching models.

One network, configured by what it is conditioned on:

- `time_conditioned=False, num_classes=0`: the unconditional UNet of part B 1.1, `forward(x)`.
- `time_conditioned=True`: two FCBlocks embed t (normalised to [0, 1]) and modulate the unflattened bottleneck
  (2D, 7, 7) and the output of the first UpBlock (D, 14, 14). `modulation="add"` is the DDPM spec
  (`unflatten + t1`, `up1 + t2`), `"mul"` the flow matching spec's time-only UNet (`unflatten * t1`, `up1 * t2`).
- `num_classes > 0`: two more FCBlocks embed the one-hot class and scale the same tensors, as both specs'
  class-conditioned UNets do: `unflatten = c1 * unflatten + t1`, `up1 = c2 * up1 + t2`. A class whose mask is 0
  becomes the zero vector (dropped for classifier-free guidance), and so does every class when `c` is None.

`CS180UNet` is a diffusers `ModelMixin`, so `save_pretrained` / `from_pretrained` write and read safetensors plus a
config.json. Weights drawn by the constructor come from the global RNG, as in any PyTorch module; `init_weights`
re-draws them all from an explicit generator (what training does).

`DiffusersUNet` puts diffusers' `UNet2DModel` (ResNet blocks, self-attention, sinusoidal time embedding: the DDPM
paper's network, for RGB image folders) behind the same call and config keys, so one training loop and one predictor
drive both; `load_network` reads a saved network of either kind.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

MODULATIONS = ("add", "mul")


class Conv(nn.Sequential):
    """(1) Conv2d(3, 1, 1) + BN + GELU: changes channels, keeps H and W."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.GELU())


class DownConv(nn.Sequential):
    """(2) Conv2d(3, 2, 1) + BN + GELU: halves H and W."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 3, 2, 1), nn.BatchNorm2d(c_out), nn.GELU())


class UpConv(nn.Sequential):
    """(3) ConvTranspose2d(4, 2, 1) + BN + GELU: doubles H and W."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.GELU())


class Flatten(nn.Sequential):
    """(4) AvgPool(7) + GELU: (D, 7, 7) -> (D, 1, 1)."""

    def __init__(self, size: int) -> None:
        super().__init__(nn.AvgPool2d(size), nn.GELU())


class Unflatten(nn.Sequential):
    """(5) ConvTranspose2d(7, 7, 0) + BN + GELU: (D, 1, 1) -> (D, 7, 7)."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__(nn.ConvTranspose2d(channels, channels, size, size, 0), nn.BatchNorm2d(channels), nn.GELU())


class ConvBlock(nn.Sequential):
    """(7) Conv + Conv."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(Conv(c_in, c_out), Conv(c_out, c_out))


class DownBlock(nn.Sequential):
    """(8) DownConv + ConvBlock."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(DownConv(c_in, c_out), ConvBlock(c_out, c_out))


class UpBlock(nn.Sequential):
    """(9) UpConv + ConvBlock."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(UpConv(c_in, c_out), ConvBlock(c_out, c_out))


class FCBlock(nn.Sequential):
    """(10) Linear(F_in, F_out) + GELU + Linear(F_out, F_out): embeds a conditioning vector."""

    def __init__(self, f_in: int, f_out: int) -> None:
        super().__init__(nn.Linear(f_in, f_out), nn.GELU(), nn.Linear(f_out, f_out))


class CS180UNet(ModelMixin, ConfigMixin):  # type: ignore[misc]  # the two bases type config_name differently
    """The UNet of figures 1 and 8; `self.config` holds the constructor's arguments (saved as config.json)."""

    @register_to_config  # type: ignore[untyped-decorator]
    def __init__(
        self,
        in_channels: int = 1,  # C: image channels in and out (1 for MNIST)
        hidden: int = 64,  # D: hidden channels (the spec: 128 for the denoiser, 64 for DDPM and flow)
        time_conditioned: bool = False,  # embed t (normalised to [0, 1]) with fc1_t, fc2_t
        num_classes: int = 0,  # one-hot class conditioning with fc1_c, fc2_c; 0 = none (10 for MNIST)
        modulation: str = "add",  # how t modulates a time-only UNet: "add" (DDPM spec) or "mul" (flow spec)
        image_size: int = 28,  # H = W; two downsamplings make the (size / 4)^2 bottleneck (7 x 7)
    ) -> None:
        super().__init__()
        if modulation not in MODULATIONS:
            raise ValueError(f"modulation must be one of {MODULATIONS}, got {modulation!r}")
        if modulation == "mul" and num_classes > 0:
            raise ValueError("modulation 'mul' is the time-only flow UNet; class-conditioned UNets use c * h + t")
        if image_size % 4 != 0:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        if min(in_channels, hidden) < 1 or num_classes < 0:
            raise ValueError(f"need in_channels, hidden >= 1 and num_classes >= 0, got {in_channels, hidden}")
        C, D, S = in_channels, hidden, image_size // 4
        self.in_block = ConvBlock(C, D)  # (B, D, 28, 28)
        self.down1 = DownBlock(D, D)  # (B, D, 14, 14)
        self.down2 = DownBlock(D, 2 * D)  # (B, 2D, 7, 7)
        self.flatten = Flatten(S)  # (B, 2D, 1, 1)
        self.unflatten = Unflatten(2 * D, S)  # (B, 2D, 7, 7)
        self.up1 = UpBlock(4 * D, D)  # (B, D, 14, 14)  from concat(down2, unflatten)
        self.up2 = UpBlock(2 * D, D)  # (B, D, 28, 28)  from concat(down1, up1)
        self.out_block = ConvBlock(2 * D, D)  # (B, D, 28, 28)  from concat(in_block, up2)
        self.out = nn.Conv2d(D, C, 3, 1, 1)  # (B, C, 28, 28)
        self.fc1_t = FCBlock(1, 2 * D) if time_conditioned else None
        self.fc2_t = FCBlock(1, D) if time_conditioned else None
        self.fc1_c = FCBlock(num_classes, 2 * D) if num_classes > 0 else None
        self.fc2_c = FCBlock(num_classes, D) if num_classes > 0 else None

    def _embed_class(self, x: Tensor, c: Tensor | None, c_mask: Tensor | None, rows: int) -> Tensor:
        """The masked one-hot class vector (M, K); all zeros where unconditional."""
        K = self.config["num_classes"]
        if c is None:
            if c_mask is not None:
                raise ValueError("c_mask was given without c")
            return x.new_zeros(rows, K)
        if c.shape != (rows,) or c.dtype != torch.long:
            raise ValueError(f"c must be int64 labels of shape ({rows},), got {c.dtype} {tuple(c.shape)}")
        onehot = F.one_hot(c, K).to(x.dtype)  # (M, K)
        if c_mask is None:
            return onehot
        if c_mask.shape != (rows,):
            raise ValueError(f"c_mask must have shape ({rows},), got {tuple(c_mask.shape)}")
        return onehot * c_mask.to(x.dtype)[:, None]  # (M, K)

    def _modulate(self, h: Tensor, t_emb: Tensor | None, c_emb: Tensor | None) -> Tensor:
        """h (M, F, H, W) scaled by the class embedding, then shifted (add) or scaled (mul) by the time one."""
        if c_emb is not None:
            h = c_emb[:, :, None, None] * h  # c * h
        if t_emb is not None:
            t_emb = t_emb[:, :, None, None]  # (M, F, 1, 1)
            h = h * t_emb if self.config["modulation"] == "mul" else h + t_emb
        return h

    def forward(
        self, x: Tensor, t: Tensor | None = None, c: Tensor | None = None, c_mask: Tensor | None = None
    ) -> Tensor:
        """x (B, C, H, W); t (M,) float in [0, 1]; c (M,) int64 labels; c_mask (M,) 1 = keep the class, 0 = drop.

        M = B, or k B to run each image under k conditions (branches: CFG's conditional and unconditional, ...):
        row j B + i is image i under condition j, and so is row j B + i of the output (M, C, H, W). No condition
        reaches the encoder, so it runs once per image, not once per branch (`_skip_block`).
        """
        C, S = self.config["in_channels"], self.config["image_size"]
        if x.ndim != 4 or x.shape[1:] != (C, S, S):
            expected = f"(B, {C}, {S}, {S})"
            raise ValueError(f"x must have shape {expected}, got {tuple(x.shape)}")
        M = _rows(x.shape[0], t, c)
        t_emb1 = t_emb2 = c_emb1 = c_emb2 = None
        if self.fc1_t is not None and self.fc2_t is not None:
            if t is None or t.shape != (M,) or not t.is_floating_point():
                got = None if t is None else f"{t.dtype} {tuple(t.shape)}"
                raise ValueError(f"this UNet is time-conditioned: t must be float of shape ({M},), got {got}")
            tt = t.to(x.dtype)[:, None]  # (M, 1)
            t_emb1, t_emb2 = self.fc1_t(tt), self.fc2_t(tt)  # (M, 2D), (M, D)
        elif t is not None:
            raise ValueError("this UNet is not time-conditioned; got t")
        if self.fc1_c is not None and self.fc2_c is not None:
            onehot = self._embed_class(x, c, c_mask, M)  # (M, K)
            c_emb1, c_emb2 = self.fc1_c(onehot), self.fc2_c(onehot)  # (M, 2D), (M, D)
        elif c is not None or c_mask is not None:
            raise ValueError("this UNet is not class-conditioned; got c or c_mask")

        h0 = self.in_block(x)  # (B, D, 28, 28)
        h1 = self.down1(h0)  # (B, D, 14, 14)
        h2 = self.down2(h1)  # (B, 2D, 7, 7)
        u = self.unflatten(self.flatten(h2))  # (B, 2D, 7, 7)
        u = self._modulate(u.repeat(M // x.shape[0], 1, 1, 1), t_emb1, c_emb1)  # (M, 2D, 7, 7) c1 * unflatten + t1
        u1 = _skip_block(self.up1, h2, u)  # (M, D, 14, 14)  up1(concat(down2, unflatten))
        u1 = self._modulate(u1, t_emb2, c_emb2)  # up1 = c2 * up1 + t2
        u2 = _skip_block(self.up2, h1, u1)  # (M, D, 28, 28)
        h = _skip_block(self.out_block, h0, u2)  # (M, D, 28, 28)
        out: Tensor = self.out(h)  # (M, C, 28, 28)
        return out


def branch_count(images: int, rows: int) -> int:
    """k, the conditions each image runs under, when `rows` conditions come with `images` images."""
    k, rest = divmod(rows, images)
    if rest or not k:
        raise ValueError(f"conditions must have k rows per image (k >= 1): got {rows} rows for {images} images")
    return k


def _rows(B: int, t: Tensor | None, c: Tensor | None) -> int:
    """M, the rows of the conditions: B, or k B for k conditions of each image."""
    rows = len(t) if t is not None else len(c) if c is not None else B
    return B * branch_count(B, rows)


def _skip_block(block: nn.Sequential, skip: Tensor, h: Tensor) -> Tensor:
    """`block(cat([skip, h]))` for skip (B, Fs, H, W) and h (k B, Fh, H, W), skip standing for each of h's branches.

    The block's first convolution is linear in its input, so with k > 1 it runs as two: on skip's channels once
    (B images), on h's per branch (k B), the first added to each branch of the second; nothing is concatenated.
    `block[0]` is Conv or UpConv: (convolution, BatchNorm or Identity once folded, GELU).
    """
    B = skip.shape[0]
    k = h.shape[0] // B
    if k == 1:
        out: Tensor = block(torch.cat([skip, h], dim=1))
        return out
    first, *after = list(block)
    assert isinstance(first, nn.Sequential)
    conv, *rest = list(first)
    Fs = skip.shape[1]
    if isinstance(conv, nn.ConvTranspose2d):  # weight (F_in, F_out, kh, kw)
        assert isinstance(conv.padding, tuple)
        spec = (conv.stride, conv.padding, conv.output_padding)
        out = F.conv_transpose2d(h, conv.weight[Fs:], conv.bias, *spec)  # (k B, F, H', W')
        shared = F.conv_transpose2d(skip, conv.weight[:Fs], None, *spec)  # (B, F, H', W')
    else:
        assert isinstance(conv, nn.Conv2d)  # weight (F_out, F_in, kh, kw)
        out = F.conv2d(h, conv.weight[:, Fs:], conv.bias, conv.stride, conv.padding)
        shared = F.conv2d(skip, conv.weight[:, :Fs], None, conv.stride, conv.padding)
    out.unflatten(0, (k, B)).add_(shared)  # the skip's share, added to each branch
    for layer in [*rest, *after]:
        out = layer(out)
    return out


def set_memory_format(model: nn.Module, memory_format: torch.memory_format) -> None:
    """Lay out the 4-D weights in place, as `Module.to(memory_format=...)` does (its type stubs omit the argument)."""
    model._apply(lambda t: t.contiguous(memory_format=memory_format) if t.ndim == 4 else t)


def init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every parameter as PyTorch's default init does, from `generator`; reset BatchNorm to identity.

    Convolutions and linear layers: weight ~ kaiming_uniform(a = sqrt(5)), bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Raises for any other module that owns parameters, so a new layer cannot silently keep global-RNG weights.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                if module.bias is not None:
                    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(module.bias, -bound, bound, generator=generator)
            elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm | nn.LayerNorm):
                module.reset_parameters()  # weight 1, bias 0 (BatchNorm: running mean 0, var 1, count 0)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, generator=generator)  # PyTorch's default: N(0, 1)
            elif any(True for _ in module.parameters(recurse=False)):
                raise TypeError(f"init_weights does not know how to initialise {type(module).__name__}")


TIME_SCALE = 1000.0  # UNet2DModel embeds t sinusoidally at the DDPM paper's scale (0 .. 1000); our t is in [0, 1]


class DiffusersUNet(ModelMixin, ConfigMixin):  # type: ignore[misc]  # as CS180UNet
    """diffusers' UNet2DModel behind CS180UNet's call, `forward(x, t, c, c_mask)`, and its config keys.

    Levels: the side is halved while it is even and above 4 (32: 32, 16, 8, 4; 64: five levels; 28: 28, 14, 7), with
    D, 2D, 2D, 2D, 4D, ... channels, two ResNet blocks per level, self-attention at 16 x 16 and below and in the
    middle block, as the DDPM paper's CIFAR-10 network. A class is a learned embedding of K + 1 rows: row K is the null
    class that a dropped (c_mask = 0) or missing label becomes. Without time conditioning (the single-step denoiser)
    the network is given t = 0.
    """

    @register_to_config  # type: ignore[untyped-decorator]
    def __init__(
        self,
        in_channels: int = 3,  # C: image channels in and out
        hidden: int = 64,  # D: channels of the first level; a multiple of 8 (GroupNorm groups, attention heads)
        time_conditioned: bool = True,  # embed t (normalised to [0, 1], scaled by TIME_SCALE)
        num_classes: int = 0,  # K: class embeddings (plus the null class); 0 = none
        image_size: int = 32,  # H = W
        layers_per_block: int = 2,  # ResNet blocks per level
    ) -> None:
        super().__init__()
        if hidden < 8 or hidden % 8 or in_channels < 1 or num_classes < 0:
            raise ValueError(f"need hidden a multiple of 8, in_channels >= 1, num_classes >= 0; got {hidden}")
        sides = [image_size]
        while sides[-1] % 2 == 0 and sides[-1] > 4:
            sides.append(sides[-1] // 2)
        if len(sides) < 2:
            raise ValueError(f"image_size must be even and at least 8, got {image_size}")
        attention = [side <= 16 for side in sides]
        self.unet = UNet2DModel(
            sample_size=image_size,
            in_channels=in_channels,
            out_channels=in_channels,
            block_out_channels=tuple(hidden * (1 if i == 0 else 2 if i < 4 else 4) for i in range(len(sides))),
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
            layers_per_block=layers_per_block,
            norm_num_groups=math.gcd(32, hidden),
            attention_head_dim=8,
            num_class_embeds=num_classes + 1 if num_classes else None,
        )

    def forward(
        self, x: Tensor, t: Tensor | None = None, c: Tensor | None = None, c_mask: Tensor | None = None
    ) -> Tensor:
        """As CS180UNet's: t, c and c_mask may have k B rows (k conditions per image); every layer sees t, so x is
        repeated for them."""
        C, S, K = self.config["in_channels"], self.config["image_size"], self.config["num_classes"]
        if x.ndim != 4 or x.shape[1:] != (C, S, S):
            raise ValueError(f"x must have shape (B, {C}, {S}, {S}), got {tuple(x.shape)}")
        B = _rows(x.shape[0], t, c)
        x = x.repeat(B // x.shape[0], 1, 1, 1)  # (M, C, H, W)
        if self.config["time_conditioned"] != (t is not None):
            raise ValueError(f"this UNet is {'' if self.config['time_conditioned'] else 'not '}time-conditioned")
        if t is not None and (t.shape != (B,) or not t.is_floating_point()):
            raise ValueError(f"t must be float of shape ({B},), got {t.dtype} {tuple(t.shape)}")
        if not K and (c is not None or c_mask is not None):
            raise ValueError("this UNet is not class-conditioned; got c or c_mask")
        timestep = (t.to(x.dtype) if t is not None else x.new_zeros(B)) * TIME_SCALE  # (B,)
        classes = None
        if K:
            null = torch.full((B,), K, dtype=torch.long, device=x.device)  # (B,)
            keep = c_mask.to(x.device) > 0 if c_mask is not None else torch.ones(B, dtype=torch.bool, device=x.device)
            classes = null if c is None else torch.where(keep, c.to(x.device, torch.long), null)  # (B,)
        out: Tensor = self.unet(x, timestep, class_labels=classes).sample  # type: ignore[operator]  # (B, C, H, W)
        return out


Net = CS180UNet | DiffusersUNet  # what training, the predictors and the figures take


def load_network(path: str | Path) -> Net:
    """A network saved with `save_pretrained`, of the class its config.json names, on the CPU in eval mode."""
    name = json.loads((Path(path) / "config.json").read_text())["_class_name"]
    classes: dict[str, type[Net]] = {"CS180UNet": CS180UNet, "DiffusersUNet": DiffusersUNet}
    if name not in classes:
        raise ValueError(f"{path} holds a {name}, not one of {', '.join(classes)}")
    net: Net = classes[name].from_pretrained(path, low_cpu_mem_usage=False).eval()
    return net
