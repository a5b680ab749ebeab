"""The FFCV data path: .beton files read by FFCV's Loader, augmented by FFCV's JIT-compiled operations.

``write_betons`` turns any data source into train/val/test .beton files (the seed's split), with a
manifest that ties them to the data config they came from. The loader applies the seed's augmentation
in the seed's order with FFCV's own operations: RandomTranslate (FFCV fills the border with a constant,
here the mean pixel, where albumentations reflects), RandomHorizontalFlip, then a cutout. FFCV's Cutout
always cuts; the seed cuts with probability 0.5, so ``RandomCutout`` adds that probability on FFCV's
Operation API.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..config import DataConfig
from ..errors import CifarbenchError, DataError
from ..record import atomic_write_text
from .augmentation import CIFAR_MEAN, CIFAR_STD, MEAN_PIXEL_U8, AlternatingFlip
from .module import CifarDataModule, load_splits
from .sources import prepare_source

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
INSTALL_HINT = ("the ffcv package is not installed; it builds against OpenCV and libjpeg-turbo found by pkg-config "
                "(apt-get install pkg-config libopencv-dev libturbojpeg0-dev as root, or conda install -c conda-forge "
                "pkg-config opencv libjpeg-turbo), then `pip install cifarbench[ffcv]` or `bash scripts/setup.sh`")


def require_ffcv() -> None:
    """Imports FFCV, or says how to install it. FFCV's compiler calls ``torch.set_num_threads(1)`` at import,
    which would halve training speed on a CPU; the thread count is put back."""
    threads = torch.get_num_threads()
    try:
        import ffcv.pipeline.compiler  # noqa: F401
    except ImportError as err:
        raise CifarbenchError(f"data.path='ffcv': {INSTALL_HINT} ({err})") from None
    torch.set_num_threads(threads)


def data_fingerprint(cfg: DataConfig) -> dict[str, Any]:
    """What decides the pixels and the split in the .beton files; augmentation and loading do not."""
    keys = ("source", "protocol", "train_subset", "test_subset", "val_size", "split_seed")
    out = {k: getattr(cfg, k) for k in keys}
    if cfg.source == "synthetic":
        out |= {"synthetic_train_size": cfg.synthetic_train_size, "synthetic_test_size": cfg.synthetic_test_size}
    else:
        out["root"] = str(Path(cfg.root).expanduser().resolve())
    return out | {"storage": cfg.ffcv.storage, "jpeg_quality": cfg.ffcv.jpeg_quality if cfg.ffcv.storage == "jpeg" else None}


def write_betons(cfg: DataConfig, workers: int = 2) -> Path:
    """Writes <ffcv.dir>/{train,val,test}.beton and manifest.json (each file atomically); returns the directory."""
    require_ffcv()
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    prepare_source(cfg)
    out = Path(cfg.ffcv.dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    splits = load_splits(cfg)
    for split in SPLITS:
        images = splits[split]
        tmp = out / f".{split}.beton.tmp"
        mode = "jpg" if cfg.ffcv.storage == "jpeg" else "raw"
        writer = DatasetWriter(str(tmp), {"image": RGBImageField(write_mode=mode, jpeg_quality=cfg.ffcv.jpeg_quality),
                                          "label": IntField()}, num_workers=workers)
        print(f"writing {out / (split + '.beton')} ({len(images)} images, {cfg.ffcv.storage})", flush=True)
        writer.from_indexed_dataset(_Pairs(images.images, images.labels))  # FFCV shows a tqdm progress bar
        os.replace(tmp, out / f"{split}.beton")
    counts = {split: len(splits[split]) for split in SPLITS}
    atomic_write_text(out / MANIFEST, json.dumps({"data": data_fingerprint(cfg), "counts": counts}, indent=2) + "\n")
    return out


class _Pairs:
    """The (HWC uint8 image, int label) pairs DatasetWriter asks for."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], int(self.labels[i])


def check_betons(cfg: DataConfig) -> dict[str, Path]:
    """The .beton paths, once each has been opened and found to hold what this config expects."""
    require_ffcv()
    from ffcv.reader import Reader

    folder = Path(cfg.ffcv.dir).expanduser()
    manifest_path = folder / MANIFEST
    rewrite = f"rewrite them with `cifarbench prepare-ffcv` and this config (data.ffcv.dir={cfg.ffcv.dir!r})"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{manifest_path}: no readable FFCV manifest ({type(err).__name__}); {rewrite}") from None
    if manifest.get("data") != data_fingerprint(cfg):
        raise DataError(f"{folder}: these .beton files were written for another data config "
                        f"({manifest.get('data')}); {rewrite}")
    paths = {split: folder / f"{split}.beton" for split in SPLITS}
    for split, path in paths.items():
        try:
            reader = Reader(str(path))
            image = reader.metadata[f"f{reader.field_names.index('image')}"]  # metadata columns are f0, f1, ...
            widths, heights = image["width"], image["height"]
            size = path.stat().st_size
            ends = reader.alloc_table["ptr"] + reader.alloc_table["size"]
        except Exception as err:  # FFCV raises many kinds (AssertionError, ValueError, IndexError, OSError)
            raise DataError(f"{path}: not a readable FFCV .beton ({type(err).__name__}: {err}); {rewrite}") from None
        if len(widths) != manifest["counts"][split] or len(ends) != len(widths) or (len(ends) and ends.max() > size):
            raise DataError(f"{path}: truncated or incomplete ({len(widths)} of {manifest['counts'][split]} images, "
                            f"{size} bytes); {rewrite}")
        if len(widths) and not ((widths == 32).all() and (heights == 32).all()):
            raise DataError(f"{path}: holds {int(widths[0])}x{int(heights[0])} images, CIFAR needs 32x32; {rewrite}")
    return paths


def random_cutout(size: int, prob: float, fill: tuple[int, int, int]):
    """FFCV's Cutout with the seed's probability: one size x size square, fully inside, filled with ``fill``."""
    from ffcv.pipeline.compiler import Compiler
    from ffcv.pipeline.operation import Operation

    class RandomCutout(Operation):
        def generate_code(self) -> Callable:
            my_range = Compiler.get_iterator()
            fill_array = np.array(fill, dtype=np.uint8)

            def cutout(images, *_):
                for i in my_range(images.shape[0]):
                    if np.random.rand() < prob:
                        y = np.random.randint(images.shape[1] - size + 1)
                        x = np.random.randint(images.shape[2] - size + 1)
                        images[i, y:y + size, x:x + size] = fill_array
                return images

            cutout.is_parallel = True
            return cutout

        def declare_state_and_memory(self, previous_state):
            from dataclasses import replace

            return replace(previous_state, jit_mode=True), None

    return RandomCutout()


class Normalise(torch.nn.Module):
    """The CIFAR normalisation of a float NCHW batch of 0..255 pixels, as the last operation of FFCV's pipeline
    (FFCV runs torch Modules there). Two tensor ops: torchvision's Normalize would make torchvision, which
    cifarbench keeps optional, a requirement of the FFCV path."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.mean = torch.tensor([m * 255 for m in CIFAR_MEAN], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor([s * 255 for s in CIFAR_STD], device=device).view(1, 3, 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def image_pipeline(cfg: Optional[DataConfig], device: torch.device) -> list:
    """Decode, [translate, flip, cutout,] to a float NCHW tensor on ``device``, normalise."""
    from ffcv.fields.decoders import SimpleRGBImageDecoder
    from ffcv.transforms import Convert, RandomHorizontalFlip, RandomTranslate, ToDevice, ToTensor, ToTorchImage

    ops: list = [SimpleRGBImageDecoder()]
    if cfg is not None:
        ops += [RandomTranslate(padding=cfg.pad, fill=MEAN_PIXEL_U8),
                RandomHorizontalFlip(0.0 if cfg.alternating_flip else cfg.flip_prob),  # else LazyEpochs flips
                random_cutout(cfg.cutout_size, cfg.cutout_prob, MEAN_PIXEL_U8)]
    return ops + [ToTensor(), ToDevice(device, non_blocking=True), ToTorchImage(channels_last=False),
                  Convert(torch.float32), Normalise(device)]


class LazyEpochs:
    """An FFCV Loader whose ``iter()`` starts nothing until the first batch is asked for.

    Lightning calls ``iter()`` on every non-DataLoader once just to check it is iterable; on FFCV each
    ``iter()`` starts an epoch thread, and a second one running beside the real epoch hangs the loader.
    Closing the generator (Lightning stops after ``len`` batches) closes FFCV's epoch iterator too.
    FFCV also calls ``torch.set_num_threads(num_workers)`` when it builds a Loader or an epoch, which
    would slow training down on a CPU: the training process's thread count is put back each time.
    The epoch's buffers are made outside inference mode: Lightning evaluates under ``inference_mode``,
    and FFCV's loader thread (which is not) could not write into inference tensors.
    An alternating flip is applied here, on the device, to the images of each batch: FFCV's compiled operations
    see the sample indices but not the epoch, while the epoch's order (``EpochIterator.order``, batched in turn)
    says which images each batch holds. Flipping after translate and cutout is the same as before them: both are
    symmetric under mirroring.
    """

    def __init__(self, loader, torch_threads: int, flips: Optional[AlternatingFlip] = None, device=None):
        self.loader, self.torch_threads = loader, torch_threads
        self.flips = flips.to(device) if flips is not None else None
        torch.set_num_threads(torch_threads)  # FFCV's Loader set it to its own num_workers

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        with torch.inference_mode(False):
            epoch = iter(self.loader)
        torch.set_num_threads(self.torch_threads)
        if self.flips is None:
            yield from epoch
            return
        order = torch.from_numpy(epoch.order.astype(np.int64))
        device = self.flips.first.device
        if device.type == "cuda":  # from pinned memory the copy is asynchronous: no wait on the GPU's queue
            order = order.pin_memory()
        on_device, size = order.to(device, non_blocking=True), self.loader.batch_size  # once per epoch
        for b, (images, labels) in enumerate(epoch):
            mirrored = self.flips.flipped(on_device[b * size : b * size + len(labels)]).view(-1, 1, 1, 1)
            yield torch.where(mirrored, images.flip(-1), images), labels


class FFCVDataModule(CifarDataModule):
    """Builds FFCV Loaders inside the dataloader hooks, after the process group exists (``distributed=True``
    then gives each rank its own shard, as DistributedSampler would)."""

    def __init__(self, cfg: DataConfig, drop_last_train: bool = True, seed: int = 0):
        super().__init__(cfg, drop_last_train, seed)
        self.paths: dict[str, Path] = {}

    def prepare_data(self) -> None:
        require_ffcv()
        if not (Path(self.cfg.ffcv.dir).expanduser() / MANIFEST).exists():
            write_betons(self.cfg, workers=max(self.cfg.num_workers, 1))

    def setup(self, stage: str) -> None:
        self.paths = check_betons(self.cfg)

    def loader(self, split: str, train: bool):
        _, world = self.world
        threads = torch.get_num_threads()  # before FFCV's Loader changes it
        loader = self._ffcv_loader(split, train, self.cfg.batch_size, self.device, distributed=world > 1)
        flips = self.alternating_flip(loader.reader.num_samples) if train else None
        return LazyEpochs(loader, threads, flips, self.device)

    def first_train_images(self, count: int) -> torch.Tensor:
        """The first ``count`` images of train.beton, decoded by FFCV as training decodes them, unaugmented: the
        FFCV path never loads the source's arrays."""
        threads = torch.get_num_threads()  # before FFCV's Loader changes it
        batches = iter(LazyEpochs(self._ffcv_loader("train", False, count, torch.device("cpu"), distributed=False),
                                  threads))
        images = next(batches)[0][:count]
        batches.close()  # ends FFCV's epoch thread
        return images

    def _ffcv_loader(self, split: str, train: bool, batch_size: int, device: torch.device, distributed: bool):
        """FFCV's Loader over one split: shuffled, augmented and dropping the last batch when ``train``."""
        from ffcv.fields.decoders import IntDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import Squeeze, ToDevice, ToTensor

        order = {"random": OrderOption.RANDOM, "quasi_random": OrderOption.QUASI_RANDOM}[self.cfg.ffcv.order]
        return Loader(str(self.paths[split]), batch_size=batch_size, num_workers=max(self.cfg.num_workers, 1),
                      order=order if train else OrderOption.SEQUENTIAL, os_cache=self.cfg.ffcv.os_cache,
                      drop_last=train and self.drop_last_train, distributed=distributed, seed=self.seed,
                      batches_ahead=self.cfg.ffcv.batches_ahead,
                      pipelines={"image": image_pipeline(self.cfg if train else None, device),
                                 "label": [IntDecoder(), ToTensor(), Squeeze(1), ToDevice(device, non_blocking=True)]})
