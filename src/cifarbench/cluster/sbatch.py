"""`cifarbench submit/status/cancel`: one sbatch script per matrix run.

Scripts are rendered with ``string.Template`` from ``run.sbatch`` beside this file (readable and editable; package
data, so a plain ``pip install`` has it too). Values
that reach the shell (paths, the Python executable) are quoted with ``shlex.quote``; values that go into
``#SBATCH`` lines must be plain tokens, or the render refuses them, so no run id, name or path can
execute anything. Jobs are submitted with the results directory as working directory, so logs land in
``<results>/logs/`` without a path in the script header.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from string import Template
from typing import Any, Optional

from ..errors import CifarbenchError, ConfigError
from .matrix import Matrix, MatrixRun
from ..record import RESULT_STATUSES, atomic_write_text, mark_abandoned
from .runner import record_status, write_run_config

TEMPLATE = Path(__file__).resolve().parent / "run.sbatch"
JOBS_FILE = "slurm-jobs.json"
PLAIN_TOKEN = re.compile(r"^[A-Za-z0-9_.:@%+=-]+$")
TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$")
LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED"}
SLURM_KEYS = {"partition", "account", "qos", "time", "cpus_per_task", "constraint", "signal_seconds", "setup"}


def directive_value(field: str, value: Any) -> str:
    text = str(value)
    if not PLAIN_TOKEN.match(text):
        raise ConfigError(field, value, "an #SBATCH value must be a plain token (letters, digits, _ . : @ % + = -)")
    return text


def render(run: MatrixRun, matrix: Matrix, results_dir: Path, config_path: Path, template: Path = TEMPLATE,
           python: str = sys.executable, overrides: Optional[dict[str, Any]] = None) -> str:
    """The sbatch script of one run: nodes and tasks from the run's trainer, the rest from ``matrix.slurm``."""
    # signal_seconds: how long before the time limit Slurm sends SIGUSR1, Lightning's cue to checkpoint and requeue
    slurm = {"time": "00:30:00", "cpus_per_task": 1, "signal_seconds": 90, **matrix.slurm, **(overrides or {})}
    unknown = set(slurm) - SLURM_KEYS
    if unknown:
        raise ConfigError(f"slurm.{sorted(unknown)[0]}", slurm[sorted(unknown)[0]], f"allowed: {sorted(SLURM_KEYS)}")
    if not TIME.match(str(slurm["time"])):
        raise ConfigError("slurm.time", slurm["time"], "use Slurm's [days-]hours:minutes:seconds, e.g. 01:30:00")
    for key in ("cpus_per_task", "signal_seconds"):
        if not str(slurm[key]).isdigit() or int(slurm[key]) < 1:
            raise ConfigError(f"slurm.{key}", slurm[key], "must be a whole number of at least 1")
    setup = setup_lines(slurm.get("setup") or [])
    trainer = run.config.get("trainer", {})
    devices, nodes = int(trainer.get("devices", 1)), int(trainer.get("num_nodes", 1))
    optional = []
    accelerator = trainer.get("accelerator", "auto")
    if accelerator in ("gpu", "cuda"):
        optional.append(f"#SBATCH --gres=gpu:{devices}")
    for key in ("partition", "account", "qos", "constraint"):
        if slurm.get(key):
            optional.append(f"#SBATCH --{key}={directive_value(f'slurm.{key}', slurm[key])}")
    return Template(template.read_text()).substitute(
        run_id=directive_value("output.run_id", run.run_id), matrix=directive_value("matrix.name", matrix.name),
        nodes=nodes, tasks_per_node=devices, cpus_per_task=directive_value("slurm.cpus_per_task", slurm["cpus_per_task"]),
        time=slurm["time"], signal_seconds=directive_value("slurm.signal_seconds", slurm["signal_seconds"]),
        optional_directives="\n".join(optional), results_dir=shlex.quote(str(results_dir.resolve())), setup=setup,
        python=shlex.quote(python), config=shlex.quote(str(config_path.resolve())),
    )


def setup_lines(lines: Any) -> str:
    """``slurm.setup``: the cluster's own set-up (``module load``, ``conda activate``, ``source venv/bin/activate``)
    as script lines before ``srun``. Each is one line of shell, run by ``eval`` of its shell-quoted text: it runs
    in the job's shell (an activated environment stays active for srun) and cannot end or reshape the script
    around it. ``set -u`` is off meanwhile: activation scripts read unset variables."""
    if not isinstance(lines, list) or not all(isinstance(line, str) and line.strip() for line in lines):
        raise ConfigError("slurm.setup", lines, "a list of shell lines, e.g. ['module load cuda/12.4', "
                          "'source ~/envs/bench/bin/activate']")
    if bad := next((line for line in lines if "\n" in line or "\r" in line or "\0" in line), None):
        raise ConfigError("slurm.setup", bad, "one line each: give several lines as several entries")
    if not lines:
        return "# no cluster set-up (slurm.setup / submit --setup)"
    return "\n".join(["set +u  # slurm.setup: activation scripts often read unset variables",
                      *(f"eval {shlex.quote(line)}" for line in lines), "set -u"])


def write_scripts(matrix: Matrix, results_dir: Path, overrides: Optional[dict[str, Any]] = None,
                  python: str = sys.executable) -> dict[str, Path]:
    """Writes each valid run's config and script (jobs run cifarbench with ``python``); returns run id -> path."""
    scripts = {}
    for run in matrix.runs:
        if run.error:
            continue
        config = write_run_config(results_dir, run)
        path = results_dir / "scripts" / f"{run.run_id}.sbatch"
        atomic_write_text(path, render(run, matrix, results_dir, config, python=python, overrides=overrides))
        scripts[run.run_id] = path
    return scripts


def submit(scripts: dict[str, Path], results_dir: Path) -> dict[str, str]:
    """sbatch each script (working directory: the results directory); records run id -> job id.
    Runs with a result, and runs whose job is still queued or running (e.g. requeued), are not submitted again."""
    (results_dir / "logs").mkdir(parents=True, exist_ok=True)
    jobs = load_jobs(results_dir)
    live = {job for job, state in job_states(list(jobs.values())).items() if state in LIVE_STATES}
    for run_id, script in scripts.items():
        if record_status(results_dir, run_id) in RESULT_STATUSES or jobs.get(run_id) in live:
            continue
        out = _slurm(["sbatch", "--parsable", str(script)], cwd=results_dir)
        jobs[run_id] = out.split(";")[0].strip()
        atomic_write_text(results_dir / JOBS_FILE, json.dumps(jobs, indent=2) + "\n")
    return jobs


def load_jobs(results_dir: Path) -> dict[str, str]:
    try:
        return json.loads((results_dir / JOBS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def job_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state of each job: squeue for queued/running ones, scontrol for recently finished ones
    (works without accounting; sacct is used when it exists, for jobs scontrol has forgotten)."""
    states: dict[str, str] = {}
    for job in job_ids:
        text = _slurm(["scontrol", "show", "job", job], check=False)
        found = re.search(r"JobState=(\S+)", text)
        if found:
            states[job] = found.group(1)
        else:
            sacct = _slurm(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job], check=False).strip()
            states[job] = sacct.splitlines()[0] if sacct else "UNKNOWN"
    return states


def mark_ended_jobs(results_dir: Path, jobs: dict[str, str], states: dict[str, str]) -> list[str]:
    """Marks failed each run whose Slurm job has ended while its record still says running or requeued (a task
    killed by Slurm or the kernel, a node failure: nothing was left to write the record). Returns their ids."""
    ended = []
    for run_id, job in jobs.items():
        state = states.get(job, "UNKNOWN")
        if state in LIVE_STATES or state == "UNKNOWN":
            continue
        how = (f"its Slurm job {job} ended {state} before the run finished its record; "
               f"see {results_dir}/logs/{run_id}-{job}.log")
        if mark_abandoned(results_dir / run_id, how):
            ended.append(run_id)
    return ended


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        _slurm(["scancel", *job_ids])


def _slurm(cmd: list[str], cwd: Optional[Path] = None, check: bool = True) -> str:
    try:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise CifarbenchError(f"{cmd[0]}: not found; run on a Slurm login node (or start the local test cluster "
                              "with scripts/slurm-start.sh and export SLURM_CONF)") from None
    if check and result.returncode != 0:
        raise CifarbenchError(f"{' '.join(cmd[:2])} failed: {' '.join(result.stderr.split())}")
    return result.stdout
