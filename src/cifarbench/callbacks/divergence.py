"""Stops a run whose loss has blown up, instead of training on NaNs for hours."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch


class DivergenceGuard(L.Callback):
    """Stops training at the first non-finite training loss on any rank and records the step.

    The decision is reduced across ranks every step so that all ranks stop together (a rank that stopped
    alone would leave the others hanging in the next gradient all-reduce).
    """

    def __init__(self):
        self.step: Optional[int] = None
        self.loss: Optional[float] = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        bad = trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(loss).all()), all=False)
        if bad and self.step is None:
            self.step, self.loss = trainer.global_step, float(loss.detach().float())
            trainer.should_stop = True

    @property
    def summary(self) -> dict[str, Any]:
        return {"diverged": self.step is not None, "step": self.step, "loss": self.loss}
