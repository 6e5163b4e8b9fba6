"""Predictor adapters: a network behind the loop's one call, `predict(x, t, cond) -> estimate`.

For the in-house UNets, a condition is a class label per sample, -1 for the unconditional branch (its one-hot is
dropped through `c_mask`, as in training with p_uncond).
"""

import torch

from models.guidance import Predict
from models.unet import Net

UNCONDITIONAL = -1


def unet_predictor(net: Net) -> Predict:
    time_conditioned, num_classes = net.config["time_conditioned"], net.config["num_classes"]

    def predict(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, torch.Tensor] = {}
        if time_conditioned:
            kwargs["t"] = t.to(x.dtype)  # (N,) in [0, 1]
        if num_classes:
            kwargs["c"] = cond.clamp(min=0).long()  # (N,)
            kwargs["c_mask"] = (cond >= 0).to(x.dtype)  # (N,) 1 = use the class
        out: torch.Tensor = net(x, **kwargs)
        return out

    return predict


def labels(label: int | None, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n,) the class of every sample, or UNCONDITIONAL."""
    return torch.full((n,), UNCONDITIONAL if label is None else label, dtype=torch.long, device=device)
