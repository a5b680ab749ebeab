"""DDP across the nodes of the real local cluster (scripts/slurm-start.sh --nodes 2): each node a slurmd in its own
network and UTS namespace, so ranks meet over the nodes' own addresses, as on a cluster."""

import os
import signal
import subprocess
import time
from pathlib import Path

import yaml

from cifarbench.cluster.sbatch import load_jobs
from cifarbench.record import read_record
from conftest import REPO, job_field, requeue_after_epoch, run_cli, wait_for_jobs, wait_until

MATRIX = REPO / "bench/matrices/two-node-cpu.yaml"


def two_node_matrix(tmp_path: Path, name: str, **config) -> Path:
    """The two-node matrix under another name, with its config sections updated."""
    spec = yaml.safe_load(MATRIX.read_text())
    spec["name"], spec["base"] = name, str(REPO / "bench/configs/smoke.yaml")
    for section, values in config.items():
        spec["config"][section] = {**spec["config"].get(section, {}), **values}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def fit_task_on(node: str, tmp_path: Path) -> int:
    """The pid of this test's training task on ``node`` (the processes in that node's network namespace)."""
    pids = subprocess.run(["ip", "netns", "pids", f"cb{node}"], capture_output=True, text=True).stdout.split()
    tasks = [int(p) for p in pids if b"cifarbench\x00fit" in _cmdline(p) and str(tmp_path).encode() in _cmdline(p)]
    assert len(tasks) == 1, (node, tasks)
    return tasks[0]


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_bad_node_count_is_one_line_before_anything_is_made(tmp_path):
    for bad in ("0", "two", "12"):
        started = subprocess.run(["bash", str(REPO / "scripts/slurm-start.sh"), "--nodes", bad, str(tmp_path / "state")],
                                 capture_output=True, text=True, timeout=60)
        assert started.returncode == 2 and started.stdout == "", started
        assert started.stderr == f"slurm-start: --nodes='{bad}': allowed: a whole number from 1 to 9\n"
        assert not (tmp_path / "state").exists()


def test_the_local_cluster_has_two_nodes_with_their_own_names_and_addresses(slurm_cluster):
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True).stdout.split("\n")
    assert sorted(n for n in nodes if n) == ["node1 idle", "node2 idle"]
    seen = subprocess.run(["srun", "-N2", "--ntasks-per-node=1", "bash", "-c",
                           "echo $(hostname) $(hostname -i) $(getent hosts node1 | cut -d' ' -f1)"],
                          capture_output=True, text=True, timeout=60, cwd="/tmp")
    assert sorted(seen.stdout.splitlines()) == ["node1 10.213.0.11 10.213.0.11", "node2 10.213.0.12 10.213.0.11"], seen.stderr


def test_the_two_node_matrix_trains_one_ddp_job_across_both_nodes(tmp_path, slurm_cluster):
    submitted = run_cli("submit", str(MATRIX), "--output_dir", str(tmp_path), timeout=120,
                        env={"SLURM_CONF": slurm_cluster})
    assert submitted.returncode == 0, submitted.stdout[-2000:]
    job = load_jobs(tmp_path / "two-node-cpu")["two-node-cpu-seed1"]
    assert wait_for_jobs([job], timeout=300) == {job: "COMPLETED"}, job_field(job, "Reason")
    record = read_record(tmp_path / "two-node-cpu/two-node-cpu-seed1/record.json")
    assert record["status"] in ("completed", "not-reached"), record["error"]
    env = record["environment"]
    assert (env["world_size"], env["num_nodes"], env["devices_per_node"]) == (2, 2, 1)
    assert env["hostnames"] == ["node1", "node2"] and env["slurm"]["SLURM_NNODES"] == "2"
    assert [(r["rank"], r["host"], r["address"]) for r in env["ranks"]] == [(0, "node1", "10.213.0.11"),
                                                                           (1, "node2", "10.213.0.12")]
    per_rank = record["throughput"]["per_rank_images_per_sec"]
    assert len(per_rank) == 2 and all(rate > 0 for rate in per_rank)
    # the job's rate: both ranks' images over the slower rank's seconds
    assert record["throughput"]["images_per_sec"] <= 2 * max(per_rank)
    assert len(record["data_wait"]["per_rank_fetch_fraction"]) == 2
    assert record["scaling"] == {"batch_scaling": "weak", "devices": 2, "device_batch": 100, "global_batch": 200,
                                 "lr_scaling": "none", "lr_multiplier": 1.0, "max_lr": 0.01}


def test_a_training_task_killed_on_one_node_fails_the_job_within_the_ddp_timeout(tmp_path, slurm_cluster):
    """SIGKILL to rank 1's task on node2 (nothing is left there to log or write): rank 0's next collective fails
    on the closed connection, and it records the lost rank and node; the job ends well within the configured DDP
    timeout (60 s), and `cifarbench status` says which rank and node failed."""
    matrix = two_node_matrix(tmp_path, "kill-node", trainer={"epochs": 1000})  # minutes: killed seconds in
    env = {"SLURM_CONF": slurm_cluster}
    assert run_cli("submit", str(matrix), "--output_dir", str(tmp_path), timeout=120, env=env).returncode == 0
    job = load_jobs(tmp_path / "kill-node")["kill-node-seed1"]
    run_dir = tmp_path / "kill-node" / "kill-node-seed1"
    wait_until(lambda: (run_dir / "logs" / "metrics.csv").exists(), 240, f"no training: {job_field(job, 'JobState')}")

    os.kill(fit_task_on("node2", tmp_path), signal.SIGKILL)
    killed = time.monotonic()
    state = wait_for_jobs([job], timeout=120)[job]
    assert state == "FAILED" and time.monotonic() - killed < 60, (state, time.monotonic() - killed)
    record = read_record(run_dir / "record.json")
    assert record["status"] == "failed" and (record["failed_rank"], record["failed_node"]) == (1, "node2"), record
    assert record["error"].startswith("rank 1 on node2 was lost"), record["error"]
    status = run_cli("status", str(matrix), "--output_dir", str(tmp_path), timeout=120, env=env)
    assert "failed: rank 1 on node2" in status.stdout, status.stdout


def test_a_requeued_two_node_job_resumes_from_its_checkpoint(tmp_path, slurm_cluster):
    """`scontrol requeue` of the two-node job mid-training: both ranks stop at their next step, and the restarted
    job (on whichever nodes Slurm gives it) resumes both from checkpoints/last.ckpt and trains to the end."""
    matrix = two_node_matrix(tmp_path, "requeue-nodes", trainer={"epochs": 8, "checkpoint": True},
                             output={"wandb": "disabled"})
    env = {"SLURM_CONF": slurm_cluster}
    assert run_cli("submit", str(matrix), "--output_dir", str(tmp_path), timeout=120, env=env).returncode == 0
    job = load_jobs(tmp_path / "requeue-nodes")["requeue-nodes-seed1"]
    run_dir = tmp_path / "requeue-nodes" / "requeue-nodes-seed1"
    requeue_after_epoch(job, run_dir, 2)
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True)  # Slurm holds it ~2 min
    assert wait_for_jobs([job], timeout=300) == {job: "COMPLETED"}, job_field(job, "Reason")

    record = read_record(run_dir / "record.json")
    assert record["status"] in ("completed", "not-reached") and record["restarts"] == 1, record["error"]
    assert [a["outcome"] for a in record["attempts"]][0] == "preempted"
    assert record["attempts"][1]["resumed_from"] == "last.ckpt"
    assert record["accuracy"]["epochs_completed"] == 8 and [p["epoch"] for p in record["curve"]][-1] == 8
    assert record["environment"]["hostnames"] == ["node1", "node2"]
