"""Images/s of each data path's training loader, same augmentation (crop, flip, cutout), same batches.

    .venv/bin/python -m pytest bench/test_data_path_throughput.py --benchmark-json=OUT.json
    ... --benchmark-compare=OUT.json       # against an earlier run (e.g. another commit)

Each benchmark round pulls ``STEPS`` batches of ``BATCH`` from an endless chain of epochs that has
already delivered ``WARMUP`` batches (worker start-up and FFCV's JIT compilation are left out), so a
round's time is steady-state loading; ``extra_info.images_per_sec`` is BATCH x STEPS over the median
round. Batches end on the training device, as a training step would take them.
"""

import itertools

import pytest
import torch

from cifarbench.config import DataConfig, FFCVConfig
from cifarbench.data import build_datamodule
from cifarbench.data.ffcv_path import write_betons

BATCH, STEPS, WARMUP, ROUNDS = 512, 20, 3, 5
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DEVICE_PATH_GOAL = 100_000  # images/s with the full augmentation on the 2-core development CPU


def data_config(path: str, workers: int, ffcv_dir: str = "ffcv") -> DataConfig:
    return DataConfig(source="synthetic", path=path, num_workers=workers, batch_size=BATCH,
                      synthetic_train_size=10_240 + 512, synthetic_test_size=512, val_size=512,
                      ffcv=FFCVConfig(dir=ffcv_dir))


@pytest.fixture(scope="module")
def ffcv_dir(tmp_path_factory) -> str:
    directory = str(tmp_path_factory.mktemp("betons"))
    write_betons(data_config("ffcv", 2, directory))
    return directory


@pytest.mark.parametrize("path, workers", [("albumentations", 0), ("albumentations", 1), ("albumentations", 2),
                                           ("ffcv", 2), ("device", 0)])
def test_loader_images_per_sec(benchmark, ffcv_dir, path, workers):
    datamodule = build_datamodule(data_config(path, workers, ffcv_dir), seed=0)
    datamodule.standalone_device = DEVICE
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    batches = (batch for _ in itertools.count() for batch in loader)

    def pull() -> int:
        images = 0
        for x, y in itertools.islice(batches, STEPS):
            x = x.to(DEVICE, non_blocking=True)
            images += len(y)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return images

    for _ in range(WARMUP):
        next(batches)
    images = benchmark.pedantic(pull, rounds=ROUNDS, iterations=1)
    batches.close()
    rate = images / benchmark.stats.stats.median
    benchmark.extra_info.update({"images_per_sec": rate, "batch_size": BATCH, "steps_per_round": STEPS,
                                 "device": str(DEVICE), "augmentation": "pad-4 crop, flip 0.5, cutout 8 px 0.5"})
    if path == "device":
        print(f"device path: {rate:,.0f} images/s (goal {DEVICE_PATH_GOAL:,})")
