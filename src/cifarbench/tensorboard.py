"""`cifarbench tensorboard RUN_DIR`: TensorBoard with the torch-tb-profiler plugin over a run's traces."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .errors import CifarbenchError


def command(run_dir: Path, port: int) -> list[str]:
    """The TensorBoard command line; it binds to loopback only (share it through an SSH tunnel)."""
    logdir = run_dir / "profiler"
    if not logdir.is_dir():
        raise CifarbenchError(f"run_dir={str(run_dir)!r}: has no profiler/ traces; train with "
                              "`cifarbench fit ... --profiler.enabled true` first")
    executable = shutil.which("tensorboard") or str(Path(sys.executable).parent / "tensorboard")
    return [executable, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)]


def serve(run_dir: Path, port: int) -> int:
    line = command(run_dir, port)
    print(f"TensorBoard on http://127.0.0.1:{port}/#pytorch_profiler (Ctrl-C stops it)", flush=True)
    try:
        return subprocess.call(line)
    except KeyboardInterrupt:
        return 0
