"""Where the CIFAR-10 images come from: torchvision's download, an image-folder tree or tarball, or generated.

Every source yields the same thing, uint8 arrays in memory, so every data path (albumentations, FFCV,
device-resident) starts from identical pixels and the seed's train/val split.
"""

from __future__ import annotations

import functools
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

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
    """Downloads torchvision's copy if needed (the first touch of the data: on the mlperf clock); an image folder
    was checked up front (``check_image_folder``), before the run existed."""
    if cfg.source == "torchvision":
        for train in (True, False):
            torchvision_cifar10(cfg.root, train=train, download=cfg.download)


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
    files, splits = folder_files(path), check_image_folder(path)
    subsets = {"train": train_subset, "test": test_subset}
    for split, (entries, classes) in splits.items():
        if subsets[split] is not None and subsets[split] < len(entries):
            labels = np.array([classes.index(cls) for cls, _ in entries])
            splits[split] = ([entries[i] for i in balanced_indices(labels, len(classes), subsets[split])], classes)
    return _decode(files, "train", *splits["train"], path), _decode(files, "test", *splits["test"], path)


def check_image_folder(path: Path, num_classes: Optional[int] = None) -> dict[str, tuple[list, tuple[str, ...]]]:
    """The folder's layout and every image's header and end, checked without decoding (seconds for CIFAR-10),
    so a broken data set is refused before a run exists: split -> (sorted (class, file) entries, classes)."""
    files = folder_files(path)
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
    classes = splits["train"][1]
    if num_classes is not None and len(classes) != num_classes:
        raise DataError(f"data.root={str(path)!r}: has {len(classes)} classes ({', '.join(classes)}) but the network "
                        f"has model.num_classes={num_classes} outputs; set model.num_classes={len(classes)}")
    for (split, cls, name), data in files.items():
        problem = _header_problem(data)
        if problem:
            raise DataError(f"data.root={str(path)!r}: {split}/{cls}/{name} {problem}")
    return splits


def _header_problem(data: bytes | Path) -> Optional[str]:
    """What is wrong with one image file, read from its header and its last bytes: not an image, not 32x32,
    or cut short (a JPEG must end with its end-of-image marker, a PNG with its IEND chunk)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(data if isinstance(data, Path) else io.BytesIO(data)) as img:
            kind, size = img.format, img.size
    except (UnidentifiedImageError, OSError) as err:
        return f"is not a readable image ({err})"
    if size != (32, 32):
        return f"is {size[0]}x{size[1]}; CIFAR images must be 32x32"
    tail = _tail(data, 12)
    if (kind == "JPEG" and not tail.rstrip(b"\0").endswith(b"\xff\xd9")) or (kind == "PNG" and b"IEND" not in tail):
        return f"is truncated (its {kind} end marker is missing)"
    return None


def _tail(data: bytes | Path, size: int) -> bytes:
    if isinstance(data, bytes):
        return data[-size:]
    with data.open("rb") as f:
        f.seek(max(data.stat().st_size - size, 0))
        return f.read()


def folder_files(path: Path) -> dict[tuple[str, str, str], bytes | Path]:
    """(split, class, file) -> the file's path (directory) or bytes (archive), read once per process and
    data set version: the up-front check and the decode share it."""
    if not path.exists():
        raise DataError(f"data.root={str(path)!r}: no such file or directory; {HOW_TO_GET}")
    stat = path.stat()
    return _folder_files(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1)
def _folder_files(path: str, mtime_ns: int, size: int) -> dict[tuple[str, str, str], bytes | Path]:
    return _tar_members(Path(path)) if Path(path).is_file() else _dir_files(Path(path))


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
        reason = " ".join(str(err).split())  # tarfile's message spans lines
        raise DataError(f"data.root={str(path)!r}: not a readable .tar/.tar.gz ({reason}); {HOW_TO_GET}") from None
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
