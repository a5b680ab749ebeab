"""Weak and strong scaling: what each device trains with, what the record says, and how the report tells them apart."""


import pytest
import yaml

from cifarbench.checks import check_config
from cifarbench.cluster.matrix import load_matrix
from cifarbench.config import DataConfig, OptimConfig
from cifarbench.errors import ConfigError
from cifarbench.report.aggregate import summarise
from cifarbench.report.collect import collect
from cifarbench.report.tables import display_table
from cifarbench.record import read_record
from cifarbench.train.run import at_scale
from conftest import REPO, run_cli, tiny_config
from test_report_aggregate import record


def test_weak_scaling_keeps_each_devices_batch_and_strong_scaling_splits_the_global_one():
    weak, strong = DataConfig(batch_size=512), DataConfig(batch_size=512, batch_scaling="strong")
    assert [weak.device_batch(n) for n in (1, 2, 4, 8)] == [512] * 4
    assert [strong.device_batch(n) for n in (1, 2, 4, 8)] == [512, 256, 128, 64]


@pytest.mark.parametrize("rule, expected", [("none", 1.0), ("linear", 4.0), ("sqrt", 2.0)])
def test_max_lr_follows_the_global_batch_by_the_configured_rule(rule, expected):
    assert OptimConfig(lr_scaling=rule).lr_multiplier(global_batch=2048, reference_batch=512) == expected
    assert OptimConfig(lr_scaling=rule).lr_multiplier(global_batch=512, reference_batch=512) == 1.0


def test_at_scale_gives_each_device_its_batch_and_the_record_the_whole_story(tmp_path):
    weak = tiny_config(tmp_path, trainer={"devices": 4}, optim={"max_lr": 0.01, "lr_scaling": "linear"},
                       data={"batch_size": 50})
    trained, scaling = at_scale(weak)
    assert trained.data.batch_size == 50 and trained.optim.max_lr == pytest.approx(0.04)
    assert scaling == {"batch_scaling": "weak", "devices": 4, "device_batch": 50, "global_batch": 200,
                       "lr_scaling": "linear", "lr_multiplier": 4.0, "max_lr": pytest.approx(0.04)}
    strong = tiny_config(tmp_path, trainer={"devices": 4}, optim={"max_lr": 0.01, "lr_scaling": "linear"},
                         data={"batch_size": 200, "batch_scaling": "strong"})
    trained, scaling = at_scale(strong)
    assert trained.data.batch_size == 50 and trained.optim.max_lr == pytest.approx(0.01)  # same global batch
    assert (scaling["global_batch"], scaling["lr_multiplier"]) == (200, 1.0)


def test_a_strong_batch_that_does_not_split_evenly_is_refused(tmp_path):
    cfg = tiny_config(tmp_path, trainer={"devices": 2}, data={"batch_size": 101, "batch_scaling": "strong"})
    with pytest.raises(ConfigError, match=r"data.batch_size=101: strong scaling splits this global batch over the "
                                          r"2 devices: use a multiple of 2"):
        check_config(cfg)


def test_a_two_process_strong_scaling_run_trains_half_the_batch_per_rank(tmp_path):
    """Through the CLI, as DDP's launcher re-runs the command line for rank 1 (in-process it would re-run pytest)."""
    result = run_cli("fit", "-c", "bench/configs/smoke.yaml", "--trainer.devices", "2", "--trainer.strategy", "ddp",
                     "--trainer.epochs", "1", "--data.path", "device", "--data.num_workers", "0",
                     "--data.synthetic_train_size", "1200", "--data.val_size", "200", "--data.synthetic_test_size", "200",
                     "--data.batch_size", "200", "--data.batch_scaling", "strong", "--optim.lr_scaling", "linear",
                     "--output.wandb", "disabled", "--output.dir", str(tmp_path), "--output.run_id", "strong", timeout=300)
    assert result.returncode == 0, result.stdout[-2000:]
    rec = read_record(tmp_path / "strong" / "record.json")
    assert rec["status"] in ("completed", "not-reached"), rec["error"]
    assert rec["scaling"]["device_batch"] == 100 and rec["scaling"]["global_batch"] == 200
    assert rec["config"]["data"]["batch_size"] == 200  # the record keeps the config as given
    # 1,000 training images, 200 a step across both ranks: 5 steps (with weak scaling it would be 2 of 400)
    assert rec["accuracy"]["steps_completed"] == 5


def test_the_report_says_which_scaling_each_configuration_used(tmp_path):
    for devices, ips in ((1, 1000), (2, 1900)):
        record(tmp_path, f"weak{devices}", devices=devices, images_per_sec=ips)
        record(tmp_path, f"strong{devices}", devices=devices, images_per_sec=ips * 0.9,
               config={"data": {"path": "device", "protocol": "seed", "batch_scaling": "strong"},
                       "optim": {"lr_scaling": "none"},
                       "trainer": {"seed": 1, "devices": devices, "num_nodes": 1},
                       "measure": {"target_accuracy": 0.8}, "output": {"wandb": "disabled", "run_id": f"s{devices}"}})
    shown = display_table(summarise(collect([tmp_path]).runs))
    assert sorted(set(shown["Scaling"])) == ["strong, lr fixed", "weak, lr fixed"]
    assert len(shown) == 4  # two configurations, each at 1 and 2 GPUs


def test_the_scaling_matrix_states_how_it_scales():
    matrix = yaml.safe_load((REPO / "bench/matrices/scaling.yaml").read_text())
    assert matrix["axes"]["data.batch_scaling"] == ["weak", "strong"]
    assert matrix["config"]["optim"]["lr_scaling"] in ("linear", "sqrt")
    runs = load_matrix(REPO / "bench/matrices/scaling.yaml").runs
    assert {r.config["data"]["batch_scaling"] for r in runs} == {"weak", "strong"}
