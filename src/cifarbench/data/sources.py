"""Where the CIFAR-10 images come from: torchvision's download, an image-folder tree or tarball, or generated.

Every source yields the same thing, uint8 arrays in memory, so every data path (albumentations, FFCV,
device-resident) starts from identical pixels and the seed's train/val split.
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
HOW_TO_GET = (
    "get CIFAR-10 with data.source=torchvision (downloads to data.root), point data.root at a directory or "
    ".tar.gz holding train/<class>/*.jpg and test/<class>/*.jpg, or use data.source=synthetic"
)


@dataclass
class ImageSet:
    """Images as uint8 N x 32 x 32 x 3 (RGB, HWC) with int64 labels."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> "ImageSet":
        return ImageSet(self.images[indices], self.labels[indices], self.classes)


def load_train_test(cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    """The full training set (before the val split) and the test set, subset as configured."""
    if cfg.source == "synthetic":
        train, test = synthetic(cfg.synthetic_train_size, seed=0), synthetic(cfg.synthetic_test_size, seed=1)
    elif cfg.source == "torchvision":
        train, test = torchvision_cifar10(cfg.root, train=True, download=cfg.download), torchvision_cifar10(
            cfg.root, train=False, download=cfg.download
        )
    else:
        train, test = image_folder(cfg.root, cfg.train_subset, cfg.test_subset)  # decodes only the subsets
    return balanced_subset(train, cfg.train_subset), balanced_subset(test, cfg.test_subset)


def prepare_source(cfg: DataConfig) -> None:
    """Fails fast, before any training work, if the data cannot be had; downloads torchvision's copy."""
    if cfg.source == "torchvision":
        for train in (True, False):
            torchvision_cifar10(cfg.root, train=train, download=cfg.download)
    elif cfg.source == "folder":
        path = Path(cfg.root).expanduser()
        if not path.exists():
            raise DataError(f"data.root={str(path)!r}: no such file or directory; {HOW_TO_GET}")
        if path.is_file() and not tarfile.is_tarfile(path):
            raise DataError(f"data.root={str(path)!r}: not a directory nor a .tar/.tar.gz archive; {HOW_TO_GET}")


def split_train_val(train: ImageSet, val_size: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """The seed's split: a seeded random permutation, the last ``val_size`` images held out for validation."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).numpy()
    return train.take(np.sort(order[:-val_size])), train.take(np.sort(order[-val_size:]))


def balanced_subset(images: ImageSet, size: int | None) -> ImageSet:
    """The first ``size`` images with as equal a share of each class as possible (the rest as they come)."""
    if size is None or size >= len(images):
        return images
    return images.take(balanced_indices(images.labels, len(images.classes), size))


def balanced_indices(labels: np.ndarray, num_classes: int, size: int) -> np.ndarray:
    """Sorted indices of the first ``size // num_classes`` (+1 for the first classes) images of each class."""
    per_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    quota, extra = divmod(size, num_classes)
    return np.sort(np.concatenate([idx[: quota + (c < extra)] for c, idx in enumerate(per_class)]))


def torchvision_cifar10(root: str, train: bool, download: bool) -> ImageSet:
    from torchvision.datasets import CIFAR10

    root_path = Path(root).expanduser()
    try:
        ds = CIFAR10(str(root_path), train=train, download=download)
    except (RuntimeError, OSError) as err:  # not downloaded and no network, or a broken cache
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"data.root={str(root_path)!r}: CIFAR-10 is not there and could not be downloaded "
                        f"({reason}); {HOW_TO_GET}") from None
    return ImageSet(np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64), tuple(ds.classes))


def image_folder(root: str, train_subset: int | None = None, test_subset: int | None = None) -> tuple[ImageSet, ImageSet]:
    """Reads ``train/<class>/*`` and ``test/<class>/*`` from a directory or a (gzipped) tarball; with a subset
    size, decodes only the images ``balanced_subset`` would keep."""
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"data.root={str(path)!r}: no such file or directory; {HOW_TO_GET}")
    files = _tar_members(path) if path.is_file() else _dir_files(path)
    splits = {}
    for split in ("train", "test"):
        entries = sorted((cls, name) for (s, cls, name) in files if s == split)
        classes = tuple(sorted({cls for cls, _ in entries}))
        if not classes:
            raise DataError(f"data.root={str(path)!r}: found no {split}/<class>/*.jpg images; {HOW_TO_GET}")
        splits[split] = (entries, classes)
    if splits["train"][1] != splits["test"][1]:
        raise DataError(f"data.root={str(path)!r}: train classes {splits['train'][1]} differ from test classes "
                        f"{splits['test'][1]}")
    subsets = {"train": train_subset, "test": test_subset}
    for split, (entries, classes) in splits.items():
        if subsets[split] is not None and subsets[split] < len(entries):
            labels = np.array([classes.index(cls) for cls, _ in entries])
            splits[split] = ([entries[i] for i in balanced_indices(labels, len(classes), subsets[split])], classes)
    return _decode(files, "train", *splits["train"], path), _decode(files, "test", *splits["test"], path)


def _dir_files(path: Path) -> dict[tuple[str, str, str], bytes | Path]:
    found: dict[tuple[str, str, str], bytes | Path] = {}
    for split in ("train", "test"):
        for f in (path / split).glob("*/*"):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                found[(split, f.parent.name, f.name)] = f
    return found


def _tar_members(path: Path) -> dict[tuple[str, str, str], bytes | Path]:
    pattern = re.compile(r"(?:^|/)(train|test)/([^/]+)/([^/]+)$")
    found: dict[tuple[str, str, str], bytes | Path] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                m = pattern.search(member.name)
                if member.isfile() and m and Path(m.group(3)).suffix.lower() in IMAGE_SUFFIXES:
                    found[m.groups()] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"data.root={str(path)!r}: not a readable .tar/.tar.gz ({err}); {HOW_TO_GET}") from None
    return found


def _decode(files, split: str, entries, classes, root: Path) -> ImageSet:
    from PIL import Image

    images = np.empty((len(entries), 32, 32, 3), dtype=np.uint8)
    labels = np.empty(len(entries), dtype=np.int64)
    class_index = {c: i for i, c in enumerate(classes)}
    for i, (cls, name) in enumerate(entries):
        data = files[(split, cls, name)]
        try:
            with Image.open(data if isinstance(data, Path) else io.BytesIO(data)) as img:
                pixels = np.asarray(img.convert("RGB"))
        except OSError as err:
            raise DataError(f"data.root={str(root)!r}: cannot decode {split}/{cls}/{name} ({err})") from None
        if pixels.shape != (32, 32, 3):
            raise DataError(f"data.root={str(root)!r}: {split}/{cls}/{name} is {pixels.shape[1]}x{pixels.shape[0]}, "
                            "CIFAR images must be 32x32")
        images[i], labels[i] = pixels, class_index[cls]
    return ImageSet(images, labels, classes)


def synthetic(size: int, seed: int) -> ImageSet:
    """A CIFAR-shaped set that a small CNN learns in a few epochs, for offline demos and tests.

    Each class is a fixed low-frequency colour pattern (shared by both splits); an image blends its
    class's pattern with a weaker one of another class, randomly translated and mirrored, dimmed or
    brightened, under strong pixel noise, so accuracy climbs over several epochs as on real photos.
    """
    classes = len(CIFAR10_CLASSES)
    patterns = np.random.default_rng(1234).uniform(0.3, 0.7, (classes, 3, 4, 4))
    patterns = torch.nn.functional.interpolate(torch.tensor(patterns), size=(32, 32), mode="bilinear").numpy()
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size).astype(np.int64)
    # blend in a distractor class: the label's pattern always dominates, but not by much
    distractors = (labels + rng.integers(1, classes, size)) % classes
    weight = rng.uniform(0.55, 0.9, (size, 1, 1, 1))
    images = (weight * patterns[labels] + (1 - weight) * patterns[distractors]).transpose(0, 2, 3, 1)
    shifts = rng.integers(-4, 5, (size, 2))
    for i, (dy, dx) in enumerate(shifts):
        images[i] = np.roll(images[i], (dy, dx), axis=(0, 1))
        if rng.random() < 0.5:
            images[i] = images[i, :, ::-1]
    images = images * rng.uniform(0.7, 1.3, (size, 1, 1, 1)) + rng.normal(0, 0.35, images.shape)
    return ImageSet(np.clip(images * 255, 0, 255).astype(np.uint8), labels, CIFAR10_CLASSES)
