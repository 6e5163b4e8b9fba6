import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.datasets import (
    FASHION,
    SYSTEM_DATASETS,
    DatasetCorrupt,
    DatasetError,
    DatasetMissing,
    dataset_info,
    load_dataset,
    read_idx,
)

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ROOT = Path(__file__).resolve().parents[2]


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file of uint8 data, as LeCun's format writes it: magic 0x0000080D, D big-endian int32 sizes, data."""
    magic = 0x800 | array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, n: int = 12, split: str = "train", gz: bool = False, seed: int = 0) -> np.ndarray:
    """A split of n random 28 x 28 images with labels 0..9 in folder; returns the images."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(FILES[split], (images, labels), strict=True):
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return images


def write_image(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_load_with_their_labels(tmp_path: Path, gz: bool) -> None:
    train = write_idx(tmp_path / "mnist", 12, "train", gz)
    test = write_idx(tmp_path / "mnist", 5, "test", gz, seed=1)
    data = load_dataset("mnist", tmp_path)
    np.testing.assert_array_equal(data.images, train)
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [i % 10 for i in range(12)]
    assert data.class_names == tuple("0123456789") and data.channels == 1
    np.testing.assert_array_equal(load_dataset("mnist", tmp_path, split="test").images, test)
    info = dataset_info("mnist", tmp_path)
    assert info == {
        "name": "mnist",
        "size": 12,
        "splits": {"train": 12, "test": 5},
        "image_size": 28,
        "channels": 1,
        "class_names": list("0123456789"),
        "available": True,
        "reason": None,
    }


def test_loads_are_cached_until_the_files_change(tmp_path: Path) -> None:
    write_idx(tmp_path / "mnist")
    first = load_dataset("mnist", tmp_path)
    assert load_dataset("mnist", tmp_path) is first
    assert not first.images.flags.writeable  # the cache shares it
    changed = write_idx(tmp_path / "mnist", 7, seed=3)
    again = load_dataset("mnist", tmp_path)
    assert again is not first
    np.testing.assert_array_equal(again.images, changed)


def test_a_missing_dataset_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissing, match=r"train-images-idx3-ubyte.*\$DATA_DIR/mnist"):
        load_dataset("mnist", tmp_path)
    write_idx(tmp_path / "mnist", split="train")
    with pytest.raises(DatasetMissing, match="test split"):
        load_dataset("mnist", tmp_path, split="test")
    info = dataset_info("mnist", tmp_path / "nowhere")
    assert not info["available"] and "$DATA_DIR/mnist" in info["reason"] and info["class_names"] == list("0123456789")


def test_a_missing_fashion_mnist_names_the_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models import datasets

    hint = datasets.IDX_DATASETS["fashion-mnist"].hint
    no_package = datasets.IdxSource("fashion-mnist", FASHION, tmp_path / "no-system-copy", hint)
    monkeypatch.setitem(datasets.IDX_DATASETS, "fashion-mnist", no_package)  # as on a machine without the package
    with pytest.raises(DatasetMissing, match=r"apt-get install dataset-fashion-mnist.*\$DATA_DIR/fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path)
    write_idx(tmp_path / "fashion-mnist", 10, gz=True)  # a copy in DATA_DIR is found first
    data = load_dataset("fashion-mnist", tmp_path)
    assert data.class_names == FASHION and len(data.images) == 10


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda b: b"\x00\x00\x08\x02" + b[4:], "magic number is 0x00000802"),  # images file says 2-D
        (lambda b: b[:-100], "truncated"),
        (lambda b: b[:10], "header is 10 bytes"),
        (lambda b: b + b"\x00", "too long"),
    ],
)
def test_a_corrupt_idx_file_is_refused(tmp_path: Path, damage: object, match: str) -> None:
    write_idx(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(DatasetCorrupt, match=match):
        load_dataset("mnist", tmp_path)


def test_counts_that_disagree_and_a_broken_gzip_are_refused(tmp_path: Path) -> None:
    write_idx(tmp_path / "mnist", 12)
    (tmp_path / "mnist" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(11, np.uint8)))
    with pytest.raises(DatasetCorrupt, match=r"12 images but .* 11 labels"):
        load_dataset("mnist", tmp_path)
    info = dataset_info("mnist", tmp_path)  # from the headers alone
    assert not info["available"] and "11 labels" in info["reason"]

    write_idx(tmp_path / "other" / "mnist", 12, gz=True)
    gz = tmp_path / "other" / "mnist" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetCorrupt, match="cannot be read"):
        read_idx(gz, 3)


def test_folder_with_class_subfolders_is_resized_to_squares(tmp_path: Path) -> None:
    write_image(tmp_path / "pets" / "cat" / "a.png", (40, 20), (255, 0, 0))
    write_image(tmp_path / "pets" / "cat" / "deeper" / "b.jpg", (64, 64), (250, 0, 0))
    write_image(tmp_path / "pets" / "dog" / "c.webp", (20, 50), (0, 0, 255))
    (tmp_path / "pets" / "dog" / "notes.txt").write_text("not an image, skipped")
    data = load_dataset("folder:pets", tmp_path, image_size=16)
    assert data.images.shape == (3, 16, 16, 3) and data.images.dtype == np.uint8 and data.channels == 3
    assert data.class_names == ("cat", "dog") and data.labels.tolist() == [0, 0, 1]
    assert data.images[2, ..., 2].min() > 200 and data.images[2, ..., 0].max() < 50  # blue stays blue
    assert load_dataset("folder:pets", tmp_path).images.shape == (3, 32, 32, 3)  # the default size
    info = dataset_info("folder:pets", tmp_path)
    assert info["size"] == 3 and info["class_names"] == ["cat", "dog"] and info["channels"] == 3 and info["available"]


def test_center_crop_keeps_the_middle(tmp_path: Path) -> None:
    image = Image.new("RGB", (30, 10), (0, 0, 0))
    image.paste((255, 255, 255), (10, 0, 20, 10))  # a white middle third: all that the square crop keeps
    (tmp_path / "strip").mkdir()
    image.save(tmp_path / "strip" / "x.png")
    data = load_dataset("folder:strip", tmp_path, image_size=8)
    assert data.class_names == () and data.labels.tolist() == [0]
    assert data.images.min() > 240


def test_bad_folders_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetCorrupt, match="has no images"):
        load_dataset("folder:empty", tmp_path)
    assert "has no images" in dataset_info("folder:empty", tmp_path)["reason"]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(DatasetCorrupt, match=r"x\.png is not a readable image"):
        load_dataset("folder:broken", tmp_path)
    write_image(tmp_path / "mixed" / "a.png", (8, 8), (0, 0, 0))
    write_image(tmp_path / "mixed" / "cls" / "b.png", (8, 8), (0, 0, 0))
    with pytest.raises(DatasetCorrupt, match="mixes images"):
        load_dataset("folder:mixed", tmp_path)
    with pytest.raises(DatasetMissing, match="no folder"):
        load_dataset("folder:absent", tmp_path)


def test_folder_names_cannot_leave_data_dir(tmp_path: Path) -> None:
    data_dir, outside = tmp_path / "data", tmp_path / "secret"
    write_image(outside / "x.png", (8, 8), (1, 2, 3))
    data_dir.mkdir()
    (data_dir / "link").symlink_to(outside)
    write_image(data_dir / "sneaky" / "ok.png", (8, 8), (1, 2, 3))
    (data_dir / "sneaky" / "out.png").symlink_to(outside / "x.png")
    for name in [str(outside), "../secret", "a/../../secret", "link", "sneaky", "", "."]:
        with pytest.raises(DatasetError) as caught:
            load_dataset(f"folder:{name}", data_dir)
        assert type(caught.value) is DatasetError, name  # refused, not "missing"
        with pytest.raises(DatasetError):
            dataset_info(f"folder:{name}", data_dir)


def test_unknown_names_splits_and_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'; known: mnist-5k, mnist, fashion-mnist"):
        load_dataset("cifar")
    with pytest.raises(DatasetError, match="unknown dataset"):
        dataset_info("cifar")
    with pytest.raises(DatasetError, match="split"):
        load_dataset("mnist-5k", split="validation")
    with pytest.raises(DatasetError, match="28 x 28"):
        load_dataset("mnist-5k", image_size=32)
    assert dataset_info("mnist-5k")["size"] == 5000


def test_the_module_does_not_import_torch() -> None:
    code = "import sys, models.datasets; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


@pytest.mark.skipif(
    not (SYSTEM_DATASETS / "fashion-mnist").is_dir(),
    reason="Fashion-MNIST is not installed here (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_the_debian_package(tmp_path: Path) -> None:
    info = dataset_info("fashion-mnist", tmp_path)
    assert info["available"] and info["splits"] == {"train": 60000, "test": 10000}
    train, test = load_dataset("fashion-mnist", tmp_path), load_dataset("fashion-mnist", tmp_path, split="test")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert train.class_names == FASHION and len(FASHION) == 10
    assert np.bincount(train.labels).tolist() == [6000] * 10
