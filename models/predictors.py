"""Predictor adapters: a network behind the loop's one call, `predict(x, t, cond) -> estimate` (models/guidance.py).

For the in-house UNets, a condition is a class label per sample, -1 for the unconditional branch (its one-hot is
dropped through `c_mask`, as in training with p_uncond). Both UNets take k rows of conditions per image themselves.
"""

import torch

from models.guidance import Predict
from models.unet import Net, branch_count

UNCONDITIONAL = -1


def unet_predictor(net: Net) -> Predict:
    time_conditioned, num_classes = net.config["time_conditioned"], net.config["num_classes"]

    def predict(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        k = branches(x, cond)
        kwargs: dict[str, torch.Tensor] = {}
        if time_conditioned:
            kwargs["t"] = t.to(x.dtype).repeat(k)  # (k N,) in [0, 1]
        if num_classes:
            kwargs["c"] = cond.clamp(min=0).long()  # (k N,)
            kwargs["c_mask"] = (cond >= 0).to(x.dtype)  # (k N,) 1 = use the class
        if k > 1 and not kwargs:
            x = x.repeat(k, 1, 1, 1)  # an unconditioned network: the branches are copies
        out: torch.Tensor = net(x, **kwargs)
        return out

    return predict


def branches(x: torch.Tensor, cond: torch.Tensor) -> int:
    """k, the conditions each of x's images runs under."""
    return branch_count(x.shape[0], cond.shape[0])


def labels(label: int | None, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n,) the class of every sample, or UNCONDITIONAL."""
    return torch.full((n,), UNCONDITIONAL if label is None else label, dtype=torch.long, device=device)
