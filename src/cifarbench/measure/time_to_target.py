"""Time to a target validation accuracy on three named clocks, and the whole accuracy-vs-time curve."""

from __future__ import annotations

import time
from typing import Any, Optional

import lightning as L
import torch

from .clock import Stamp, elapsed, elapsed_less, settle, stamp, synced_now
from .phases import PhaseTimer

# What each clock holds, and the published rule it follows; written into every record beside the seconds.
CLOCK_REGIONS = {
    "mlperf": "from before the data set is first touched (data setup) to the end of the validation that reached "
              "the target; start-up, compile, warm-up, validation and checkpoint writes all on the clock, nothing "
              "paused (MLPerf Training's rule)",
    "train_only": "the mlperf clock less every validation and checkpoint write before the target (DAWNBench's "
                  "rule: validation excluded, data preparation included)",
    "steady": "training only, device-timed: from the first step after an untimed warm-up of the same train and "
              "eval shapes (compile, autotuning and one-off allocation off the clock) to the target, validation "
              "and checkpoint writes excluded; a resumed run adds each attempt's, lost work not on it (as airbench "
              "reports)",
}


class TimeToTarget(L.Callback):
    """Seconds to the first validation at or above ``target``, on the clocks of :data:`CLOCK_REGIONS`.

    The wall clock starts at ``origin`` (``time.perf_counter()`` taken before the data set is first touched;
    by default ``on_fit_start``) and is read, after waiting for the device, only at the end of each
    validation (already a sync point: the host reads the accuracy). Validation time and the ``steady``
    clock come from device stamps (the start of training, validation start and end), checkpoint writes
    from the run's :class:`PhaseTimer` (``phases``), all read at that same moment. The ``steady`` clock
    needs the untimed warm-up (:class:`UntimedWarmup`, before this callback in the list): without one it is
    None. A run that never reaches the target reports ``seconds: None`` on every clock, never a number.

    Across a preemption the clocks go on from where the previous attempt stopped: the curve and the clocks
    at the moment of the checkpoint come back with it (``state_dict``), and ``prior_seconds``, when known,
    is the clock at the end of the previous attempt, so work done after the checkpoint, lost and redone,
    stays on every clock (``lost_seconds``). Time spent queued is on none; a restart's start-up is on mlperf.

    With ``stop_at_target`` training ends at the first validation at the target, as DAWNBench's runs do.
    """

    def __init__(self, target: float, monitor: str = "val/acc", prior_seconds: Optional[float] = None,
                 stop_at_target: bool = False, origin: Optional[float] = None, phases: Optional[PhaseTimer] = None,
                 untimed_warmup: bool = False):
        self.target, self.monitor, self.prior_seconds = target, monitor, prior_seconds
        self.stop_at_target = stop_at_target  # validation accuracy is synced, so every rank stops together
        self.origin, self.phases, self.untimed_warmup = origin, phases, untimed_warmup
        self.curve: list[dict[str, Any]] = []
        self.reached: Optional[dict[str, Any]] = None
        self._device = torch.device("cpu")
        self._t0: Optional[float] = None
        self._carried = {"validation_seconds": 0.0, "checkpoint_seconds": 0.0, "steady_seconds": 0.0}
        self._val_start: Optional[Stamp] = None
        self._validations: list[tuple[Stamp, Stamp]] = []  # this attempt's
        self._train_start: Optional[Stamp] = None
        self._steady_s = 0.0  # this attempt's, up to the newest validation end
        self._checkpoint_clock: Optional[float] = None
        self._lost_s = 0.0

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._device = trainer.strategy.root_device

    def on_fit_start(self, trainer, pl_module) -> None:
        offset = self._checkpoint_clock or 0.0
        if self.prior_seconds is not None:
            self._lost_s += max(self.prior_seconds - offset, 0.0)
            offset = self.prior_seconds
        self._t0 = (self.origin if self.origin is not None else time.perf_counter()) - offset

    def on_train_start(self, trainer, pl_module) -> None:
        self._train_start = stamp(self._device)  # after the untimed warm-up: the steady clock's start

    def clock(self) -> Optional[float]:
        """Seconds on the mlperf clock now (all attempts so far); None before fit started."""
        return None if self._t0 is None else time.perf_counter() - self._t0

    def _spent(self) -> dict[str, float]:
        """Validation, checkpoint and steady seconds of every attempt so far."""
        checkpoints = self.phases.checkpoint_seconds() if self.phases is not None else 0.0
        c = self._carried
        validations = sum(elapsed(a, b) for a, b in self._validations)  # settled at each validation's end
        return {"validation_seconds": c["validation_seconds"] + validations,
                "checkpoint_seconds": c["checkpoint_seconds"] + checkpoints,
                "steady_seconds": c["steady_seconds"] + self._steady_s}

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve, "reached": self.reached, "lost_seconds": self._lost_s, "clock": self.clock(),
                **self._spent()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve, self.reached = list(state["curve"]), state["reached"]
        self._lost_s, self._checkpoint_clock = state["lost_seconds"], state["clock"]
        self._carried = {k: state[k] for k in self._carried}

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._val_start = stamp(self._device)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._val_start is None:
            return
        end = stamp(self._device)
        now = synced_now(self._device)  # the end of validation: the host has read the accuracy already
        self._validations.append((self._val_start, end))
        self._val_start = None
        checkpoints = self.phases.checkpoints if self.phases is not None else []
        settle(*(b for _, b in checkpoints))  # written before this validation ended: passed already, no wait
        if self._train_start is not None:
            self._steady_s = elapsed_less(self._train_start, end, self._validations + checkpoints)
        spent = self._spent()
        mlperf = now - self._t0
        train_only = mlperf - spent["validation_seconds"] - spent["checkpoint_seconds"]
        steady = spent["steady_seconds"] if self.untimed_warmup else None
        metrics = trainer.callback_metrics
        point = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step, "val_acc": float(metrics[self.monitor]),
                 "val_loss": float(metrics["val/loss"]) if "val/loss" in metrics else None,
                 "val_acc_no_tta": float(metrics["val/acc_no_tta"]) if "val/acc_no_tta" in metrics else None,
                 "seconds": {"mlperf": mlperf, "train_only": train_only, "steady": steady}}
        self.curve.append(point)
        if self.reached is None and point["val_acc"] >= self.target:
            self.reached = point
        if self.reached is not None and self.stop_at_target:
            trainer.should_stop = True

    @property
    def summary(self) -> dict[str, Any]:
        hit, spent = self.reached or {}, self._spent()
        seconds = hit.get("seconds") or {}
        clocks = {name: {"seconds": seconds.get(name), "region": region} for name, region in CLOCK_REGIONS.items()}
        if not self.untimed_warmup:
            clocks["steady"]["note"] = ("not given: no untimed warm-up ran (measure.untimed_warmup_steps: 0), so "
                                        "compile and warm-up would be on it")
        return {"target": self.target, "reached": self.reached is not None, "epoch": hit.get("epoch"),
                "step": hit.get("step"), "clocks": clocks, "lost_seconds": self._lost_s,
                # the whole run's, up to its last validation (the clocks hold those before the target)
                "validation_seconds": spent["validation_seconds"], "checkpoint_seconds": spent["checkpoint_seconds"]}
