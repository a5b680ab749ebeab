"""Slurm's requeue signal, held until Lightning can handle it.

Slurm sends SIGUSR1 ``signal_seconds`` before the time limit. Lightning installs its handler (checkpoint, then
``scontrol requeue``) only when ``trainer.fit`` starts; a signal that came earlier, during imports or data
loading, would take SIGUSR1's default action and kill the job unsaved. So a process under Slurm blocks
SIGUSR1 from its first line (``python -m cifarbench``) and unblocks it once training starts: a signal that
came meanwhile stays pending and then reaches Lightning's handler. Threads and DDP workers started in
between inherit the block (and workers unblock their own).
"""

from __future__ import annotations

import os
import signal

REQUEUE_SIGNAL = signal.SIGUSR1  # Lightning's SLURMEnvironment default


def hold_requeue_signal() -> None:
    if "SLURM_JOB_ID" in os.environ:
        signal.pthread_sigmask(signal.SIG_BLOCK, {REQUEUE_SIGNAL})


def release_requeue_signal() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {REQUEUE_SIGNAL})
