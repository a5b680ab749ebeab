"""Wall-clock time to a target validation accuracy, and the whole accuracy-vs-time curve."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L

from .sync import synced_now


class TimeToAccuracy(L.Callback):
    """Seconds from the start of fit to the first validation at or above ``target``.

    The clock starts at ``on_fit_start`` (data loaded, model on its device, process group up) and the
    moment of reaching the target is the synchronised end of that validation. Two clocks are kept:
    ``seconds`` includes validation time (MLPerf's rule) and ``seconds_excl_val`` leaves it out
    (DAWNBench's). A run that never reaches the target reports ``seconds: None``, never a number.
    """

    def __init__(self, target: float, monitor: str = "val/acc"):
        self.target, self.monitor = target, monitor
        self.curve: list[dict[str, Any]] = []
        self.reached: Optional[dict[str, Any]] = None
        self._t0 = 0.0
        self._val_s = 0.0
        self._val_start: Optional[float] = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._t0 = synced_now(pl_module.device)

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

    @property
    def summary(self) -> dict[str, Any]:
        hit = self.reached or {}
        return {"target": self.target, "reached": self.reached is not None, "epoch": hit.get("epoch"),
                "step": hit.get("step"), "seconds": hit.get("seconds"), "seconds_excl_val": hit.get("seconds_excl_val"),
                "validation_seconds": self._val_s}
