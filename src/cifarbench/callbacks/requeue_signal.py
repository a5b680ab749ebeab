"""Lets Slurm's held requeue signal through once Lightning handles it (see ``cifarbench.cluster.signals``)."""

from __future__ import annotations

import lightning as L

from ..cluster.signals import release_requeue_signal


class ReleaseRequeueSignal(L.Callback):
    """Unblocks SIGUSR1 at the start of training: Lightning's handler is installed by then."""

    def on_train_start(self, trainer, pl_module) -> None:
        release_requeue_signal()
