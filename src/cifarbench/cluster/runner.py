"""`cifarbench run MATRIX`: the matrix's runs one after another on this machine, each in a fresh process.

Every run is ``cifarbench fit -c <its config>`` in a new process (a DDP run launches its own workers),
with its output in ``<results>/<matrix>/logs/<run id>.log``. A run whose record already says
completed, not-reached or diverged is a result and is not run again, so an interrupted sweep resumes
where it stopped; failed and unfinished runs are run again.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .matrix import Matrix, MatrixRun, validate_runs
from ..record import (RECORD_NAME, RESULT_STATUSES, atomic_write_text, exit_description, mark_abandoned, read_record,
                      shown_status)
from .signals import Interrupted


def run_record(results_dir: Path, run_id: str) -> Optional[dict]:
    try:
        return read_record(results_dir / run_id / RECORD_NAME)
    except (OSError, ValueError):
        return None


def record_status(results_dir: Path, run_id: str) -> Optional[str]:
    record = run_record(results_dir, run_id)
    return shown_status(record) if record else None


def status_line(results_dir: Path, run_id: str) -> str:
    """A run's record as `cifarbench status` shows it: its status, and for a failed run the rank and node that
    failed ('failed: rank 1 on node2'); '-' before the run has written one."""
    record = run_record(results_dir, run_id)
    if record is None:
        return "-"
    if record["status"] != "failed" or record.get("failed_rank") is None:
        return str(shown_status(record))
    node = f" on {record['failed_node']}" if record.get("failed_node") else ""
    return f"failed: rank {record['failed_rank']}{node}"


def write_run_config(results_dir: Path, run: MatrixRun) -> Path:
    path = results_dir / "configs" / f"{run.run_id}.yaml"
    atomic_write_text(path, yaml.safe_dump(run.config, sort_keys=False))
    return path


def expansion_table(matrix: Matrix) -> Table:
    table = Table(title=f"matrix {matrix.name}: {len(matrix.runs)} runs")
    table.add_column("run id")
    table.add_column("overrides")
    table.add_column("check")
    for run in matrix.runs:
        overrides = ", ".join(f"{k}={v}" for k, v in run.overrides.items())
        table.add_row(run.run_id, overrides, f"[red]{run.error}[/]" if run.error else "ok")
    return table


INTERRUPT_GRACE_SECONDS = 120  # for the run in flight to write its record after Ctrl-C


def run_one(config: Path, log: Path, run_dir: Path) -> int:
    """``cifarbench fit -c config`` in a process of its own, output to ``log``; its exit status.

    On Ctrl-C (which a terminal sends to the run's process too; here it is passed on in case it was not) the run
    records itself as interrupted and exits; the sweep then stops with one line saying so."""
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "cifarbench", "fit", "-c", str(config)], stdout=out,
                                   stderr=subprocess.STDOUT)
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=INTERRUPT_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            mark_abandoned(run_dir, f"interrupted (Ctrl-C); the run's process {exit_description(process.returncode)} "
                                    "before it finished its record", status="interrupted")
            raise Interrupted(f"{run_dir.name} ended as {record_status(run_dir.parent, run_dir.name)} (record: {run_dir / 'record.json'}); "
                              "`cifarbench run` again resumes the sweep") from None


def run_matrix(matrix: Matrix, results_dir: Path, console: Optional[Console] = None) -> dict[str, Optional[str]]:
    """Runs every valid run not yet done; returns run id -> final record status (None: no record)."""
    console = console or Console()
    validate_runs(matrix)
    for run in matrix.runs:
        if run.error:
            console.print(f"[yellow]skipped[/] {run.run_id}: {run.error}")
    todo = [r for r in matrix.runs if not r.error]
    statuses = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"matrix {matrix.name}", total=len(todo))
        for run in todo:
            status = record_status(results_dir, run.run_id)
            if status in RESULT_STATUSES:
                console.print(f"[dim]done before[/] {run.run_id}: {status}")
            else:
                progress.update(task, description=f"{matrix.name}: {run.run_id}")
                config = write_run_config(results_dir, run)
                log = results_dir / "logs" / f"{run.run_id}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                returncode = run_one(config, log, results_dir / run.run_id)
                ended = exit_description(returncode)
                mark_abandoned(results_dir / run.run_id, f"the run's process {ended} before it finished its record; see {log}")
                status = record_status(results_dir, run.run_id)
                console.print(f"{run.run_id}: {status or 'no record (see ' + str(log) + ')'}")
            statuses[run.run_id] = status
            progress.advance(task)
    return statuses
