"""`profile-data` says whether training is data-bound; `fit --profiler.enabled` leaves traces TensorBoard serves."""

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from cifarbench.tools.profile_data import verdict
from cifarbench.record import read_record
from cifarbench.train.run import fit
from cifarbench.tensorboard import command
from conftest import last_line, run_cli, tiny_config


def test_verdict_wording():
    assert verdict(41, 100) == "data-bound: the loader delivers 41% of what the model consumes"
    assert verdict(300, 100) == "compute-bound: the loader delivers 3.0x what the model consumes"
    assert verdict(300, 100, 0.5).endswith("yet training spent 50% of its time fetching batches (loader and model "
                                           "share the CPU cores)")


@pytest.mark.parametrize("path", ["albumentations", "ffcv", "device"])
def test_profile_data_prints_three_rates_and_a_verdict(tmp_path, path):
    result = run_cli("profile-data", "-c", "bench/configs/smoke.yaml", "--data.path", path, "--steps", "8",
                     "--warmup", "2", "--data.ffcv.dir", str(tmp_path / "ffcv"), "--output.dir", str(tmp_path),
                     "--output.wandb", "disabled", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "(a) loader" in result.stdout and "(b) model" in result.stdout and "(c) training" in result.stdout
    assert f"verdict ({path}, num_workers=1, batch_size=128): " in result.stdout
    record = read_record(Path(last_line(result)))
    assert record["kind"] == "profile-data" and len(record["rows"]) == 1
    row = record["rows"][0]
    for key in ("loader_images_per_sec", "model_images_per_sec", "train_images_per_sec"):
        assert row[key] > 0
    assert 0 <= row["train_fetch_fraction"] < 1 and row["verdict"] == verdict(
        row["loader_images_per_sec"], row["model_images_per_sec"], row["train_fetch_fraction"])


def test_profile_data_sweeps_workers_and_logs_to_wandb(tmp_path):
    result = run_cli("profile-data", "-c", "bench/configs/smoke.yaml", "--steps", "5", "--warmup", "1",
                     "--sweep_workers", "[0,1]", "--output.dir", str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    record = read_record(Path(last_line(result)))
    assert [r["num_workers"] for r in record["rows"]] == [0, 1]
    assert list((Path(last_line(result)).parent / "wandb").glob("offline-run-*/run-*.wandb"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_profiler_traces_are_listed_by_a_real_tensorboard(tmp_path):
    _, record = fit(tiny_config(tmp_path, profiler={"enabled": True, "wait": 1, "warmup": 1, "active": 2}))
    run_dir = tmp_path / record["run_id"]
    traces = list((run_dir / "profiler").rglob("*.pt.trace.json"))
    assert any("training_step" in t.name for t in traces)
    assert json.loads(next(t for t in traces if "training_step" in t.name).read_text())["traceEvents"]

    port = _free_port()
    server = subprocess.Popen(command(run_dir, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        runs, deadline = [], time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                listing = _get(f"http://127.0.0.1:{port}/data/plugin/pytorch_profiler/runs")
                runs = listing["runs"]
                if runs and not listing.get("loading"):
                    break
            except OSError:
                pass
            time.sleep(1)
        assert runs == [record["run_id"]]
        run = urllib.parse.quote(runs[0])
        assert "Trace" in _get(f"http://127.0.0.1:{port}/data/plugin/pytorch_profiler/views?run={run}")
        workers = _get(f"http://127.0.0.1:{port}/data/plugin/pytorch_profiler/workers?run={run}&view=Overview")
        assert any("training_step" in w for w in workers)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.poll() is not None


def test_tensorboard_without_traces_says_what_to_do(tmp_path):
    with pytest.raises(Exception, match="has no profiler/ traces; train with"):
        command(tmp_path, 6006)


def test_an_impossible_sweep_point_is_refused_before_anything_is_measured(tmp_path):
    result = run_cli("profile-data", "-c", "bench/configs/smoke.yaml", "--sweep_batch_sizes", "[128,100000]",
                     "--output.dir", str(tmp_path), timeout=120)
    assert result.returncode == 2 and "measuring" not in result.stdout
    assert result.stdout.strip().startswith("cifarbench: error: data.batch_size=100000: each of the 1 devices gets")
    assert not any(tmp_path.iterdir())
