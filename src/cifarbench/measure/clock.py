"""Stamps that do not stop the device, and the few places where waiting for it is allowed.

A :class:`Stamp` is taken in a hook without waiting: on CUDA it records an event in the current stream
(``torch.cuda.Event(enable_timing=True)``), which the device passes when it has finished everything queued
before it; on a CPU, where work is synchronous, ``time.perf_counter()`` is the same thing. Two stamps give
the device-side time between them (:func:`elapsed`), read only at a window's end, an epoch's end or a
logging step, after :func:`settle` has waited for the newest stamp once. Waiting in every step would keep
the host from running ahead of the device and turn every host-side cost into device idle time.

Every stamp also keeps the host's ``perf_counter`` at the moment it was taken: the host-side view of the
same window (fetch, step launch, harness time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

import lightning as L
import torch


@dataclass
class Stamp:
    host: float  # time.perf_counter() when the hook ran
    event: Optional[Any] = field(default=None, repr=False)  # torch.cuda.Event on CUDA, else None


def stamp(device: torch.device) -> Stamp:
    """A stamp on ``device`` without waiting for it."""
    if device.type == "cuda":
        event = torch.cuda.Event(enable_timing=True)
        event.record()  # the current stream of the current device, which Lightning set to the run's device
        return Stamp(time.perf_counter(), event)
    return Stamp(time.perf_counter())


def settle(*stamps: Optional[Stamp]) -> None:
    """Waits until the device has passed every given stamp: one wait, on the newest that is not yet passed,
    and none when they are (``query`` does not wait)."""
    pending = [s.event for s in stamps if s is not None and s.event is not None and not s.event.query()]
    if pending:
        pending[-1].synchronize()  # events in one stream complete in order


def elapsed(start: Stamp, end: Stamp) -> float:
    """Device seconds from ``start`` to ``end`` (both settled); host seconds on a CPU."""
    if start.event is not None and end.event is not None:
        return start.event.elapsed_time(end.event) / 1e3
    return end.host - start.host


def elapsed_less(start: Stamp, end: Stamp, pauses: list[tuple[Stamp, Stamp]]) -> float:
    """Device seconds from ``start`` to ``end`` less every ``(start, end)`` pause that lies between them
    (validations, checkpoint writes); all settled."""
    inside = [(a, b) for a, b in pauses if start.host <= a.host and b.host <= end.host]
    return elapsed(start, end) - sum(elapsed(a, b) for a, b in inside)


def synced_now(device: torch.device) -> float:
    """``time.perf_counter()`` after the device has finished all queued work (a no-op wait on CPU).

    For wall clocks at boundaries that are already sync points (the end of a validation, whose accuracy the
    host reads) and outside timed windows; never per step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "xpu":
        torch.xpu.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    return time.perf_counter()


def gather_rows(trainer: L.Trainer, values: list[float] | torch.Tensor) -> list[list[float]]:
    """Every rank's ``values`` (a list, or a 1-d tensor already on the device), one row per rank, read on the
    host: one collective and one wait, so only at window ends or every N steps; every rank must call it."""
    if not isinstance(values, torch.Tensor):
        values = torch.tensor(values, dtype=torch.float64, device=trainer.strategy.root_device)
    gathered = trainer.strategy.all_gather(values)
    return gathered.reshape(-1, len(values)).tolist()
