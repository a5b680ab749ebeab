"""Each rank's exception, written where rank 0 can find it: ``<run dir>/error-rank<N>.log``."""

from __future__ import annotations

import traceback
from pathlib import Path

import lightning as L

from ..errors import error_line
from ..record import atomic_write_text


class ErrorLog(L.Callback):
    """Writes the traceback of an exception raised inside ``trainer.fit`` as ``error-rank<N>.log``.

    ``on_exception`` runs before Lightning tears the process group down, so the file exists by the time
    the other ranks' collectives fail; rank 0 then names this rank and its error as the job's cause.
    The log's first line is the exception's own first line (:func:`error_line`), the traceback follows.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, Exception):  # not SystemExit (SIGTERM) or KeyboardInterrupt
            self.write(trainer.global_rank, exception)

    def write(self, rank: int, exception: BaseException) -> None:
        path = self.run_dir / f"error-rank{rank}.log"
        if not path.exists():
            trace = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
            atomic_write_text(path, f"{error_line(exception)}\n\n{trace}")

    @staticmethod
    def read(run_dir: Path) -> dict[int, str]:
        """Rank -> the first line of its error log (the exception's type and first line)."""
        out = {}
        for path in run_dir.glob("error-rank*.log"):
            lines = path.read_text().strip().splitlines()
            out[int(path.stem.removeprefix("error-rank"))] = lines[0] if lines else "(empty log)"
        return out
