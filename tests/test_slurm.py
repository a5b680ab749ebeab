"""Slurm: golden sbatch scripts for GPU shapes, quoting that nothing can escape, and a real local cluster."""

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from cifarbench.errors import CifarbenchError
from cifarbench.cluster.matrix import load_matrix
from cifarbench.cluster.requeue import earlier_attempts, new_attempt
from cifarbench.record import now, read_record, write_record
from cifarbench.cluster.sbatch import load_jobs, render
from conftest import CLI, REPO, job_field, last_line, requeue_after_epoch, run_cli, wait_for_jobs, wait_until

GOLDEN = Path(__file__).parent / "golden"


def gpu_matrix(tmp_path: Path, **slurm) -> Path:
    spec = {"name": "scaling", "config": {"trainer": {"accelerator": "gpu", "strategy": "ddp"}},
            "axes": {"trainer.num_nodes": [2], "trainer.devices": [4]},
            "slurm": {"partition": "gpu", "account": "ml-bench", "qos": "normal", "time": "01:30:00",
                      "cpus_per_task": 8, **slurm}}
    path = tmp_path / "scaling.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_multi_node_gpu_script_matches_golden_file(tmp_path):
    matrix = load_matrix(gpu_matrix(tmp_path), results_root="/scratch/results")
    run = matrix.runs[0]
    script = render(run, matrix, Path("/scratch/results/scaling"), Path(f"/scratch/results/scaling/configs/{run.run_id}.yaml"),
                    python="/opt/cifarbench/.venv/bin/python")
    assert script == (GOLDEN / "scaling-2x4-gpu.sbatch").read_text()


def test_hostile_paths_are_quoted_and_execute_nothing(tmp_path):
    hostile = tmp_path / "a b;touch PWNED;'$(touch PWNED2)'`touch PWNED3`\"x"
    hostile.mkdir()
    matrix = load_matrix(REPO / "bench/matrices/tiny-cpu.yaml", results_root=str(hostile))
    run = matrix.runs[0]
    config = hostile / "configs" / "run config $(id).yaml"
    script = render(run, matrix, hostile, config, python=str(tmp_path / "bin" / "py $(touch PWNED4)"))
    # run the script with stand-ins for srun and python that record what they received
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$ARGS_FILE"\n')
    (bin_dir / "srun").chmod(0o755)
    args_file = tmp_path / "args.txt"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ARGS_FILE": str(args_file), "SLURM_JOB_ID": "1"}
    subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, check=True, timeout=30)
    assert not list(tmp_path.rglob("PWNED*"))
    assert args_file.read_text().splitlines() == [str(bin_dir / "py $(touch PWNED4)"), "-m", "cifarbench", "fit", "-c",
                                                  str(config.resolve())]


@pytest.mark.parametrize("slurm, message", [
    ({"partition": "gpu;rm -rf /"}, "slurm.partition='gpu;rm -rf /': an #SBATCH value must be a plain token"),
    ({"account": "a b"}, "slurm.account='a b': an #SBATCH value must be a plain token"),
    ({"time": "$(reboot)"}, "slurm.time='$(reboot)': use Slurm's"),
    ({"bogus": 1}, "slurm.bogus=1: allowed"),
    ({"cpus_per_task": 0}, "slurm.cpus_per_task=0: must be a whole number of at least 1"),
    ({"signal_seconds": "soon"}, "slurm.signal_seconds='soon': must be a whole number of at least 1"),
])
def test_unsafe_or_unknown_slurm_values_are_refused(tmp_path, slurm, message):
    matrix = load_matrix(gpu_matrix(tmp_path, **slurm))
    with pytest.raises(CifarbenchError, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        render(matrix.runs[0], matrix, tmp_path, tmp_path / "c.yaml")


def test_hostile_run_ids_and_names_are_refused(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "x;touch PWNED", "axes": {"trainer.epochs": [1]}}))
    with pytest.raises(CifarbenchError, match="matrix.name"):
        load_matrix(path)
    result = run_cli("fit", "--output.run_id", "$(touch PWNED)", "--output.dir", str(tmp_path), timeout=60)
    assert result.returncode == 2 and "output.run_id" in result.stdout and not list(tmp_path.rglob("PWNED*"))


def test_tiny_matrix_on_a_real_slurm_cluster_in_the_environment_its_setup_lines_activate(tmp_path, slurm_cluster):
    """The shipped tiny matrix with a cluster set-up line (slurm.setup) that activates the project's venv, and jobs
    told to run `python` (--python): with no venv on the submitter's PATH, srun finds cifarbench's Python only
    because the line ran before it, and each record names that environment."""
    assert shutil.which("sbatch")
    venv = Path(sys.executable).parent.parent
    spec = yaml.safe_load((REPO / "bench/matrices/tiny-cpu.yaml").read_text())
    spec |= {"base": str(REPO / "bench/configs/smoke.yaml"), "slurm": {"setup": [f"source {venv}/bin/activate"]}}
    matrix = tmp_path / "tiny-cpu.yaml"
    matrix.write_text(yaml.safe_dump(spec))
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(str(venv)))
    result = run_cli("submit", str(matrix), "--output_dir", str(tmp_path), "--python", "python", timeout=120,
                     env={"SLURM_CONF": slurm_cluster, "PATH": path, "VIRTUAL_ENV": ""})
    assert result.returncode == 0, result.stdout[-2000:]
    script = next((tmp_path / "tiny-cpu" / "scripts").glob("*.sbatch")).read_text()
    assert script.index(f"eval 'source {venv}/bin/activate'") < script.index("srun python -m cifarbench")
    results = Path(last_line(result))
    jobs = load_jobs(results)
    assert len(jobs) == 3
    states = wait_for_jobs(list(jobs.values()), timeout=600)
    assert set(states.values()) == {"COMPLETED"}, states
    for run_id, job in jobs.items():
        record = read_record(results / run_id / "record.json")
        assert record["status"] in ("completed", "not-reached"), (run_id, record["error"])
        assert record["environment"]["slurm"]["SLURM_JOB_ID"] == job
        assert record["environment"]["variables"]["VIRTUAL_ENV"] == str(venv)
        assert record["environment"]["executable"] == f"{venv}/bin/python"
        assert record["environment"]["world_size"] == record["config"]["trainer"]["devices"]
    ddp = read_record(results / "tiny-cpu-pathdevice-devices2-seed1" / "record.json")
    assert ddp["environment"]["world_size"] == 2 and len(ddp["throughput"]["per_rank_images_per_sec"]) == 2
    status = run_cli("status", str(matrix), "--output_dir", str(tmp_path), timeout=120,
                     env={"SLURM_CONF": slurm_cluster})
    assert status.stdout.count("COMPLETED") == 3


def test_cancel_stops_queued_jobs(tmp_path, slurm_cluster):
    spec = yaml.safe_load((REPO / "bench/matrices/tiny-cpu.yaml").read_text())
    spec |= {"name": "cancel-me", "base": str(REPO / "bench/configs/smoke.yaml"), "axes": {"trainer.seed": [1, 2]}}
    spec["config"]["trainer"]["epochs"] = 50
    matrix = tmp_path / "cancel.yaml"
    matrix.write_text(yaml.safe_dump(spec))
    env = {"SLURM_CONF": slurm_cluster}
    assert run_cli("submit", str(matrix), "--output_dir", str(tmp_path), timeout=120, env=env).returncode == 0
    jobs = load_jobs(tmp_path / "cancel-me")
    # submitting again while the jobs are queued or running submits nothing twice
    assert run_cli("submit", str(matrix), "--output_dir", str(tmp_path), timeout=120, env=env).returncode == 0
    assert load_jobs(tmp_path / "cancel-me") == jobs
    assert run_cli("cancel", str(matrix), "--output_dir", str(tmp_path), timeout=120, env=env).returncode == 0
    assert set(wait_for_jobs(list(jobs.values()), timeout=120).values()) == {"CANCELLED"}


def test_preempted_run_checkpoints_requeues_and_completes_as_one_run(tmp_path, slurm_cluster):
    """Slurm signals the run ~20-50 s into a 2-minute limit (SIGUSR1 100 s before it); Lightning checkpoints and
    requeues it; the restarted job resumes. The same config runs uninterrupted beside it for comparison.

    Two things the test does that a cluster would do on its own: it releases the requeued job at once (Slurm
    22.05 holds a requeued job ~2 minutes), and gives the second attempt a longer limit, since an identical
    limit would signal it again after the same 20-50 s (then restarts would be 2)."""
    spec = {"name": "preempt", "base": str(REPO / "bench/configs/smoke.yaml"),
            "config": {"data": {"path": "device", "synthetic_train_size": 2500, "synthetic_test_size": 200,
                                "val_size": 200, "batch_size": 100, "num_workers": 0},
                       "trainer": {"epochs": 45, "checkpoint": False},
                       "measure": {"target_accuracy": 0.3, "warmup_steps": 2}, "output": {"wandb": "offline"}},
            "axes": {"trainer.seed": [1]}}
    matrix = tmp_path / "preempt.yaml"
    matrix.write_text(yaml.safe_dump(spec))
    env = {"SLURM_CONF": slurm_cluster}
    twin = run_cli("submit", str(matrix), "--output_dir", str(tmp_path / "uninterrupted"), "--time", "10",
                   timeout=120, env=env)
    preempted = run_cli("submit", str(matrix), "--output_dir", str(tmp_path / "preempted"), "--time", "2",
                        "--signal_seconds", "100", timeout=120, env=env)
    assert twin.returncode == 0 and preempted.returncode == 0, preempted.stdout[-2000:]
    twin_job = load_jobs(tmp_path / "uninterrupted/preempt")["preempt-seed1"]
    job = load_jobs(tmp_path / "preempted/preempt")["preempt-seed1"]

    deadline = time.monotonic() + 240
    while job_field(job, "Restarts") != "1" or job_field(job, "JobState") != "PENDING":
        assert job_field(job, "JobState") in ("PENDING", "RUNNING", "COMPLETING"), job_field(job, "JobState")
        assert time.monotonic() < deadline, "the job was never requeued"
        time.sleep(1)
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now", "TimeLimit=10"], check=True)
    assert wait_for_jobs([job, twin_job], timeout=480) == {job: "COMPLETED", twin_job: "COMPLETED"}

    run_dir = tmp_path / "preempted/preempt/preempt-seed1"
    record = read_record(run_dir / "record.json")
    reference = read_record(tmp_path / "uninterrupted/preempt/preempt-seed1/record.json")
    assert record["status"] == reference["status"] == "completed", record["error"]
    assert record["run_id"] == reference["run_id"] == "preempt-seed1"
    assert record["restarts"] == 1 and reference["restarts"] == 0
    first, second = record["attempts"]
    assert first["outcome"] == "requeued" and second["outcome"] == "completed"
    assert first["slurm_job_id"] == second["slurm_job_id"] == job
    assert (first["slurm_restart_count"], second["slurm_restart_count"]) == (0, 1)
    assert first["resumed_from"] is None and second["resumed_from"] == "hpc_ckpt_1.ckpt"
    assert record["accuracy"]["epochs_completed"] == reference["accuracy"]["epochs_completed"] == 45
    assert record["curve"][-1]["step"] == reference["curve"][-1]["step"]
    assert [p["epoch"] for p in record["curve"]] == list(range(1, 46))
    # the clock goes on across the restart, and leaves out the time between the attempts
    assert second["clock_at_end"] > first["clock_at_end"]
    gap = datetime.fromisoformat(second["started_at"]) - datetime.fromisoformat(first["ended_at"])
    wall = datetime.fromisoformat(second["ended_at"]) - datetime.fromisoformat(first["started_at"])
    assert second["clock_at_end"] < (wall - gap).total_seconds() + 2
    assert record["time_to_target"]["lost_seconds"] >= 0
    assert record["throughput"]["attempts"] == 2 and record["data_wait"]["attempts"] == 2
    assert not list(run_dir.glob("hpc_ckpt_*"))  # stale once finished: trainer.test would restore it
    # one W&B run: both attempts' offline directories carry the run id
    offline = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(name.endswith("-preempt-seed1") for name in offline)
    log = (tmp_path / "preempted/preempt/logs").glob("preempt-seed1-*.log")
    text = next(log).read_text()
    assert "restart 0" in text and "restart 1" in text


def test_scontrol_requeue_preempts_the_attempt_and_a_finished_run_is_never_redone(tmp_path, slurm_cluster):
    """How admins and PreemptMode=REQUEUE stop a job: `scontrol requeue`, i.e. SIGTERM to every process of the
    job (loader workers and W&B's service included) with no SIGUSR1 warning. The attempt ends as preempted, the
    restarted job resumes from checkpoints/last.ckpt and completes the full epoch count, the log holds no
    traceback. Then `scontrol requeue` of the finished job: it ends at once and the record stays byte for byte.
    (As in the SIGUSR1 test, the test releases the requeued job at once instead of Slurm's ~2-minute hold.)"""
    spec = {"name": "requeue", "base": str(REPO / "bench/configs/smoke.yaml"),
            "config": {"data": {"path": "albumentations", "num_workers": 2, "synthetic_train_size": 2500,
                                "synthetic_test_size": 200, "val_size": 200, "batch_size": 100},
                       "trainer": {"epochs": 16}, "measure": {"target_accuracy": 0.3, "warmup_steps": 2},
                       "output": {"wandb": "offline"}},
            "axes": {"trainer.seed": [1]}}
    matrix = tmp_path / "requeue.yaml"
    matrix.write_text(yaml.safe_dump(spec))
    env = {"SLURM_CONF": slurm_cluster}
    assert run_cli("submit", str(matrix), "--output_dir", str(tmp_path), "--time", "10", timeout=120,
                   env=env).returncode == 0
    job = load_jobs(tmp_path / "requeue")["requeue-seed1"]
    run_dir = tmp_path / "requeue" / "requeue-seed1"

    requeue_after_epoch(job, run_dir, 3)
    first = read_record(run_dir / "record.json")
    assert first["status"] == "requeued" and first["attempts"][0]["outcome"] == "preempted", first["attempts"]
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True)
    assert wait_for_jobs([job], timeout=300) == {job: "COMPLETED"}

    record = read_record(run_dir / "record.json")
    assert record["status"] == "completed" and record["restarts"] == 1, record["error"]
    assert [a["outcome"] for a in record["attempts"]] == ["preempted", "completed"]
    assert record["attempts"][1]["resumed_from"] == "last.ckpt"
    assert record["accuracy"]["epochs_completed"] == 16 and [p["epoch"] for p in record["curve"]][-1] == 16
    log = next((tmp_path / "requeue/logs").glob("requeue-seed1-*.log")).read_text()
    assert "restart 0" in log and "restart 1" in log
    assert "Traceback" not in log and "killed by signal" not in log, log[-3000:]
    assert log.count("cifarbench: attempt preempted: Slurm requeued job") == 1
    offline = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))  # one W&B run, resumed by id
    assert len(offline) == 2 and all(name.endswith("-requeue-seed1") for name in offline)

    finished = (run_dir / "record.json").read_bytes()
    # e.g. the node was lost while W&B synced, some time after the job ended: a requeue within the second of its
    # end can meet slurmd's revocation of the old job credential (second granularity) and fail to launch at all
    wait_until(lambda: subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout.strip()
               == "idle", 60, "the node never became idle")
    time.sleep(2)
    subprocess.run(["scontrol", "requeue", job], check=True)
    wait_until(lambda: job_field(job, "Restarts") == "2", 60, "not requeued")
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True)
    state = wait_for_jobs([job], timeout=120)[job]
    log = next((tmp_path / "requeue/logs").glob("requeue-seed1-*.log")).read_text()
    assert state == "COMPLETED", f"{state} ({job_field(job, 'Reason')}): {log[-3000:]}"
    assert (run_dir / "record.json").read_bytes() == finished
    third = log[log.index("restart 2"):]  # ends at once: no Trainer is even built
    assert "run requeue-seed1 already finished (completed): not run again" in third, third
    assert "GPU available" not in third, third


def test_a_requeue_signal_before_training_starts_waits_for_lightning(tmp_path):
    """SIGUSR1 during start-up (imports, data loading) would kill the job with nothing saved: it is held until
    Lightning's handler exists, then handled (checkpoint, requeue attempt). Slurm's variables without srun make
    Lightning take its SLURM path; `scontrol requeue` of a job that does not exist just fails with a warning."""
    env = {**os.environ, "SLURM_JOB_ID": "999999", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "held-signal",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([str(Path(CLI).parent / "python"), "-m", "cifarbench", "fit", "-c", "bench/configs/smoke.yaml",
                             "--trainer.epochs", "1", "--output.dir", str(tmp_path), "--output.run_id", "held",
                             "--output.wandb", "disabled"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)  # still importing torch
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:]
    assert "Handling auto-requeue signal: 10" in out
    assert read_record(tmp_path / "held" / "record.json")["status"] in ("completed", "not-reached")


def test_status_marks_failed_a_run_whose_job_died_without_writing_its_record(tmp_path, slurm_cluster):
    """The training task SIGKILLed (as the kernel's OOM killer does): nothing is left to write the record, which
    says running; `cifarbench status` sees that the job has ended and marks the run failed."""
    spec = yaml.safe_load((REPO / "bench/matrices/tiny-cpu.yaml").read_text())
    spec |= {"name": "killed", "base": str(REPO / "bench/configs/smoke.yaml"), "axes": {"trainer.seed": [1]}}
    spec["config"]["trainer"]["epochs"] = 1000  # minutes: it is killed seconds after training starts
    matrix = tmp_path / "killed.yaml"
    matrix.write_text(yaml.safe_dump(spec))
    env = {"SLURM_CONF": slurm_cluster}
    assert run_cli("submit", str(matrix), "--output_dir", str(tmp_path), timeout=120, env=env).returncode == 0
    job = load_jobs(tmp_path / "killed")["killed-seed1"]
    run_dir = tmp_path / "killed" / "killed-seed1"
    deadline = time.monotonic() + 180
    while not (run_dir / "logs" / "metrics.csv").exists():  # training is under way
        assert time.monotonic() < deadline, job_field(job, "JobState")
        time.sleep(1)
    found = subprocess.run(["pgrep", "-f", "--", f"-m cifarbench fit -c {tmp_path}"], capture_output=True, text=True)
    tasks = [int(p) for p in found.stdout.split() if not Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"srun")]
    assert len(tasks) == 1, found.stdout
    os.kill(tasks[0], signal.SIGKILL)
    state = wait_for_jobs([job], timeout=120)[job]
    assert read_record(run_dir / "record.json")["status"] == "running"

    status = run_cli("status", str(matrix), "--output_dir", str(tmp_path), timeout=120, env=env)
    assert status.returncode == 0 and "killed-seed1: its job ended before the run finished its record" in status.stdout
    record = read_record(run_dir / "record.json")
    assert record["status"] == "failed" and record["attempts"][-1]["outcome"] == "failed"
    assert record["error"].startswith(f"its Slurm job {job} ended {state} before the run finished its record")
    assert Path(record["error"].split("see ")[-1]).exists()  # the job's log, named as Slurm wrote it


def test_an_attempt_killed_by_the_requeue_before_it_could_write_its_end_is_preempted(tmp_path, monkeypatch):
    """Slurm sends SIGKILL when the grace period after its requeue SIGTERM runs out: that attempt's record still
    says running. The restarted job (same job id, restart count one higher) knows what happened to it."""
    run_dir = tmp_path / "run"
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    first = new_attempt(now(), None)
    write_record(run_dir, {"run_id": "r", "status": "running", "started_at": first["started_at"], "attempts": [first]})
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    started, attempts = earlier_attempts(run_dir, "r", resuming=True)
    assert started == first["started_at"] and attempts[0]["outcome"] == "preempted"
    monkeypatch.setenv("SLURM_JOB_ID", "78")  # another job resuming the run (cifarbench submit again): not known
    assert earlier_attempts(run_dir, "r", resuming=True)[1][0]["outcome"] == "running"


@pytest.mark.parametrize("setup, message", [
    ("module load cuda", "slurm.setup='module load cuda': a list of shell lines"),
    (["module load cuda\nrm -rf ~"], "slurm.setup='module load cuda\\nrm -rf ~': one line each"),
    ([""], "slurm.setup=['']: a list of shell lines"),
])
def test_bad_setup_lines_are_one_line_before_anything_is_written(tmp_path, setup, message):
    spec = yaml.safe_load((REPO / "bench/matrices/tiny-cpu.yaml").read_text())
    spec |= {"base": str(REPO / "bench/configs/smoke.yaml"), "slurm": {"setup": setup}}
    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump(spec))
    result = run_cli("submit", str(matrix), "--output_dir", str(tmp_path / "out"), "--dry_run", "true", timeout=60)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"cifarbench: error: {message}"), lines
    assert not (tmp_path / "out").exists()


def test_setup_lines_run_in_the_jobs_shell_and_cannot_reshape_the_script(tmp_path):
    """Each line is eval'ed from its quoted text: an activated environment stays for srun, and quotes, semicolons
    or a comment in a line stay inside that line."""
    matrix = load_matrix(REPO / "bench/matrices/tiny-cpu.yaml", results_root=str(tmp_path))
    lines = ["export A='x y'; B=$A", "# set -e is kept", 'test -z "${UNSET_IN_SETUP}"']
    script = render(matrix.runs[0], matrix, tmp_path, tmp_path / "c.yaml", python="py",
                    overrides={"setup": lines})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "%s|%s\\n" "$A" "$B" > "$OUT"\n')
    (bin_dir / "srun").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"), "SLURM_JOB_ID": "1"}
    subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, check=True, timeout=30)
    assert (tmp_path / "out").read_text() == "x y|\n"  # B was set in the same line, not exported


def test_an_empty_python_for_the_jobs_is_one_line_before_anything_is_written(tmp_path):
    result = run_cli("submit", "bench/matrices/tiny-cpu.yaml", "--output_dir", str(tmp_path / "out"), "--python", " ",
                     "--dry_run", "true", timeout=60)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 2 and lines == ["cifarbench: error: --python=' ': the path or name of a Python "
                                                "interpreter, e.g. python3"], lines
    assert not (tmp_path / "out").exists()
