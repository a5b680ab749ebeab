"""Faults lose nothing: concurrent writers, a writer killed mid-write, a full disk, a crashed run that resumes,
a dying DDP rank, and secrets that must not leak into anything cifarbench writes."""

import json
import multiprocessing
import os
import signal
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

from cifarbench.errors import DiskFullError
from cifarbench.record import read_record, write_record
from cifarbench.train.trainer import AtomicCheckpointIO
from conftest import CLI, REPO, last_line, run_cli

TINY = ["--model.width", "8", "--data.source", "synthetic", "--data.synthetic_train_size", "1200",
        "--data.synthetic_test_size", "200", "--data.val_size", "200", "--data.batch_size", "100",
        "--data.num_workers", "0", "--trainer.accelerator", "cpu", "--measure.warmup_steps", "2",
        "--measure.target_accuracy", "0.3"]


def _writer(results: str, writer: int, writes: int) -> None:
    for i in range(writes):
        record = {"schema_version": 1, "run_id": f"run{writer}", "writer": writer, "write": i, "pad": "x" * 20_000}
        write_record(Path(results) / f"run{writer}", record)  # its own run
        write_record(Path(results) / "shared", record)  # and one record every writer fights over


def test_sixteen_concurrent_writers_lose_and_corrupt_nothing(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 40)) for w in range(16)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    for w in range(16):
        assert read_record(tmp_path / f"run{w}" / "record.json") == {
            "schema_version": 1, "run_id": f"run{w}", "writer": w, "write": 39, "pad": "x" * 20_000}
    shared = read_record(tmp_path / "shared" / "record.json")  # whole: one writer's last write
    assert shared["write"] == 39 and shared["pad"] == "x" * 20_000
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary file left behind


_KILL_ME = """
import sys
from pathlib import Path
from cifarbench.record import write_record
i = 0
while True:
    write_record(Path(sys.argv[1]), {"write": i, "pad": "y" * 2_000_000})
    i += 1
"""


def test_a_writer_killed_mid_write_leaves_the_old_or_the_new_record(tmp_path):
    seen = set()
    for attempt in range(12):
        proc = subprocess.Popen([str(Path(CLI).parent / "python"), "-c", _KILL_ME, str(tmp_path)])
        time.sleep(0.6 + 0.05 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        record = read_record(tmp_path / "record.json")  # parses: never half a file
        assert record["pad"] == "y" * 2_000_000
        seen.add(record["write"])
    assert len(seen) > 1


@pytest.fixture
def full_disk(tmp_path):
    """A real 1 MiB filesystem (tmpfs; the tests run as root, as CI does)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount a small tmpfs (root needed): {done.stderr}"
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_keeps_the_previous_record_and_checkpoint_and_says_so(full_disk):
    write_record(full_disk, {"run_id": "r", "status": "running"})
    with pytest.raises(DiskFullError, match=r"no space left on the device of .* while writing record.json; the previous record.json is kept"):
        write_record(full_disk, {"run_id": "r", "status": "completed", "pad": "z" * 3_000_000})
    assert read_record(full_disk / "record.json") == {"run_id": "r", "status": "running"}
    checkpoint = full_disk / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, checkpoint)
    with pytest.raises(DiskFullError, match="while writing last.ckpt; the previous last.ckpt is kept"):
        AtomicCheckpointIO().save_checkpoint({"step": 2, "weights": torch.zeros(1_000_000)}, checkpoint)
    assert torch.load(checkpoint, weights_only=False) == {"step": 1}
    assert sorted(p.name for p in full_disk.iterdir()) == ["last.ckpt", "record.json"]  # no temporary file left


def test_a_crashed_run_resumes_from_its_newest_good_checkpoint(tmp_path):
    args = ["fit", *TINY, "--trainer.epochs", "12", "--output.dir", str(tmp_path), "--output.run_id", "crashy",
            "--output.wandb", "disabled"]
    proc = subprocess.Popen([CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    checkpoint = tmp_path / "crashy/checkpoints/last.ckpt"
    deadline = time.monotonic() + 120
    while not (checkpoint.exists() and torch.load(checkpoint, weights_only=False)["epoch"] >= 1):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # a crash: no chance to write anything
    proc.wait()
    assert read_record(tmp_path / "crashy/record.json")["status"] == "running"
    saved_epoch = torch.load(checkpoint, weights_only=False)["epoch"]
    broken = tmp_path / "crashy/checkpoints/newer-but-broken.ckpt"
    broken.write_bytes(b"PK\x03\x04 truncated")  # newer, and unreadable: must be passed over
    result = run_cli(*args, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    record = read_record(Path(last_line(result)))
    assert record["status"] in ("completed", "not-reached") and record["restarts"] == 1
    first, second = record["attempts"]
    assert first["outcome"] == "running" and first["clock_at_end"] is None  # it never got to say
    assert second["resumed_from"] == "last.ckpt" and second["outcome"] == record["status"]
    assert record["accuracy"]["epochs_completed"] == 12 and saved_epoch >= 1
    assert [p["epoch"] for p in record["curve"]] == list(range(1, 13))  # the checkpoint's curve, then the rest


_RAISE_ON_RANK_1 = """
import os
if os.environ.get("LOCAL_RANK") == "1":
    import cifarbench.train.module as t
    original = t.CifarClassifier.training_step
    def training_step(self, batch, batch_idx):
        if self.global_step >= 3:
            raise RuntimeError("injected failure on rank 1")
        return original(self, batch, batch_idx)
    t.CifarClassifier.training_step = training_step
"""


@pytest.mark.parametrize("fault", ["raises", "killed"])
def test_a_failing_ddp_rank_ends_the_job_quickly_and_the_matrix_goes_on(tmp_path, fault):
    """Rank 1 of a 2-process gloo job raises (injected through sitecustomize) or is SIGKILLed mid-training; the
    job ends within a bounded time, its record says failed and names rank 1, and the next run still runs."""
    matrix = tmp_path / "m.yaml"
    matrix.write_text(json.dumps({
        "name": "faults", "base": str(REPO / "bench/configs/smoke.yaml"),
        "config": {"data": {"synthetic_train_size": 2200, "synthetic_test_size": 200, "val_size": 200,
                            "batch_size": 100, "num_workers": 0, "path": "device"},
                   "trainer": {"epochs": 30, "checkpoint": False, "strategy": "ddp", "ddp": {"timeout_seconds": 60}},
                   "measure": {"target_accuracy": 0.4, "warmup_steps": 2}, "output": {"wandb": "disabled"}},
        "axes": {"trainer.devices": [2, 1]}, "exclude": []}))
    env = dict(os.environ)
    if fault == "raises":
        (tmp_path / "inject").mkdir()
        (tmp_path / "inject" / "sitecustomize.py").write_text(_RAISE_ON_RANK_1)
        env["PYTHONPATH"] = str(tmp_path / "inject")
    start = time.monotonic()
    runner = subprocess.Popen([CLI, "run", str(matrix), "--output_dir", str(tmp_path)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ddp = tmp_path / "faults" / "faults-devices2"
    if fault == "killed":
        metrics = ddp / "logs" / "metrics.csv"
        deadline = time.monotonic() + 180
        while not metrics.exists():  # training is under way
            assert time.monotonic() < deadline
            time.sleep(0.2)
        rank0 = subprocess.run(["pgrep", "-f", f"cifarbench fit -c {tmp_path}"], capture_output=True, text=True)
        pids = [int(p) for p in rank0.stdout.split()]
        pids += [int(c) for p in pids for c in subprocess.run(["pgrep", "-P", str(p)], capture_output=True,
                                                                text=True).stdout.split()]
        children = [p for p in pids if Path(f"/proc/{p}/environ").exists()
                    and b"\0LOCAL_RANK=1\0" in b"\0" + Path(f"/proc/{p}/environ").read_bytes()]
        assert children, pids
        killed_at = datetime.now(timezone.utc)
        os.kill(children[0], signal.SIGKILL)
    out, _ = runner.communicate(timeout=600)
    record = read_record(ddp / "record.json")
    assert record["status"] == "failed" and record["failed_rank"] == 1, record["error"]
    if fault == "raises":
        assert record["error"].startswith("rank 1: RuntimeError: injected failure on rank 1"), record["error"]
        started, ended = (datetime.fromisoformat(record[k]) for k in ("started_at", "finished_at"))
        assert (ended - started).total_seconds() < 60  # failed at step 3: no hang in a collective
    else:
        assert "rank 1" in record["error"] and "SIGKILL" in record["error"], record["error"]
    single = read_record(tmp_path / "faults" / "faults-devices1" / "record.json")
    if fault == "killed":  # the job ended, and the next run started, before a hung collective's timeout (60 s)
        assert (datetime.fromisoformat(single["started_at"]) - killed_at).total_seconds() < 60
    assert single["status"] in ("completed", "not-reached"), out[-2000:]
    assert time.monotonic() - start < 480


def test_secrets_never_reach_records_configs_logs_or_scripts(tmp_path):
    secret, token = "wandb-key-0123456789abcdef0123456789abcdef", "s3cr3t-t0ken-value"
    env = {"WANDB_API_KEY": secret, "MY_SERVICE_TOKEN": token, "AWS_SECRET_ACCESS_KEY": token}
    fit = run_cli("fit", *TINY, "--trainer.epochs", "1", "--output.dir", str(tmp_path / "runs"),
                  "--output.wandb", "offline", timeout=300, env=env)
    assert fit.returncode == 0, fit.stdout[-2000:]
    dry = run_cli("submit", "bench/matrices/tiny-cpu.yaml", "--output_dir", str(tmp_path / "slurm"), "--dry_run", "true",
                  timeout=120, env=env)
    assert dry.returncode == 0, dry.stdout[-2000:]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 10
    for path in written:
        data = path.read_bytes()
        assert secret.encode() not in data and token.encode() not in data, path
    assert secret not in fit.stdout and secret not in dry.stdout


def test_a_diverging_run_is_marked_with_its_step_and_the_matrix_goes_on(tmp_path):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(json.dumps({
        "name": "lrs", "base": str(REPO / "bench/configs/smoke.yaml"),
        "config": {"data": {"synthetic_train_size": 1200, "synthetic_test_size": 200, "val_size": 200,
                            "batch_size": 100, "num_workers": 0, "path": "device"},
                   "optim": {"optimizer": "sgd", "div_factor": 1.0, "pct_start": 0.01},
                   "trainer": {"epochs": 3, "checkpoint": False}, "model": {"width": 8},
                   "measure": {"target_accuracy": 0.3, "warmup_steps": 2}, "output": {"wandb": "disabled"}},
        "axes": {"optim.max_lr": [1e12, 0.01]}}))
    result = run_cli("run", str(matrix), "--output_dir", str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:]  # diverged is a result: the sweep succeeded
    records = {p.parent.name: read_record(p) for p in (tmp_path / "lrs").glob("*/record.json")}
    diverged = next(r for r in records.values() if r["config"]["optim"]["max_lr"] > 1)
    healthy = next(r for r in records.values() if r["config"]["optim"]["max_lr"] < 1)
    assert diverged["status"] == "diverged" and diverged["divergence"]["step"] < 10  # within the first epoch
    assert diverged["accuracy"]["epochs_completed"] <= 1
    assert healthy["status"] in ("completed", "not-reached") and healthy["accuracy"]["epochs_completed"] == 3


def test_a_record_left_running_by_a_dead_process_is_marked_failed(tmp_path):
    from cifarbench.record import exit_description, mark_abandoned

    for status in ("running", "requeued"):
        write_record(tmp_path / status, {"run_id": status, "status": status, "error": None,
                                         "attempts": [{"outcome": "requeued"}, {"outcome": "running", "ended_at": None}]})
        assert mark_abandoned(tmp_path / status, f"the run's process {exit_description(-signal.SIGKILL)}")
        record = read_record(tmp_path / status / "record.json")
        assert record["status"] == "failed" and record["finished_at"]
        assert record["error"] == "the run's process killed by SIGKILL"
        assert [a["outcome"] for a in record["attempts"]] == ["requeued", "failed"]
        assert record["attempts"][-1]["ended_at"] == record["finished_at"]
    for status in ("completed", "not-reached", "diverged", "failed"):  # an ended record is left as it is
        write_record(tmp_path / status, {"run_id": status, "status": status, "error": "earlier"})
        assert not mark_abandoned(tmp_path / status, "later")
        assert read_record(tmp_path / status / "record.json")["error"] == "earlier"
