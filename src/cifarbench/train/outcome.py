"""How a fit ended, and the run record that says so."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import lightning as L
import torch

from ..cluster.requeue import Attempt
from ..config import RunConfig
from ..models import count_parameters, flops_per_image
from ..record import final_status
from .measurements import Measurements


@dataclass
class Outcome:
    """What ``trainer.fit`` (and the test after it) came to."""

    error: Optional[str] = None
    failed_rank: Optional[int] = None
    failed_node: Optional[str] = None
    accuracy: dict[str, Any] = field(default_factory=dict)
    attempt: Optional[str] = None  # the attempt's outcome where it says more than a status: requeued, preempted,
    #                                interrupted

    @property
    def requeued(self) -> bool:
        return self.attempt in ("requeued", "preempted")

    def status(self, measurements: Measurements) -> str:
        if self.requeued:
            return "requeued"
        if self.attempt == "interrupted":
            return "interrupted"
        return final_status(self.error, measurements.diverged, measurements.time_to_target.reached is not None)


def accuracies(curve: list[dict], trainer: L.Trainer) -> dict[str, Optional[float]]:
    """Read right after fit: ``trainer.test`` replaces the callback metrics."""
    train_acc = trainer.callback_metrics.get("train/acc_epoch")
    return {"best_val": max((p["val_acc"] for p in curve), default=None),
            "final_val": curve[-1]["val_acc"] if curve else None,
            "final_val_no_tta": curve[-1].get("val_acc_no_tta") if curve else None,  # set when model.tta is on
            "final_train": float(train_acc) if train_acc is not None else None,
            "test": None, "epochs_completed": trainer.current_epoch, "steps_completed": trainer.global_step}


def fit_record(cfg: RunConfig, attempt: Attempt, outcome: Outcome, measurements: Measurements, net: torch.nn.Module,
               scaling: dict[str, Any], found_lr: Optional[dict[str, Any]], devices: int) -> dict[str, Any]:
    """The run's record after this attempt (whose end it also notes in the attempts)."""
    status = outcome.status(measurements)
    attempt.end(outcome.attempt or status, outcome.error, measurements.time_to_target.clock())
    tta = measurements.time_to_target
    return attempt.record(
        cfg, status, error=outcome.error, failed_rank=outcome.failed_rank, failed_node=outcome.failed_node,
        scaling=scaling, **measurements.record_parts(cfg, devices), accuracy=outcome.accuracy, curve=tta.curve,
        lr_find=found_lr and {k: v for k, v in found_lr.items() if k not in ("lr", "loss")},
        model={"parameters": count_parameters(net), "forward_flops_per_image": flops_per_image(cfg.model),
               "train_flops_per_image": measurements.throughput.train_flops_per_image})
