"""The shipped configurations (bench/configs, bench/matrices) made to train for seconds on this CPU, and trained
with the host-sync sentinel on: what tests/test_host_syncs.py and tests/test_shipped_configs.py share."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from cifarbench.config_parser import config_from_dict
from cifarbench.record import read_record
from cifarbench.train.run import fit
from conftest import REPO, run_cli

RECIPES = ("seed", "resnet9", "airbench94", "fast")
PATHS = ("albumentations", "ffcv", "device")


def recipe(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "bench/configs" / f"{name}.yaml").read_text())


def on_this_cpu(config: dict[str, Any], out: Path, run_id: str, wandb: str = "offline") -> dict[str, Any]:
    """``config`` as shipped, on this CPU and at seconds' size: generated images (600-700 training images, batches
    of 50), an 8-wide network, 2 epochs (airbench94's whitening bias frozen after the first), at most 2 devices on
    one node (DDP as shipped, or DDP when the shipped run had several devices), loggers writing every 5 steps, the
    sync sentinel on."""
    c = copy.deepcopy(config)
    t, m, d = (c.setdefault(key, {}) for key in ("trainer", "model", "data"))
    devices = t.get("devices", 1) if isinstance(t.get("devices", 1), int) else 1
    world = min(devices * t.get("num_nodes", 1), 2)
    t |= {"accelerator": "cpu", "devices": world, "num_nodes": 1, "epochs": 2, "checkpoint": False,
          "log_every_n_steps": 5}  # steps after a logging step within an epoch: Lightning's cached metrics then
    if world > 1 and t.get("strategy", "auto") == "auto":
        t["strategy"] = "ddp"
    m["width"] = 8
    if m.get("name") == "airbench94":
        m["whiten_bias_epochs"] = 1
    d |= {"source": "synthetic", "synthetic_train_size": 700, "synthetic_test_size": 100, "val_size": 100,
          "batch_size": 50, "num_workers": 1, "ffcv": {**d.get("ffcv", {}), "dir": str(out / f"{run_id}-betons")}}
    d.pop("root", None)
    c["measure"] = c.get("measure", {}) | {"warmup_steps": 2, "sync_sentinel": True}
    c["output"] = c.get("output", {}) | {"dir": str(out), "run_id": run_id, "wandb": wandb}
    c.pop("test", None)
    return c


def train(config: dict[str, Any], out: Path) -> dict[str, Any]:
    """Trains ``config``: in this process without a process group, through the CLI with one (DDP's launcher re-runs
    the command line, and a process group made here would leave its port in this process's environment, taken, for
    every later DDP run to inherit); returns the record."""
    run_id = config["output"]["run_id"]
    if config["trainer"].get("strategy", "auto") == "auto":
        return fit(config_from_dict(config))[1]
    path = out / f"{run_id}.yaml"
    path.write_text(yaml.safe_dump(config))
    done = run_cli("fit", "-c", str(path), timeout=400)
    assert done.returncode == 0, done.stdout[-3000:]
    return read_record(out / run_id / "record.json")


def assert_trained_without_waiting(record: dict[str, Any]) -> None:
    """The run finished as a result, and no steady step waited for the device on cifarbench's side."""
    assert record["status"] in ("completed", "not-reached"), record["error"]
    syncs = record["measure"]
    assert syncs["steady_steps"] > 0, syncs
    assert (syncs["host_syncs_per_step"], syncs["host_syncs_max_per_step"]) == (0, 0), syncs
