"""The run record: one schema-versioned JSON file per run, the only thing the report reads.

Written atomically (temporary file in the same directory, fsync, rename), so a reader sees either the
previous record or the new one, never half of one.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Optional

from .errors import DiskFullError

if TYPE_CHECKING:
    from .config import RunConfig

SCHEMA_VERSION = 2  # 2: named time-to-target clocks, curve seconds per clock, fetch/harness data wait
RECORD_NAME = "record.json"
# A run is "running" until it ends as completed, not-reached, diverged, failed or interrupted (Ctrl-C), or is
# "requeued" by Slurm after a preemption checkpoint (its next attempt goes on with the same record). The first
# three are results (a sweep never runs them again); a failed or interrupted run is run again, from its newest
# checkpoint. A local run still "running" whose process is gone is shown as "abandoned" (shown_status).
RESULT_STATUSES = ("completed", "not-reached", "diverged")
UNFINISHED_STATUSES = ("running", "requeued")
STOPPED_STATUSES = ("failed", "interrupted", "abandoned")  # shown apart in reports, never counted as a time


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Writes ``path`` all or nothing: ``write`` fills a temporary file in the same directory, which is
    fsync'ed and renamed over ``path``. A crash or a full disk leaves the previous file as it was; a full
    disk raises DiskFullError naming the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; records are for everyone to read
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise DiskFullError(f"no space left on the device of {path.parent} while writing {path.name}; "
                                f"the previous {path.name} is kept (free space, then resume the run)") from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def writable(path: Path) -> bool:
    """A directory that exists and takes a file, or could be made inside one that does."""
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    try:  # a real write (os.access says yes to root everywhere, /proc included); nothing stays behind
        with tempfile.TemporaryFile(dir=existing):
            return True
    except (OSError, TypeError):
        return False


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_record(run_dir: Path, record: dict[str, Any]) -> Path:
    path = run_dir / RECORD_NAME
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False, default=str) + "\n")
    return path


def read_record(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def mark_abandoned(run_dir: Path, how: str, status: str = "failed", **parts: Any) -> bool:
    """Marks ``status`` (failed, or interrupted), with ``how`` as its error (and ``parts``, e.g. the failed rank),
    a record that still says running or requeued although nothing runs it any more (its process was killed, its
    Slurm job ended, the node of rank 0 was lost): no record claims a run that no longer exists. Returns whether
    it did."""
    try:
        record = read_record(run_dir / RECORD_NAME)
    except (OSError, ValueError):
        return False
    if record.get("status") not in UNFINISHED_STATUSES:
        return False
    ended = now()
    attempts = record.get("attempts") or []
    if attempts and attempts[-1].get("outcome") in UNFINISHED_STATUSES:
        attempts[-1] |= {"ended_at": ended, "outcome": status, "error": how}
    write_record(run_dir, record | {"status": status, "finished_at": ended, "error": how, **parts})
    return True


def this_process() -> dict[str, Any]:
    """Where the running record's process is: host, pid and the pid's start time (a reused pid is another
    process), so that a record left "running" by a process that no longer exists can be told apart."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": process_start(os.getpid())}


def process_start(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat, field 22); None where it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def shown_status(record: dict[str, Any]) -> Optional[str]:
    """The record's status as it stands now: "abandoned" for a run still "running" on this host whose process no
    longer exists (killed outright: SIGKILL, the OOM killer); other hosts' runs are taken at their word."""
    process = record.get("process") or {}
    if (record.get("status") == "running" and process.get("host") == socket.gethostname()
            and process_start(process.get("pid", -1)) != process.get("started")):
        return "abandoned"
    return record.get("status")


def exit_description(returncode: int) -> str:
    """How a process ended, as records say it: 'killed by SIGKILL', 'exited with code 1'."""
    return f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exited with code {returncode}"


def new_record(cfg: "RunConfig", run_id: str, status: str, kind: str = "fit", **parts: Any) -> dict[str, Any]:
    """The record's fixed head (schema, identity, status, times, config) followed by ``parts``."""
    return {"schema_version": SCHEMA_VERSION, "kind": kind, "run_id": run_id, "status": status,
            "error": parts.pop("error", None), "started_at": parts.pop("started_at", now()),
            "finished_at": None if status in UNFINISHED_STATUSES else now(), "config": cfg.to_dict(), **parts}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def final_status(error: Optional[str], diverged: bool, reached: bool) -> str:
    if error is not None:
        return "failed"
    if diverged:
        return "diverged"
    return "completed" if reached else "not-reached"
