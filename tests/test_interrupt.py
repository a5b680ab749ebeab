"""Runs stopped by hand: Ctrl-C (a real SIGINT to the command's process group, as a terminal sends it) ends a fit
or a sweep cleanly as `interrupted`, and a run killed outright is shown as `abandoned`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from cifarbench.cluster.matrix import load_matrix
from cifarbench.cluster.runner import write_run_config
from cifarbench.record import read_record
from conftest import CLI, REPO, checkpointed_epochs, run_cli

SMOKE = ["-c", "bench/configs/smoke.yaml", "--output.wandb", "disabled", "--test", "false"]


def start(*args: str) -> subprocess.Popen:
    """The installed command in a session of its own (its process group is what Ctrl-C signals)."""
    return subprocess.Popen([CLI, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "WANDB_MODE": "offline"})


def once_checkpointed(process: subprocess.Popen, run_dir: Path, timeout: float = 300) -> None:
    """Waits until the run has written its first checkpoint: training is under way."""
    deadline = time.monotonic() + timeout
    while checkpointed_epochs(run_dir) < 1:
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint written in time"
        time.sleep(0.5)


def ctrl_c(process: subprocess.Popen, timeout: float = 180) -> list[str]:
    """SIGINT to the whole process group; returns the command's output lines once it has exited."""
    os.killpg(process.pid, signal.SIGINT)
    out, _ = process.communicate(timeout=timeout)
    return out.strip().splitlines()


def left_behind(session: int) -> list[str]:
    """Processes still in the command's session a few seconds after it exited (none when it cleaned up)."""
    time.sleep(3)
    found = subprocess.run(["ps", "-o", "pid=,args=", "-s", str(session)], capture_output=True, text=True).stdout
    return found.strip().splitlines()


@pytest.mark.parametrize("devices", [1, 2], ids=["1-device", "ddp-2"])
def test_ctrl_c_ends_a_fit_as_interrupted_and_the_run_id_resumes_from_its_checkpoint(tmp_path, devices):
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2"] if devices == 2 else []
    args = [*SMOKE, *ddp, "--output.dir", str(tmp_path), "--output.run_id", "r", "--trainer.epochs", "40"]
    fit = start("fit", *args)
    once_checkpointed(fit, tmp_path / "r")
    lines = ctrl_c(fit)
    assert fit.returncode == 130, lines[-20:]
    assert not any("Traceback" in line for line in lines), lines[-40:]
    ours = [line for line in lines if line.startswith("cifarbench:")]
    assert len(ours) == 1 and ours[0].startswith("cifarbench: interrupted at epoch ") and ours[0].endswith(
        f"; record: {tmp_path / 'r/record.json'}"), lines[-20:]
    assert left_behind(fit.pid) == []  # DDP's worker and the loader's processes ended with the run
    record = read_record(tmp_path / "r/record.json")
    assert record["status"] == "interrupted" and record["error"].startswith("interrupted at epoch ")
    assert record["finished_at"] and record["attempts"][-1]["outcome"] == "interrupted"
    assert record["time_to_target"]["clocks"]["mlperf"]["seconds"] is None or record["time_to_target"]["reached"]

    done_epochs = checkpointed_epochs(tmp_path / "r")  # the newest checkpoint was kept: the same run id goes on
    resumed = run_cli("fit", *[a if a != "40" else str(done_epochs + 1) for a in args], timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    record = read_record(tmp_path / "r/record.json")
    assert record["status"] in ("completed", "not-reached") and record["restarts"] == 1
    assert [a["outcome"] for a in record["attempts"]] == ["interrupted", record["status"]]
    assert record["attempts"][1]["resumed_from"] == "last.ckpt"
    assert record["accuracy"]["epochs_completed"] == done_epochs + 1


def test_ctrl_c_stops_a_sweep_with_one_line_and_marks_the_run_in_flight(tmp_path):
    spec = yaml.safe_load((REPO / "bench/matrices/tiny-cpu.yaml").read_text())
    spec |= {"name": "sweep", "base": str(REPO / "bench/configs/smoke.yaml"), "axes": {"trainer.seed": [1, 2]}}
    spec["config"]["trainer"] |= {"epochs": 40, "checkpoint": True, "strategy": "auto"}
    spec["config"]["output"] = {"wandb": "disabled"}
    matrix = tmp_path / "sweep.yaml"
    matrix.write_text(yaml.safe_dump(spec))
    sweep = start("run", str(matrix), "--output_dir", str(tmp_path))
    first, second = (run.run_id for run in load_matrix(matrix).runs)
    once_checkpointed(sweep, tmp_path / "sweep" / first)
    lines = ctrl_c(sweep)
    assert sweep.returncode == 130 and not any("Traceback" in line for line in lines), lines[-30:]
    assert lines[-1].startswith(f"cifarbench: interrupted: {first} ended as interrupted"), lines[-5:]
    assert left_behind(sweep.pid) == []
    assert read_record(tmp_path / "sweep" / first / "record.json")["status"] == "interrupted"
    assert not (tmp_path / "sweep" / second).exists()  # the sweep stopped there


def test_a_fit_killed_outright_is_shown_abandoned_by_status_and_report(tmp_path):
    """SIGKILL leaves the record at running; its process is gone from this host, so it reads as abandoned."""
    matrix = tmp_path / "killed.yaml"
    matrix.write_text(yaml.safe_dump({"name": "killed", "base": str(REPO / "bench/configs/smoke.yaml"),
                                      "config": {"trainer": {"epochs": 40}, "output": {"wandb": "disabled"}},
                                      "axes": {"trainer.seed": [1]}}))
    (run,) = load_matrix(matrix, results_root=tmp_path).runs
    fit = start("fit", "-c", str(write_run_config(tmp_path / "killed", run)))
    run_dir = tmp_path / "killed" / run.run_id
    once_checkpointed(fit, run_dir)
    os.killpg(fit.pid, signal.SIGKILL)
    fit.wait(timeout=60)
    assert read_record(run_dir / "record.json")["status"] == "running"  # nothing could write it

    status = run_cli("status", str(matrix), "--output_dir", str(tmp_path), timeout=120)
    assert status.returncode == 0 and "abandoned" in status.stdout, status.stdout
    report = run_cli("report", str(tmp_path / "killed"), "--wandb", "disabled", timeout=300)
    assert report.returncode == 0 and "1 abandoned" in (tmp_path / "killed/report/summary.md").read_text()
