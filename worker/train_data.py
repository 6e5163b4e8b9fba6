"""What a training run learns from (worker/trainer.py): a dataset's items as tensors, or a reflow distillation's
pairs drawn by its teacher (docs/training.md, "Distillation"), kept in the sink so a resumed run never draws them
again."""

import copy
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from core.kinds.base import Admitted
from core.kinds.train import TrainJob
from models.datasets import DatasetError, ImageDataset, load_dataset
from models.distill import pair_labels, pair_noise, reflow_pairs
from models.inference import chunk_size, chunked, for_inference
from models.predictors import unet_predictor
from models.training import dataset_tensors
from models.unet import CS180UNet, Net

FIGURE_IMAGES = 8  # test images in the noising and denoising figures
PAIR_BATCH = 256  # reflow: pairs the teacher solves at a time


class PairSink(Protocol):
    """Where reflow's pairs are kept between attempts, and its drawing's progress goes (a run's `Sink` is one)."""

    def pairs(self, step: int, total: int) -> None: ...  # reflow: per step of the teacher drawing pairs; may raise

    def load_pairs(self) -> bytes | None: ...  # reflow: the pairs an earlier attempt drew, if any

    def save_pairs(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class TrainData:
    images: Tensor  # (N, C, H, W) float in [0, 1]
    labels: Tensor | None  # (N,) int64, None for a model without classes
    class_names: tuple[str, ...]  # the prompts of a class model; () otherwise
    test_images: Tensor  # (FIGURE_IMAGES, C, H, W): the test split's where the dataset has one
    pair_noise: Tensor | None = None  # reflow: (N, C, H, W) the noise each image was drawn from

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])


@dataclass(frozen=True)
class Teacher:
    """A distillation's teacher: its network as `load_network` gives it (CPU, eval; never trained) and its spec's
    noise process and classes."""

    id: str
    net: Net
    schedule: dict[str, Any]  # as ModelSpec.schedule writes it
    classes: tuple[str, ...]
    dataset: str | None  # what it learned from: the judge reads the student's samples where these are digits

    @property
    def arch(self) -> str:
        return "cs180" if isinstance(self.net, CS180UNet) else "unet2d"

    def for_device(self, device: torch.device) -> Net:
        """A copy of the network to run (not train) on `device`: the original stays the student's start."""
        return for_inference(copy.deepcopy(self.net), device).requires_grad_(False)


def subset(data: ImageDataset, limit: int | None) -> ImageDataset:
    """`limit` items evenly spaced through the dataset (mnist-5k is sorted by label: a prefix would be one digit)."""
    if limit is None or limit >= len(data.labels):
        return data
    index = np.unique(np.linspace(0, len(data.labels) - 1, limit).round().astype(np.int64))
    return ImageDataset(data.images[index], data.labels[index], data.class_names)


def load_data(req: TrainJob, data_dir: Path | None) -> TrainData:
    """The job's training items as tensors, and the images its figures show. Raises DatasetError."""
    assert req.dataset is not None, "reflow's items are its pairs (reflow_data)"
    full = load_dataset(req.dataset, data_dir, req.image_size)
    images, labels = dataset_tensors(subset(full, req.limit))
    try:
        test = load_dataset(req.dataset, data_dir, req.image_size, split="test")
    except DatasetError:  # mnist-5k, folders, or an IDX dataset without its test files: the training items
        test = full
    test_images, _ = dataset_tensors(subset(test, FIGURE_IMAGES))
    conditioned = req.conditioning == "class"
    return TrainData(images, labels if conditioned else None, full.class_names if conditioned else (), test_images)


def reflow_data(admitted: Admitted[TrainJob], teacher: Teacher, sink: PairSink, device: torch.device) -> TrainData:
    """Reflow's training set: `pairs` noises (from the seed) and the teacher's Euler solution from each, CFG for the
    classes and unguided for a `p_uncond` fraction (label -1). The images are the sink's when an earlier attempt drew
    them; else the teacher draws them (progress stage `pairs`) and the sink keeps them. Kept as float16, and trained
    on as kept, so a resumed run learns exactly what an uninterrupted one does."""
    req, distill = admitted.req, admitted.req.distill
    assert distill is not None and distill.pairs is not None and distill.teacher_steps is not None
    C, S = int(teacher.net.config["in_channels"]), int(teacher.net.config["image_size"])
    noise = pair_noise(distill.pairs, (C, S, S), admitted.seed)  # (N, C, S, S)
    labels = pair_labels(distill.pairs, len(teacher.classes), req.p_uncond)  # (N,)
    images = read_pairs(sink.load_pairs(), noise.shape)
    if images is None:
        predict = chunked(unet_predictor(teacher.for_device(device)), chunk_size(device))
        guidance = distill.guidance_scale if distill.guidance_scale is not None else 1.0
        made = reflow_pairs(
            predict, noise.to(device), labels.to(device), distill.teacher_steps, guidance, PAIR_BATCH, sink.pairs
        )
        images = made.images.half()
        sink.save_pairs(tensor_bytes(images))
    x1 = images.float()
    return TrainData(x1, labels, teacher.classes, x1[:FIGURE_IMAGES], noise)


def tensor_bytes(t: Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.save(t, buffer)
    return buffer.getvalue()


def read_pairs(data: bytes | None, shape: torch.Size) -> Tensor | None:
    """The kept pairs' images, if they are this run's (as many, of the same shape)."""
    if data is None:
        return None
    images = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    return images if isinstance(images, Tensor) and images.shape == shape else None
