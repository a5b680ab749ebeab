"""Shared fixtures: a tiny config, the real CIFAR-10 tarball beside the repo, and the installed CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

from cifarbench.config import DataConfig, MeasureConfig, ModelConfig, OutputConfig, RunConfig, TrainerConfig

REPO = Path(__file__).resolve().parents[1]
CIFAR_TARBALL = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CLI = str(Path(sys.executable).parent / "cifarbench")


def tiny_config(out_dir: Path, **sections) -> RunConfig:
    """A config that trains for seconds on CPU: 8-wide CustomResNet on 1,200 generated images."""
    cfg = RunConfig(
        model=ModelConfig(width=8),
        data=DataConfig(source="synthetic", synthetic_train_size=1200, synthetic_test_size=200, val_size=200,
                        batch_size=100, num_workers=0),
        trainer=TrainerConfig(accelerator="cpu", epochs=2, checkpoint=False),
        measure=MeasureConfig(target_accuracy=0.3, warmup_steps=2),
        output=OutputConfig(dir=str(out_dir), wandb="disabled"),
    )
    for name, changes in sections.items():
        cfg = replace(cfg, **{name: replace(getattr(cfg, name), **changes)}) if isinstance(changes, dict) else replace(cfg, **{name: changes})
    return cfg


@pytest.fixture
def cifar_tarball() -> Path:
    if not CIFAR_TARBALL.exists():
        pytest.fail(f"the real CIFAR-10 tarball is missing at {CIFAR_TARBALL} (../shared/data beside the repo)")
    return CIFAR_TARBALL


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs the installed console script; ``.stdout`` holds stdout and stderr interleaved as a user sees them."""
    full_env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run([CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                          cwd=REPO, env=full_env)


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stdout.strip().splitlines()[-1]
