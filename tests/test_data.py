"""The albumentations path really augments as the seed did, and every source loads or fails clearly."""

import numpy as np
import pytest
import torch

from cifarbench.config import DataConfig
from cifarbench.data.albumentations_path import AlbumentationsDataModule, eval_transform, train_transform
from cifarbench.data.augmentation import CIFAR_MEAN, CIFAR_STD
from cifarbench.data.sources import balanced_subset, check_image_folder, image_folder, split_train_val, synthetic
from cifarbench.errors import DataError


def _augment_many(cfg: DataConfig, image: np.ndarray, n: int) -> torch.Tensor:
    transform = train_transform(cfg)
    return torch.stack([transform(image=image)["image"] for _ in range(n)])


def _unnormalise(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(CIFAR_STD).view(3, 1, 1) + torch.tensor(CIFAR_MEAN).view(3, 1, 1)


def test_cutout_really_cuts_one_8x8_hole_half_the_time():
    # a random image, so the hole (mean pixel) is the only 8x8 patch of near-mean pixels
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = _augment_many(DataConfig(flip_prob=0.0), image, 400)
    hole = (out.abs() < 0.03).all(dim=1)  # normalised mean pixel is ~0 in every channel
    holes = hole.flatten(1).sum(1)
    has_hole = holes >= 32  # a hole may be clipped at the border, but never below half of 8x8
    assert 0.4 < has_hole.float().mean() < 0.6
    assert holes.max() <= 64
    assert (holes[~has_hole] < 4).all()


def test_cutout_can_be_switched_off():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = _augment_many(DataConfig(cutout_prob=0.0), image, 100)
    assert (out.abs() < 0.03).all(dim=1).flatten(1).sum(1).max() < 4


def test_flip_and_translate_happen_at_the_configured_rates():
    # a horizontal ramp: flipping reverses it, translation shifts it by at most `pad` pixels
    ramp = np.tile(np.arange(32, dtype=np.uint8)[None, :, None] * 8, (32, 1, 3))
    out = _augment_many(DataConfig(cutout_prob=0.0), ramp, 400)
    row = _unnormalise(out)[:, 0, 16, 4:28] * 255  # centre row, away from the reflected border
    flipped = row[:, 0] > row[:, -1]
    assert 0.4 < flipped.float().mean() < 0.6
    start = torch.where(flipped, 31 - row[:, 0] / 8, row[:, 0] / 8).round() - 4  # the crop's x offset
    assert start.min() >= -4 and start.max() <= 4 and len(start.unique()) == 9


def test_eval_transform_only_normalises():
    image = np.full((32, 32, 3), 128, np.uint8)
    out = eval_transform()(image=image)["image"]
    expected = (128 / 255 - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)
    assert torch.allclose(out[:, 5, 5], expected, atol=1e-4)


def test_split_is_the_seeds_45000_5000_and_fixed_by_seed():
    images = synthetic(50_000, seed=0)
    train, val = split_train_val(images, 5000, seed=42)
    again, _ = split_train_val(images, 5000, seed=42)
    other, _ = split_train_val(images, 5000, seed=7)
    assert (len(train), len(val)) == (45_000, 5000)
    assert np.array_equal(train.labels, again.labels) and not np.array_equal(train.labels, other.labels)


def test_synthetic_data_is_cifar_shaped_and_deterministic():
    a, b = synthetic(500, seed=3), synthetic(500, seed=3)
    assert a.images.shape == (500, 32, 32, 3) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images) and set(a.labels) == set(range(10))


def test_real_cifar_tarball_loads_with_its_classes(cifar_tarball):
    train, test = image_folder(str(cifar_tarball))
    assert (len(train), len(test)) == (50_000, 10_000)
    assert train.classes[0] == "airplane" and len(train.classes) == 10
    assert np.allclose(train.images.reshape(-1, 3).mean(0) / 255, CIFAR_MEAN, atol=0.002)
    subset = balanced_subset(train, 3000)
    assert np.bincount(subset.labels).tolist() == [300] * 10
    decoded_subset, _ = image_folder(str(cifar_tarball), train_subset=3000)  # decodes only those 3,000
    assert np.array_equal(decoded_subset.images, subset.images) and np.array_equal(decoded_subset.labels, subset.labels)


def test_image_folder_directory_and_datamodule(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    dm = AlbumentationsDataModule(DataConfig(source="folder", root=str(tmp_path), val_size=4, batch_size=5, num_workers=0))
    dm.prepare_data()
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 20, "val": 4, "test": 8}
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert len(dm.train_dataloader()) == 4  # drop_last: 20 // 5


@pytest.mark.parametrize("make, expected", [
    (lambda p: p / "missing", "no such file or directory"),
    (lambda p: (p / "junk.tar.gz").write_bytes(b"not a tarball") and p / "junk.tar.gz", "not a readable .tar/.tar.gz"),
    (lambda p: (p / "train").mkdir() or p, "found no train/<class>/*.jpg"),
])
def test_unusable_data_gives_one_clear_line(tmp_path, make, expected):
    root = make(tmp_path)
    with pytest.raises(DataError) as err:
        check_image_folder(root)
    message = str(err.value)
    assert expected in message and str(root) in message and "\n" not in message
    assert "data.source=torchvision" in message  # says how to get the data


def test_wrong_image_size_is_named(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        (tmp_path / split / "cat").mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(tmp_path / split / "cat" / "big.jpg")
    with pytest.raises(DataError, match=r"train/cat/big.jpg is 64x64; CIFAR images must be 32x32"):
        image_folder(str(tmp_path))
