"""The Lightning Trainer for a TrainerConfig: strategy, precision, devices, checkpointing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.strategies import DDPStrategy

from .config import TrainerConfig


def build_strategy(t: TrainerConfig) -> str | DDPStrategy:
    if t.strategy == "auto":
        return "auto"
    return DDPStrategy(start_method="spawn" if t.strategy == "ddp_spawn" else "popen",
                       gradient_as_bucket_view=t.ddp.gradient_as_bucket_view, static_graph=t.ddp.static_graph,
                       bucket_cap_mb=t.ddp.bucket_cap_mb, find_unused_parameters=t.ddp.find_unused_parameters)


def build_trainer(t: TrainerConfig, run_dir: Path, callbacks: list, loggers: list[Logger], **overrides: Any) -> L.Trainer:
    """The Lightning Trainer for the strategy knobs; ``overrides`` go to ``L.Trainer`` as they are."""
    if t.checkpoint:
        callbacks = [*callbacks, ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0)]
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=build_strategy(t),
        precision=t.precision, sync_batchnorm=t.sync_batchnorm, benchmark=t.cudnn_benchmark, max_epochs=t.epochs,
        callbacks=callbacks, logger=loggers, enable_checkpointing=t.checkpoint, default_root_dir=run_dir,
        num_sanity_val_steps=0,  # keeps validation out of the time before the first training step
        **overrides,
    )
