"""The three data paths augment alike (parity), train end to end, and fail clearly on bad FFCV files."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifarbench.config import DataConfig, FFCVConfig
from cifarbench.data import build_datamodule
from cifarbench.data.augmentation import CIFAR_MEAN, CIFAR_STD
from cifarbench.data.ffcv_path import check_betons, write_betons
from cifarbench.errors import DataError
from cifarbench.train.run import fit
from conftest import REPO, tiny_config

PATHS = ("albumentations", "ffcv", "device")
PROBES = [(8, 8), (8, 20), (20, 8), (20, 20)]  # 12 apart: one 8x8 hole can cover at most one probe pair


def coordinate_image() -> np.ndarray:
    """R encodes the column, G the row, B is 0: every augmented pixel says where it came from."""
    ys, xs = np.mgrid[0:32, 0:32]
    return np.stack([xs * 8 + 4, ys * 8 + 4, np.zeros_like(xs)], axis=-1).astype(np.uint8)


def write_folder(root: Path, image: np.ndarray, copies: int) -> Path:
    for split, n in (("train", copies), ("test", 2)):
        folder = root / split / "probe"
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(image).save(folder / f"{i:04d}.png")
    return root


def augmented(cfg: DataConfig, epochs: int, stacked: bool = True):
    """Training images of a data path, back in 0..255 pixel units, N x 3 x 32 x 32: all epochs stacked, or a
    list with one tensor per epoch. The epoch is told as Lightning tells it (sampler and ``DataEpoch``)."""
    dm = build_datamodule(cfg, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    per_epoch = []
    for epoch in range(epochs):
        if hasattr(getattr(loader, "sampler", None), "set_epoch"):
            loader.sampler.set_epoch(epoch)
        dm.set_epoch(epoch)
        x = torch.cat([x for x, _ in loader]).float()
        per_epoch.append(x * torch.tensor(CIFAR_STD).view(1, 3, 1, 1) * 255 + torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1) * 255)
    return torch.cat(per_epoch) if stacked else per_epoch


def decode(x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image: flipped?, crop offsets (dy, dx), hole size and hole top-left corner."""
    px = x.round().numpy()
    hole = px[:, 2] > 60  # B is 0 in the picture, 114 in the mean-pixel fill
    flips, dys, dxs = [], [], []
    for img, mask in zip(px, hole):
        r, c = next((r, c) for r, c in PROBES if not mask[r, c:c + 2].any())
        flipped = img[0, r, c + 1] < img[0, r, c]
        src_x, src_y = (img[0, r, c] - 4) / 8, (img[1, r, c] - 4) / 8
        flips.append(flipped)
        dys.append(src_y - r)
        dxs.append(src_x - ((31 - c) if flipped else c))
    sizes = hole.reshape(len(hole), -1).sum(1)
    tops = np.array([np.argwhere(m).min(0) if m.any() else (-1, -1) for m in hole])
    return {"flip": np.array(flips), "dy": np.array(dys), "dx": np.array(dxs), "hole": sizes, "top": tops}


def augment_probe_images(root: Path, pad: int) -> dict[str, dict[str, np.ndarray]]:
    base = DataConfig(source="folder", root=str(root), val_size=100, batch_size=100, num_workers=1, pad=pad,
                      ffcv=FFCVConfig(dir=str(root / f"ffcv-{pad}")))
    return {path: decode(augmented(replace(base, path=path), epochs=2)) for path in PATHS}


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    """2,000 augmented copies of the coordinate picture per path, full augmentation."""
    return augment_probe_images(write_folder(tmp_path_factory.mktemp("coords"), coordinate_image(), 1100), pad=4)


@pytest.fixture(scope="module")
def cutout_parity(tmp_path_factory):
    """The same without translation: FFCV fills the translated border with the mean pixel, like the hole."""
    return augment_probe_images(write_folder(tmp_path_factory.mktemp("coords"), coordinate_image(), 1100), pad=0)


@pytest.mark.parametrize("path", PATHS)
def test_each_path_flips_half_the_images(parity, path):
    assert 0.45 < parity[path]["flip"].mean() < 0.55


@pytest.mark.parametrize("path", PATHS)
def test_each_path_translates_uniformly_by_at_most_4_pixels(parity, path):
    for axis in ("dy", "dx"):
        offsets = parity[path][axis]
        assert set(np.unique(offsets)) == set(range(-4, 5))  # doubled translation would reach 8
        counts = np.bincount((offsets + 4).astype(int), minlength=9) / len(offsets)
        assert np.abs(counts - 1 / 9).max() < 0.035


@pytest.mark.parametrize("path", PATHS)
def test_each_path_cuts_one_8x8_hole_half_the_time_anywhere(cutout_parity, path):
    d = cutout_parity[path]
    has_hole = d["hole"] > 0
    assert 0.45 < has_hole.mean() < 0.55
    assert set(d["hole"][has_hole]) == {64}  # one whole hole: never two, never clipped
    tops = d["top"][has_hole]
    assert tops.min() == 0 and tops.max() == 24 and abs(tops.mean() - 12) < 0.8


def test_the_paths_agree_with_each_other(parity):
    for a in PATHS:
        for b in PATHS:
            assert abs(parity[a]["flip"].mean() - parity[b]["flip"].mean()) < 0.06
            assert abs(parity[a]["dx"].std() - parity[b]["dx"].std()) < 0.2


def identity_folder(root: Path, n: int) -> Path:
    """Image i: red is i everywhere, green dark on the left half and bright on the right, so that any augmented
    copy says which image it is (the median red: fills cover less than half) and whether it is mirrored."""
    for i in range(n):
        image = np.zeros((32, 32, 3), dtype=np.uint8)
        image[..., 0], image[:, 16:, 1] = i, 255
        folder = root / "train" / "probe"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    (root / "test" / "probe").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(root / "test" / "probe" / "0000.png")
    return root


def mirrored_by_image(x: torch.Tensor) -> dict[int, bool]:
    """{image: shown mirrored?} for a batch of the identity images, from pixel units (N x 3 x 32 x 32)."""
    ids = x[:, 0].flatten(1).median(dim=1).values.round().long()
    mirrored = x[:, 1, :, :16].mean(dim=(1, 2)) > x[:, 1, :, 16:].mean(dim=(1, 2))
    return dict(zip(ids.tolist(), mirrored.tolist()))


@pytest.fixture(scope="module")
def alternating(tmp_path_factory):
    """{path: [{image: mirrored?} per epoch]} for 3 epochs of 200 images, the full augmentation with
    ``alternating_flip``."""
    root = identity_folder(tmp_path_factory.mktemp("identity"), 200)
    base = DataConfig(source="folder", root=str(root), protocol="published", batch_size=50, num_workers=1,
                      alternating_flip=True, ffcv=FFCVConfig(dir=str(root / "ffcv")))
    return {path: [mirrored_by_image(x) for x in augmented(replace(base, path=path), epochs=3, stacked=False)]
            for path in PATHS}


@pytest.mark.parametrize("path", PATHS)
def test_alternating_flip_shows_each_image_its_other_side_every_other_epoch(alternating, path):
    first, second, third = alternating[path]
    assert len(first) == len(second) == len(third) == 200  # every image once an epoch
    assert 0.35 < np.mean(list(first.values())) < 0.65  # the first epoch: a random half
    assert all(second[i] != first[i] and third[i] == first[i] for i in first)


def test_alternating_flip_mirrors_the_same_images_on_every_path(alternating):
    assert alternating["albumentations"][0] == alternating["ffcv"][0] == alternating["device"][0]


def test_lightning_tells_the_loader_workers_the_epoch(tmp_path):
    """In a real fit the albumentations path's worker processes learn each epoch (``DataEpoch``) in time for
    its first batch."""
    from lightning import LightningModule, Trainer

    from cifarbench.data import DataEpoch

    class Recorder(LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[dict[int, bool]] = []

        def on_train_epoch_start(self):
            self.seen.append({})

        def training_step(self, batch, _):
            pixels = batch[0] * torch.tensor(CIFAR_STD).view(1, 3, 1, 1) * 255 + torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1) * 255
            self.seen[-1] |= mirrored_by_image(pixels)
            return (self.weight ** 2).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    root = identity_folder(tmp_path, 100)
    cfg = DataConfig(source="folder", root=str(root), protocol="published", batch_size=25, num_workers=2,
                     alternating_flip=True)
    module = Recorder()
    Trainer(max_epochs=3, callbacks=[DataEpoch()], logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0).fit(
        module, datamodule=build_datamodule(cfg, seed=5))
    first, second, third = module.seen
    assert len(first) == 100 and all(second[i] != first[i] and third[i] == first[i] for i in first)


def kept_fraction_after_constant_fill_translate(pad: int, size: int = 32) -> float:
    """Share of an image FFCV's RandomTranslate keeps: shifts are uniform in [-pad, pad] on each axis, and what
    slides in is the constant mean pixel (normalised ~0), where the other paths reflect real pixels."""
    mean_shift = sum(abs(d) for d in range(-pad, pad + 1)) / (2 * pad + 1)
    return (1 - mean_shift / size) ** 2


def test_normalised_statistics_match_on_real_images(tmp_path, cifar_tarball):
    base = DataConfig(source="folder", root=str(cifar_tarball), train_subset=2100, val_size=100, test_subset=100,
                      batch_size=100, num_workers=1, ffcv=FFCVConfig(dir=str(tmp_path / "ffcv")))
    stats = {}
    for path in PATHS:
        dm = build_datamodule(replace(base, path=path), seed=0)
        dm.prepare_data()
        dm.setup("fit")
        x = torch.cat([x for x, _ in dm.train_dataloader()])
        stats[path] = (x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)))
    # The constant border fill is the one documented difference, and it lowers FFCV's spread by a known amount
    # (~0.93 at pad 4): anything else (normalising twice, a lost augmentation) moves the ratio well outside 0.03.
    expected_std_ratio = {"albumentations": 1.0, "device": 1.0,
                          "ffcv": kept_fraction_after_constant_fill_translate(base.pad) ** 0.5}
    ref_mean, ref_std = stats["albumentations"]
    for path, (mean, std) in stats.items():
        assert mean.abs().max() < 0.1, path  # normalisation applied once, with the CIFAR statistics
        assert ((std > 0.85) & (std < 1.1)).all(), path
        assert (mean - ref_mean).abs().max() < 0.06, path
        assert ((std / ref_std - expected_std_ratio[path]).abs() < 0.03).all(), (path, std / ref_std)


@pytest.mark.parametrize("path", PATHS)
def test_one_short_epoch_on_real_images_on_each_path(tmp_path, cifar_tarball, path):
    cfg = tiny_config(tmp_path, data={"source": "folder", "root": str(cifar_tarball), "path": path, "train_subset": 1200,
                                      "val_size": 200, "test_subset": 200, "num_workers": 1,
                                      "ffcv": FFCVConfig(dir=str(tmp_path / "ffcv"), storage="jpeg")},
                      trainer={"epochs": 1})
    _, record = fit(cfg)
    assert record["status"] in ("completed", "not-reached"), record["error"]
    assert record["data_wait"]["steps"] == 10 and record["accuracy"]["test"] is not None
    if path == "ffcv":
        manifest = json.loads((tmp_path / "ffcv" / "manifest.json").read_text())
        assert manifest["counts"] == {"train": 1000, "val": 200, "test": 200} and manifest["data"]["storage"] == "jpeg"


@pytest.fixture
def betons(tmp_path):
    cfg = DataConfig(source="synthetic", synthetic_train_size=300, synthetic_test_size=50, val_size=50,
                     ffcv=FFCVConfig(dir=str(tmp_path / "ffcv")))
    write_betons(cfg, workers=1)
    return cfg, tmp_path / "ffcv"


def test_betons_read_back(betons):
    cfg, folder = betons
    assert set(check_betons(cfg)) == {"train", "val", "test"}


def test_corrupt_beton_names_the_file(betons):
    cfg, folder = betons
    data = bytearray((folder / "val.beton").read_bytes())
    data[:64] = b"\xff" * 64
    (folder / "val.beton").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"val.beton: not a readable FFCV .beton .*cifarbench prepare-ffcv"):
        check_betons(cfg)


def test_truncated_beton_names_the_file(betons):
    cfg, folder = betons
    path = folder / "train.beton"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"train.beton: (truncated|not a readable)"):
        check_betons(cfg)


def test_beton_of_other_image_sizes_is_refused(betons):
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    cfg, folder = betons
    big = [(np.zeros((64, 64, 3), np.uint8), 0)] * 50
    DatasetWriter(str(folder / "test.beton"), {"image": RGBImageField(), "label": IntField()}, num_workers=1
                  ).from_indexed_dataset(big)
    with pytest.raises(DataError, match=r"test.beton: holds 64x64 images, CIFAR needs 32x32"):
        check_betons(cfg)


def test_betons_of_another_data_config_are_refused(betons):
    cfg, _ = betons
    with pytest.raises(DataError, match="written for another data config"):
        check_betons(replace(cfg, val_size=60))


def test_missing_ffcv_install_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['ffcv'] = None\n"
            "from cifarbench.cli import main\n"
            f"sys.exit(main(['fit', '-c', 'bench/configs/smoke.yaml', '--data.path', 'ffcv', '--output.dir', '{tmp_path}']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("cifarbench: error: data.path='ffcv': the ffcv package is not installed; it "
                                    "builds against OpenCV and libjpeg-turbo found by pkg-config")
    assert "conda install -c conda-forge" in result.stderr and "pip install cifarbench[ffcv]" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
