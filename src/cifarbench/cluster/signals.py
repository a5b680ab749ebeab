"""Signals: Slurm's requeue signal, held until Lightning can handle it; and Ctrl-C, noted.

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


class UserInterrupt:
    """Whether the user pressed Ctrl-C (SIGINT) in this process.

    Python turns SIGINT into KeyboardInterrupt; Lightning catches that inside ``trainer.fit`` (and the Tuner's,
    and ``trainer.test``), kills DDP's worker processes and raises ``SystemExit(1)``, which says nothing of the
    cause. The handler installed here also notes it, so the run can be recorded as interrupted and the command
    can end with exit status 130 (the shell's for SIGINT) wherever the signal came."""

    seen = False

    @classmethod
    def watch(cls) -> None:
        signal.signal(signal.SIGINT, cls._handle)

    @classmethod
    def _handle(cls, signum, frame) -> None:
        cls.seen = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the shutdown short
        raise KeyboardInterrupt


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C that a command has handled: its message says what it left (which run of a sweep, and how)."""


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command ended by Ctrl-C
