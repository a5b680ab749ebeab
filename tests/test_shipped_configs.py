"""Every shipped configuration runs: each config in bench/configs and each run of each matrix in bench/matrices,
made to train for seconds on this CPU (tests/shipped.py), either trains without a traceback and without a host
wait per steady step, or is refused before any work with one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cifarbench.checks import check_config
from cifarbench.cluster.matrix import load_matrix
from cifarbench.config import RunConfig
from cifarbench.config_parser import config_from_dict
from cifarbench.errors import CifarbenchError
from conftest import REPO, run_cli
from shipped import assert_trained_without_waiting, on_this_cpu, train

# what makes two shipped runs different programs: the network and its recipe options, the data path, the
# strategy and world size; precision, layout and compile each need one run per value, not one per combination
SHAPE = ("model.name", "model.tta", "optim.optimizer", "optim.lookahead_every", "data.path", "data.alternating_flip",
         "data.protocol", "trainer.strategy", "trainer.devices", "data.batch_scaling")
KNOBS = ("trainer.precision", "trainer.compile", "trainer.channels_last")


def shipped() -> dict[str, dict[str, Any]]:
    """name -> config (a nested dict), for every config file and every matrix run."""
    out = {f"configs/{p.stem}": yaml.safe_load(p.read_text()) for p in sorted((REPO / "bench/configs").glob("*.yaml"))}
    for path in sorted((REPO / "bench/matrices").glob("*.yaml")):
        out |= {f"matrices/{path.stem}/{run.run_id}": run.config for run in load_matrix(path).runs}
    return out


def value(config: RunConfig, dotted: str) -> Any:
    section, field = dotted.split(".")
    return getattr(getattr(config, section), field)


def cases(out: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """(the runs to train: one per shape, and more until each knob's every value has trained once; the refused
    runs -> their reason), every shipped run mapped onto this CPU."""
    to_train, refused, seen = {}, {}, set()
    for name, config in shipped().items():
        slug = name.replace("/", "-")
        config = on_this_cpu(config, out, slug, wandb="disabled")
        try:
            check_config(parsed := config_from_dict(config))
        except CifarbenchError as err:
            refused[name] = str(err)
            continue
        marks = {("shape", tuple(value(parsed, k) for k in SHAPE))} | {(k, value(parsed, k)) for k in KNOBS}
        if not marks <= seen:
            seen |= marks
            to_train[name] = config
    return to_train, refused


def test_every_shipped_run_is_covered_and_each_refusal_is_one_line_before_any_work(tmp_path):
    runs = shipped()
    to_train, refused = cases(tmp_path)
    assert len(runs) > 50 and not set(to_train) & set(refused)
    assert {"configs/airbench94", "configs/fast", "configs/seed", "configs/resnet9"} <= set(to_train)
    # e.g. 16-mixed and the CUDA-graph compile modes on a CPU; each distinct reason once, through the CLI
    for reason, name in {reason: name for name, reason in refused.items()}.items():
        config = on_this_cpu(runs[name], tmp_path, "refused", wandb="offline")
        path = tmp_path / "refused.yaml"
        path.write_text(yaml.safe_dump(config))
        done = run_cli("fit", "-c", str(path), timeout=120)
        lines = done.stdout.strip().splitlines()
        assert done.returncode == 2 and lines == [f"cifarbench: error: {reason}"], done.stdout[-2000:]
        assert not (tmp_path / "refused").exists()  # no run directory, no W&B run


@pytest.mark.slow
def test_every_shipped_combination_trains_on_this_cpu_without_a_host_wait(tmp_path):
    to_train, _ = cases(tmp_path)
    failures = {}
    for name, config in to_train.items():
        try:
            assert_trained_without_waiting(train(config, tmp_path))
        except (AssertionError, Exception) as err:  # every combination is tried; all failures are reported
            failures[name] = str(err)[-1500:]
    assert not failures, failures


def test_a_failed_ranks_error_line_is_the_exceptions_type_and_first_line(tmp_path):
    """DDP's messages run to dozens of lines whose last is generic advice: the record names the error itself."""
    from cifarbench.callbacks.error_log import ErrorLog

    try:
        raise RuntimeError("Expected to have finished reduction in the prior iteration before starting a new one.\n"
                           "...\nrank 1:  In addition, you can set the environment variable TORCH_DISTRIBUTED_DEBUG")
    except RuntimeError as err:
        ErrorLog(tmp_path).write(1, err)
    line = "RuntimeError: Expected to have finished reduction in the prior iteration before starting a new one."
    assert ErrorLog.read(tmp_path) == {1: line}
    assert "Traceback" in (tmp_path / "error-rank1.log").read_text()  # the whole traceback stays in the log
