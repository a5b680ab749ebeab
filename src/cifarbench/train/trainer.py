"""The Lightning Trainer for a TrainerConfig: strategy, precision, devices, checkpointing."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.strategies import DDPStrategy

from ..config import TrainerConfig
from ..cluster.watchdog import RankWatchdog, WatchedDDPStrategy, watchdog_supported
from ..record import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's TorchCheckpointIO, writing through ``record.atomic_write``: temporary file, fsync, rename.

    Lightning's own save goes through an fsspec transaction (a rename, but no fsync, and a full disk
    surfaces as whatever fsspec raises); this keeps the previous checkpoint intact on a crash or a full
    disk, and says which file could not be written.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        buffer = io.BytesIO()  # serialised first (as Lightning does): torch's zip writer hides a full disk's errno
        torch.save(checkpoint, buffer)
        atomic_write(Path(path), lambda f: f.write(buffer.getbuffer()))


def build_strategy(t: TrainerConfig, watchdog: Optional[RankWatchdog] = None) -> str | DDPStrategy:
    """Lightning's strategy for the knobs; with ``watchdog``, DDP's script launcher reports a dead rank to it."""
    if t.strategy == "auto":
        return "auto"
    kwargs = dict(start_method="spawn" if t.strategy == "ddp_spawn" else "popen",
                  timeout=timedelta(seconds=t.ddp.timeout_seconds),
                  gradient_as_bucket_view=t.ddp.gradient_as_bucket_view, static_graph=t.ddp.static_graph,
                  bucket_cap_mb=t.ddp.bucket_cap_mb, find_unused_parameters=t.ddp.find_unused_parameters)
    return WatchedDDPStrategy(watchdog, **kwargs) if watchdog and watchdog_supported() else DDPStrategy(**kwargs)


def build_trainer(t: TrainerConfig, run_dir: Path, callbacks: list, loggers: list[Logger],
                  watchdog: Optional[RankWatchdog] = None, **overrides: Any) -> L.Trainer:
    """The Lightning Trainer for the strategy knobs; ``overrides`` go to ``L.Trainer`` as they are."""
    if t.checkpoint:
        # checkpoints/last.ckpt every N epochs (the newest: top-1 with no monitor), overwritten in place;
        # Lightning 2.6's save_last alone writes only when a top-k checkpoint was saved, i.e. never with top-0
        callbacks = [*callbacks, ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                                                 every_n_epochs=t.checkpoint_every_n_epochs,
                                                 enable_version_counter=False)]
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=build_strategy(t, watchdog),
        precision=t.precision, sync_batchnorm=t.sync_batchnorm, benchmark=t.cudnn_benchmark, max_epochs=t.epochs,
        callbacks=callbacks, logger=loggers, enable_checkpointing=t.checkpoint, default_root_dir=run_dir,
        num_sanity_val_steps=0,  # keeps validation out of the time before the first training step
        plugins=[AtomicCheckpointIO()],
        **overrides,
    )
