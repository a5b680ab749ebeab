"""`cifarbench fit` end to end: the smoke config, real CIFAR-10 images, and what the record holds."""

import io
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from cifarbench.data.sources import CIFAR10_CLASSES
from cifarbench.record import read_record
from cifarbench.train.run import fit
from conftest import CLI, last_line, run_cli, tiny_config


def test_smoke_config_trains_measures_and_prints_the_record_path_last(tmp_path):
    result = run_cli("fit", "-c", "bench/configs/smoke.yaml", "--output.dir", str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    record_path = Path(last_line(result))
    assert record_path.is_file() and record_path.parent.parent == tmp_path
    record = read_record(record_path)
    assert record["schema_version"] == 2 and record["status"] == "completed" and record["error"] is None

    tta, tp, wait = record["time_to_target"], record["throughput"], record["data_wait"]
    last = record["curve"][-1]
    assert len(record["curve"]) == 4 and tta["reached"] and tta["target"] == 0.5
    clocks = {name: tta["clocks"][name]["seconds"] for name in ("mlperf", "train_only", "steady")}
    assert all(tta["clocks"][name]["region"] for name in clocks)
    assert 0 < clocks["steady"] < clocks["train_only"] < clocks["mlperf"] <= last["seconds"]["mlperf"]
    assert 100 < tp["images_per_sec"] < 100_000 and tp["steady_steps"] == 4 * (3000 // 128) - 3
    assert tp["steady_images"] == tp["steady_steps"] * 128
    assert tp["images_per_sec"] == pytest.approx(tp["steady_images"] / tp["steady_seconds"])
    assert tp["checkpoints"] == 4 and tp["checkpoint_seconds"] > 0
    assert 0 < tp["mfu"] < 1 and tp["peak_flops_source"].startswith("cpu matmul probe")
    assert 0 <= wait["fetch_fraction"] < 0.5 and 0 <= wait["harness_fraction"] < 0.5 and wait["steps"] == 4 * (3000 // 128)
    assert wait["stall_fraction"] == wait["fetch_fraction"]  # on a CPU the host is the device
    assert record["accuracy"]["best_val"] >= 0.5 and record["accuracy"]["test"] > 0.3
    env = record["environment"]
    assert env["world_size"] == 1 and env["versions"]["lightning"] and env["cpu"]["logical_cores"] >= 1
    assert env["git"]["commit"] and len(env["git"]["commit"]) == 40
    assert env["precision_flags"] == {"matmul_precision": "highest", "matmul_allow_tf32": False,
                                      "cudnn_allow_tf32": False, "cudnn_benchmark": False}
    assert yaml.safe_load((record_path.parent / "config.yaml").read_text()) == record["config"]
    assert (record_path.parent / "checkpoints" / "last.ckpt").is_file()

    # the W&B offline run holds the config and the headline numbers
    wandb_dir = next((record_path.parent / "wandb").glob("offline-run-*"))
    inspected = subprocess.run([str(Path(CLI).parent / "wandb"), "leet", "inspect", "--summary",
                                "--json", str(wandb_dir)], capture_output=True, text=True, timeout=120, check=True)
    summary = json.loads(inspected.stdout)
    numbers = json.dumps(summary)
    for key in ("time_to_target/mlperf", "time_to_target/steady", "images_per_sec", "best_val_acc", "data_stall_fraction", "mfu"):
        assert f'"{key}"' in numbers
    assert summary["config"]["trainer"]["channels_last"] is True

    # stdout is a pipe, not a terminal: one plain progress line per epoch instead of a bar
    lines = [line for line in result.stdout.splitlines() if re.match(r"epoch \d+/4 \| step \d+ \| ", line)]
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"], result.stdout[-3000:]
    assert all(re.search(r"train loss [\d.]+ \| val acc [\d.]+ \| [\d,]+ img/s \| [\d:]+ elapsed \| ETA [\d:]+$", line)
               for line in lines), lines
    assert "━" not in result.stdout.split("epoch 1/4")[1].split("epoch 4/4")[0]  # no bar frames in between

    # the same run id again: a finished result is never trained again nor rewritten
    before = record_path.read_bytes()
    again = run_cli("fit", "-c", "bench/configs/smoke.yaml", "--output.dir", str(tmp_path), "--output.run_id",
                    record["run_id"], timeout=120)
    assert again.returncode == 0 and f"run {record['run_id']} already finished (completed): not run again" in again.stdout
    assert record_path.read_bytes() == before and last_line(again) == str(record_path)


def test_real_cifar10_images_train_well_above_chance(tmp_path, cifar_tarball):
    cfg = tiny_config(tmp_path, model={"width": 32},
                      data={"source": "folder", "root": str(cifar_tarball), "train_subset": 5000, "val_size": 1000,
                            "test_subset": 1000, "batch_size": 100, "num_workers": 1},
                      trainer={"channels_last": True, "epochs": 3},
                      optim={"max_lr": 0.01})
    path, record = fit(cfg)
    assert record["status"] == "completed"
    assert record["accuracy"]["best_val"] > 0.3 and record["accuracy"]["test"] > 0.3  # chance is 0.1


def test_unreached_target_is_recorded_as_not_reached_with_no_time(tmp_path):
    path, record = fit(tiny_config(tmp_path, measure={"target_accuracy": 0.999, "warmup_steps": 2}))
    assert record["status"] == "not-reached" and read_record(path)["status"] == "not-reached"
    assert all(clock["seconds"] is None for clock in record["time_to_target"]["clocks"].values())
    assert len(record["curve"]) == 2


def test_a_run_that_crashes_before_any_metric_is_recorded_as_failed_with_one_error(tmp_path):
    """A PNG whose header and end chunk are fine (the up-front check passes it) but whose compressed image data
    is corrupt fails the full decode, inside the run, before any metric is logged: the record says failed, and
    nothing else fails on the way out (the training curves have nothing to plot)."""
    from PIL import Image

    images = tmp_path / "data"
    for split in ("train", "test"):
        for i, cls in enumerate(CIFAR10_CLASSES):
            (images / split / cls).mkdir(parents=True)
            Image.new("RGB", (32, 32), (i * 20, 0, 0)).save(images / split / cls / "0.jpg", quality=75)
    (images / "train" / "cat" / "0.jpg").unlink()
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 0, 0)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.find(b"IDAT") + 4
    data[start:start + 8] = bytes(b ^ 0x55 for b in data[start:start + 8])  # corrupt deflate data, chunks intact
    (images / "train" / "cat" / "0.png").write_bytes(bytes(data))
    result = run_cli("fit", "-c", "bench/configs/smoke.yaml", "--data.source", "folder", "--data.root", str(images),
                     "--data.val_size", "1", "--data.batch_size", "1", "--output.dir", str(tmp_path / "out"),
                     "--output.wandb", "offline")
    assert result.returncode == 1, result.stdout[-3000:]
    record = read_record(Path(last_line(result)))
    assert record["status"] == "failed" and "cannot decode train/cat/0.png" in record["error"]
    assert "run failed: DataError" in result.stdout
    assert "Traceback" not in result.stdout and "FileNotFoundError" not in result.stdout, result.stdout[-3000:]


def test_print_config_prints_a_config_that_fit_accepts(tmp_path):
    result = run_cli("fit", "-c", "bench/configs/smoke.yaml", "--trainer.epochs", "7", "--print-config")
    assert result.returncode == 0
    printed = yaml.safe_load(result.stdout)
    assert printed["trainer"]["epochs"] == 7 and printed["data"]["source"] == "synthetic"
    assert printed["data"]["batch_size"] == 128 and printed["measure"]["target_accuracy"] == 0.5
    defaults = yaml.safe_load(run_cli("fit", "--print_config").stdout)
    assert (defaults["data"]["batch_size"], defaults["trainer"]["epochs"], defaults["optim"]["optimizer"],
            defaults["measure"]["target_accuracy"]) == (512, 24, "adam", 0.93)


@pytest.mark.parametrize("devices", [1, 2])
def test_a_diverging_run_stops_within_the_check_interval_and_says_where(tmp_path, devices):
    """The NaN check reads the device every 3 steps (one all-gather across the 2 DDP ranks): the run stops at
    the first check after the first non-finite loss and names the step it appeared at."""
    result = run_cli("fit", "-c", "bench/configs/smoke.yaml", "--optim.optimizer", "sgd", "--optim.max_lr", "1e12",
                     "--optim.div_factor", "1.0", "--optim.pct_start", "0.01", "--trainer.epochs", "5",
                     "--measure.divergence_check_every", "3", "--trainer.devices", str(devices),
                     "--trainer.strategy", "ddp" if devices > 1 else "auto", "--output.dir", str(tmp_path),
                     "--output.wandb", "disabled", timeout=300)
    record = read_record(Path(last_line(result)))
    divergence = record["divergence"]
    assert record["status"] == "diverged" and divergence["diverged"] and divergence["check_every"] == 3
    assert divergence["step"] <= divergence["noticed_at_step"] < divergence["step"] + 3
    assert record["accuracy"]["steps_completed"] == divergence["noticed_at_step"]  # stopped there, on every rank
    assert record["accuracy"]["epochs_completed"] <= 1
