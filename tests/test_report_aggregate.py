"""The report's arithmetic on hand-made records: scaling, spread, trimmed mean, not-reached, odd inputs."""

import json
from pathlib import Path

import pandas as pd
import pytest

from cifarbench.errors import ConfigError
from cifarbench.report.aggregate import missing, spread, summarise
from cifarbench.report.collect import collect
from cifarbench.report.tables import display_table

CPU = {"hostname": "a", "cpu": {"model": "AMD EPYC", "logical_cores": 2}, "gpu": None}


def record(root: Path, run_id: str, seed: int = 1, devices: int = 1, path: str = "device", status: str = "completed",
           images_per_sec: float = 1000.0, ttt: float | None = 10.0, acc: float = 0.9, env: dict = CPU,
           protocol: str = "seed", **extra) -> Path:
    reached = ttt is not None
    rec = {"schema_version": 2, "kind": "fit", "run_id": run_id, "status": status, "error": None,
           "config": {"data": {"path": path, "protocol": protocol}, "trainer": {"seed": seed, "devices": devices, "num_nodes": 1},
                      "measure": {"target_accuracy": 0.8}, "output": {"wandb": "disabled", "run_id": run_id}},
           "environment": env, "throughput": {"images_per_sec": images_per_sec},
           "time_to_target": {"reached": reached, "target": 0.8,
                              "clocks": {"mlperf": {"seconds": ttt}, "train_only": {"seconds": ttt and ttt * 0.9}}},
           "accuracy": {"best_val": acc}, "data_wait": {"stall_fraction": 0.1}, "curve": [], **extra}
    out = root / run_id / "record.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps(rec))
    return out


def test_median_iqr_and_trimmed_mean_only_from_five_values():
    four = spread([20, 10, 14, 12])
    assert (four["median"], four["q1"], four["q3"], four["iqr"]) == (13, 11.5, 15.5, 4)
    assert four["trimmed_mean"] is None
    five = spread([10, 11, 12, 13, 100])  # fastest and slowest dropped: the outlier cannot pull it
    assert five["trimmed_mean"] == 12 and five["median"] == 12
    assert spread([None, float("nan")])["n"] == 0 and spread([])["median"] is None


def test_scaling_efficiency_is_against_the_one_gpu_run_of_the_same_configuration(tmp_path):
    record(tmp_path, "d1", images_per_sec=1000)
    record(tmp_path, "d2", devices=2, images_per_sec=1800)
    record(tmp_path, "d4", devices=4, images_per_sec=3000)
    record(tmp_path, "other4", devices=4, path="albumentations", images_per_sec=500)  # no 1-GPU run: no efficiency
    summary = summarise(collect([tmp_path]).runs).set_index(["label", "gpus"])
    assert summary.loc[("path=device", 1), "scaling_efficiency"] == pytest.approx(1.0)
    assert summary.loc[("path=device", 2), "scaling_efficiency"] == pytest.approx(0.9)
    assert summary.loc[("path=device", 4), "scaling_efficiency"] == pytest.approx(0.75)
    assert summary.loc[("path=device", 4), "images_per_sec_per_gpu"] == pytest.approx(750)
    assert pd.isna(summary.loc[("path=albumentations", 4), "scaling_efficiency"])


def test_a_run_that_did_not_reach_the_target_is_counted_never_averaged(tmp_path):
    record(tmp_path, "s1", seed=1, ttt=10.0)
    record(tmp_path, "s2", seed=2, ttt=14.0)
    record(tmp_path, "s3", seed=3, ttt=None, status="not-reached", acc=0.7)
    record(tmp_path / "hard", "h1", path="albumentations", ttt=None, status="not-reached")
    summary = summarise(collect([tmp_path]).runs).set_index("label")
    seeds = summary.loc["path=device"]
    assert (seeds["runs"], seeds["reached"], seeds["ttt_median"]) == (3, 2, 12.0)
    assert seeds["best_val_acc"] == 0.9  # accuracy does count the not-reached run: it trained to the end
    assert seeds["status"] == "2 completed, 1 not-reached"
    shown = display_table(summary.reset_index()).set_index("Configuration")
    assert shown.loc["path=device", "Time to target (mlperf clock), median [IQR]"] == "12.0 s [11.0–13.0]"
    assert shown.loc["path=device", "Reached"] == "2/3"
    assert shown.loc["path=albumentations", "Time to target (mlperf clock), median [IQR]"] == "not reached"


def test_failed_and_interrupted_runs_count_in_status_but_not_in_speed_or_time(tmp_path):
    record(tmp_path, "ok", images_per_sec=1000)
    record(tmp_path, "broken", seed=2, status="failed", images_per_sec=10, ttt=None)
    record(tmp_path, "stopped", seed=3, status="interrupted", images_per_sec=10, ttt=1.0)  # reached, then Ctrl-C
    row = summarise(collect([tmp_path]).runs).iloc[0]
    assert row["images_per_sec"] == 1000 and row["status"] == "1 completed, 1 failed, 1 interrupted"
    assert (row["reached"], row["ttt_median"]) == (1, 10.0)


def test_corrupt_files_other_schemas_and_other_machines_warn_and_go_on(tmp_path):
    record(tmp_path, "a")
    record(tmp_path, "b", seed=2, env={**CPU, "cpu": {"model": "Intel Xeon", "logical_cores": 64}})
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "record.json").write_text('{"schema_version": 1, "run_id": "hal')
    future = {"schema_version": 7, "kind": "fit", "run_id": "future", "status": "completed",
              "config": {"trainer": {"seed": 3}}, "new_section": {}}
    (tmp_path / "future").mkdir()
    (tmp_path / "future" / "record.json").write_text(json.dumps(future))
    collected = collect([tmp_path])
    text = "\n".join(collected.warnings)
    assert "half/record.json: not a readable run record" in text
    assert "schema_version 7, this cifarbench reads 2" in text
    assert "the records differ in device (device: " in text and "Intel Xeon (64 cores)" in text
    assert sorted(collected.runs["run_id"]) == ["a", "b", "future"]
    assert len(summarise(collected.runs)) >= 1


def test_baseline_speedups_and_a_clear_error_for_an_unknown_one(tmp_path):
    record(tmp_path, "slow", path="albumentations", images_per_sec=500, ttt=20.0)
    record(tmp_path, "fast", images_per_sec=2000, ttt=5.0)
    summary = summarise(collect([tmp_path]).runs, baseline="slow").set_index("label")
    assert summary.loc["path=device", "speedup_time_to_target"] == pytest.approx(4.0)
    assert summary.loc["path=device", "speedup_images_per_sec"] == pytest.approx(4.0)
    assert summary.loc["path=albumentations", "speedup_time_to_target"] == pytest.approx(1.0)
    assert summarise(collect([tmp_path]).runs, baseline="path=device").loc[0, "baseline"] == "path=device (1 GPU, seed protocol)"
    with pytest.raises(ConfigError, match=r"--baseline='nope': a run id of these records or a configuration label"):
        summarise(collect([tmp_path]).runs, baseline="nope")


def test_runs_of_another_protocol_are_never_ranked_against_the_baseline(tmp_path):
    """The published protocol measures accuracy on the test set, the seed's on a held-out split: no speed-up
    between them, and the table says which protocol each configuration used."""
    record(tmp_path, "seed-run", images_per_sec=500, ttt=20.0)
    record(tmp_path, "published-run", images_per_sec=2000, ttt=5.0, protocol="published")
    summary = summarise(collect([tmp_path]).runs, baseline="seed-run").set_index("protocol")
    assert summary.loc["seed", "speedup_time_to_target"] == pytest.approx(1.0)
    assert missing(summary.loc["published", "speedup_time_to_target"])
    assert missing(summary.loc["published", "speedup_images_per_sec"])
