"""Honest clocks and cross-rank sums for the measurement callbacks."""

from __future__ import annotations

import time

import lightning as L
import torch


def synced_now(device: torch.device) -> float:
    """``time.perf_counter()`` after the device has finished all queued work (a no-op wait on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "xpu":
        torch.xpu.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    return time.perf_counter()


def gather_rows(trainer: L.Trainer, values: list[float]) -> list[list[float]]:
    """Every rank's ``values``, one row per rank (a collective: every rank must call it)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=trainer.strategy.root_device)
    gathered = trainer.strategy.all_gather(tensor)
    return gathered.reshape(-1, len(values)).cpu().tolist()
