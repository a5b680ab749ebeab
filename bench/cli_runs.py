"""`cifarbench` runs in their own processes for the benchmarks (bench/knobs.py, bench/gpu_steps.py): each keeps its
output beside its record, a refusal before any work (exit 2) is a skip with the CLI's own reason, and a failure
is an error naming its cause, so one bad variant never stops the others."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from cifarbench.record import read_record


class Refused(Exception):
    """The CLI refused the configuration before any work (exit 2): a skip with its reason, not a failure."""


def cli_run(command: str, flags: list[str], runs: Path, run_id: str, timeout: float = 240,
            env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """`cifarbench COMMAND FLAGS` writing into RUNS/RUN_ID, W&B off; its record, its output kept there as fit.log."""
    flags = [*flags, "--output.wandb", "disabled", "--output.dir", str(runs), "--output.run_id", run_id]
    log = runs / run_id / "fit.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run([sys.executable, "-m", "cifarbench", command, *flags], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as err:  # what it printed until then is kept: where did the time go?
        log.write_text(_text(err.stdout) + _text(err.stderr))
        raise RuntimeError(f"timed out after {timeout:.0f} s; its output so far is in {log.name}") from None
    log.write_text(done.stdout + done.stderr)
    last = ((done.stdout + done.stderr).strip().splitlines() or ["(no output)"])[-1][-400:]
    if done.returncode == 2:
        raise Refused(last.removeprefix("cifarbench: error: "))
    record_path = runs / run_id / "record.json"
    if not record_path.exists():
        raise RuntimeError(last)
    record = read_record(record_path)
    if record["status"] == "failed":
        raise RuntimeError(record["error"])
    return record


def _text(output: Optional[bytes | str]) -> str:
    """subprocess hands a timed-out child's output back as bytes, whatever ``text`` said."""
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def attempt(measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``measure()``, or ``{"skipped": reason}`` when refused, or ``{"error": ...}`` when it failed."""
    try:
        return measure()
    except Refused as refusal:
        return {"skipped": str(refusal)}
    except Exception as err:  # recorded; the next variant still runs
        return {"error": f"{type(err).__name__}: {err}"}
