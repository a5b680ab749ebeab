"""Wall-clock time to a target validation accuracy, and the whole accuracy-vs-time curve."""

from __future__ import annotations

import time
from typing import Any, Optional

import lightning as L

from .sync import synced_now


class TimeToAccuracy(L.Callback):
    """Seconds from the start of fit to the first validation at or above ``target``.

    The clock starts at ``on_fit_start`` (data loaded, model on its device, process group up) and the
    moment of reaching the target is the synchronised end of that validation. Two clocks are kept:
    ``seconds`` includes validation time (MLPerf's rule) and ``seconds_excl_val`` leaves it out
    (DAWNBench's). A run that never reaches the target reports ``seconds: None``, never a number.

    Across a preemption the clock goes on from where the previous attempt stopped: the curve and the
    clock at the moment of the checkpoint come back with it (``state_dict``), and ``prior_seconds``, when
    known, is the clock at the end of the previous attempt, so work done after the checkpoint, lost and
    redone, stays on the clock (``lost_seconds``). Time spent queued and restarting is not on it.

    With ``stop_at_target`` training ends at the first validation at the target, as DAWNBench's runs do.
    """

    def __init__(self, target: float, monitor: str = "val/acc", prior_seconds: Optional[float] = None,
                 stop_at_target: bool = False):
        self.target, self.monitor, self.prior_seconds = target, monitor, prior_seconds
        self.stop_at_target = stop_at_target  # validation accuracy is synced, so every rank stops together
        self.curve: list[dict[str, Any]] = []
        self.reached: Optional[dict[str, Any]] = None
        self._t0: Optional[float] = None
        self._val_s = 0.0
        self._val_start: Optional[float] = None
        self._checkpoint_clock: Optional[float] = None
        self._lost_s = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        offset = self._checkpoint_clock or 0.0
        if self.prior_seconds is not None:
            self._lost_s += max(self.prior_seconds - offset, 0.0)
            offset = self.prior_seconds
        self._t0 = synced_now(pl_module.device) - offset

    def clock(self) -> Optional[float]:
        """Seconds on the clock now (all attempts so far); None before fit started."""
        return None if self._t0 is None else time.perf_counter() - self._t0

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve, "reached": self.reached, "validation_seconds": self._val_s,
                "lost_seconds": self._lost_s, "clock": self.clock()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve, self.reached = list(state["curve"]), state["reached"]
        self._val_s, self._lost_s, self._checkpoint_clock = state["validation_seconds"], state["lost_seconds"], state["clock"]

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._val_start = synced_now(pl_module.device)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._val_start is None:
            return
        now = synced_now(pl_module.device)
        excl_val = self._val_start - self._t0 - self._val_s
        self._val_s += now - self._val_start
        self._val_start = None
        metrics = trainer.callback_metrics
        point = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step, "seconds": now - self._t0,
                 "seconds_excl_val": excl_val, "val_acc": float(metrics[self.monitor]),
                 "val_loss": float(metrics["val/loss"]) if "val/loss" in metrics else None}
        self.curve.append(point)
        if self.reached is None and point["val_acc"] >= self.target:
            self.reached = point
        if self.reached is not None and self.stop_at_target:
            trainer.should_stop = True

    @property
    def summary(self) -> dict[str, Any]:
        hit = self.reached or {}
        return {"target": self.target, "reached": self.reached is not None, "epoch": hit.get("epoch"),
                "step": hit.get("step"), "seconds": hit.get("seconds"), "seconds_excl_val": hit.get("seconds_excl_val"),
                "validation_seconds": self._val_s, "lost_seconds": self._lost_s}
