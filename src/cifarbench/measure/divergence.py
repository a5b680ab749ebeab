"""Stops a run whose loss has blown up, instead of training on NaNs for hours, without a per-step wait."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch

from .clock import gather_rows

NEVER = -1


class DivergenceGuard(L.Callback):
    """Stops training after the first non-finite training loss on any rank and records that step.

    Every step the check stays on the device: the first bad step (and its loss) is kept in two device
    tensors by ``torch.where``, with no read to the host. Every ``check_every`` steps, and at the last step
    of each epoch, one all-gather brings every rank's first bad step to every rank and the host reads it
    (one wait and one collective per interval, instead of one of each per step). All ranks see the same
    answer and stop together: a rank that stopped alone would leave the others hanging in the next gradient
    all-reduce. A NaN therefore stops the run at most ``check_every - 1`` steps after it appeared, and the
    record still names the step it appeared at (``step``) as well as the one that noticed it (``noticed_at_step``).
    """

    def __init__(self, check_every: int = 50):
        if check_every < 1:
            raise ValueError(f"check_every={check_every}: must be at least 1")
        self.check_every = check_every
        self.step: Optional[int] = None
        self.loss: Optional[float] = None
        self.noticed_at_step: Optional[int] = None
        self._first_step: Optional[torch.Tensor] = None  # on the device: NEVER, or the global step of the first NaN
        self._first_loss: Optional[torch.Tensor] = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = (outputs["loss"] if isinstance(outputs, dict) else outputs).detach()
        if self._first_step is None:
            self._first_step = torch.full((), NEVER, dtype=torch.float64, device=loss.device)
            self._first_loss = torch.zeros((), dtype=torch.float64, device=loss.device)
        new = ~torch.isfinite(loss).all() & (self._first_step == NEVER)
        self._first_step = torch.where(new, float(trainer.global_step), self._first_step)
        self._first_loss = torch.where(new, loss.to(torch.float64), self._first_loss)
        if trainer.global_step % self.check_every == 0 or batch_idx + 1 == trainer.num_training_batches:
            self._check(trainer)

    def _check(self, trainer) -> None:
        rows = gather_rows(trainer, torch.stack([self._first_step, self._first_loss]))
        bad = sorted((step, loss) for step, loss in rows if step != NEVER)
        if bad and self.step is None:
            (step, loss), self.noticed_at_step = bad[0], trainer.global_step
            self.step, self.loss = int(step), float(loss)
            trainer.should_stop = True

    @property
    def summary(self) -> dict[str, Any]:
        return {"diverged": self.step is not None, "step": self.step, "loss": self.loss,
                "noticed_at_step": self.noticed_at_step, "check_every": self.check_every}
