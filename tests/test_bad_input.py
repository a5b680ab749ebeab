"""Every kind of bad input is refused before any work, in one line naming the field, the value and what is
allowed (table-driven: each row is a command line and the message the user must see)."""

import pytest
import yaml

from cifarbench.cli import main

TINY = ["--model.width", "8", "--data.source", "synthetic", "--data.synthetic_train_size", "1200",
        "--data.synthetic_test_size", "200", "--data.val_size", "200", "--data.batch_size", "100",
        "--data.num_workers", "0", "--trainer.accelerator", "cpu", "--output.wandb", "disabled"]

FIT_CASES = [
    # unknown keys and typos, with the closest name
    (["--trainer.epohcs", "3"], "trainer.epohcs: unknown config field; did you mean trainer.epochs?"),
    (["--data.batchsize", "64"], "data.batchsize: unknown config field; did you mean data.batch_size?"),
    (["--optim.lr", "0.1"], "optim.lr: unknown config field; did you mean optim.max_lr?"),
    # wrong types and values outside a fixed set
    (["--trainer.epochs", "three"], "trainer.epochs='three': expected int"),
    (["--trainer.precision", "fp8"], "trainer.precision='fp8': expected one of 32-true, 16-mixed, bf16-mixed"),
    (["--data.path", "tfrecord"], "data.path='tfrecord': expected one of albumentations, ffcv, device"),
    (["--optim.optimizer", "lamb"], "optim.optimizer='lamb': expected one of adam, sgd"),
    (["--trainer.channels_last", "maybe"], "trainer.channels_last='maybe': expected bool"),
    # negative or zero sizes
    (["--data.batch_size", "0"], "data.batch_size=0: must be a whole number of at least 1"),
    (["--data.batch_size", "-5"], "data.batch_size=-5: must be a whole number of at least 1"),
    (["--trainer.epochs", "0"], "trainer.epochs=0: must be a whole number of at least 1"),
    (["--model.width", "0"], "model.width=0: must be a whole number of at least 1"),
    (["--data.val_size", "0"], "data.val_size=0: must be a whole number of at least 1"),
    (["--trainer.ddp.timeout_seconds", "0"], "trainer.ddp.timeout_seconds=0: must be a whole number of at least 1"),
    (["--data.num_workers", "-1"], "data.num_workers=-1: must be 0 or more"),
    (["--measure.warmup_steps", "-2"], "measure.warmup_steps=-2: must be 0 or more"),
    (["--measure.untimed_warmup_steps", "-1"], "measure.untimed_warmup_steps=-1: must be 0 or more"),
    (["--measure.divergence_check_every", "0"], "measure.divergence_check_every=0: must be a whole number of at least 1"),
    (["--trainer.checkpoint_every_n_epochs", "0"], "trainer.checkpoint_every_n_epochs=0: must be a whole number of at least 1"),
    # sizes that do not fit together
    (["--data.batch_size", "4096"], "data.batch_size=4096: each of the 1 devices gets 1000 training images"),
    (["--data.val_size", "1200"], "data.val_size=1200: must be smaller than the"),
    (["--data.cutout_size", "40"], "data.cutout_size=40: at most 32"),
    # other values out of range
    (["--data.flip_prob", "1.5"], "data.flip_prob=1.5: a probability must be between 0 and 1"),
    (["--model.dropout", "1.0"], "model.dropout=1.0: must be in [0, 1)"),
    (["--optim.max_lr", "0"], "optim.max_lr=0.0: must be greater than 0"),
    (["--optim.pct_start", "1.0"], "optim.pct_start=1.0: must be in (0, 1)"),
    (["--optim.weight_decay", "-0.1"], "optim.weight_decay=-0.1: must be 0 or more"),
    (["--measure.target_accuracy", "0"], "measure.target_accuracy=0.0: must be in (0, 1]"),
    (["--measure.target_accuracy", "1.5"], "measure.target_accuracy=1.5: must be in (0, 1]"),
    (["--data.ffcv.jpeg_quality", "101"], "data.ffcv.jpeg_quality=101: a JPEG quality is 1 to 100"),
    (["--lr_find.steps", "5"], "lr_find.steps=5: at least 15"),
    (["--lr_find.min_lr", "0"], "lr_find.min_lr=0.0: must be greater than 0"),
    # precision / accelerator / compile combinations that cannot work here, and more devices than exist
    (["--trainer.precision", "16-mixed"], "trainer.precision='16-mixed': fp16 autocast needs a CUDA GPU"),
    (["--trainer.accelerator", "gpu"], "trainer.accelerator='gpu': no CUDA GPU is visible on this machine"),
    (["--trainer.compile", "max-autotune"], "trainer.compile='max-autotune': this mode needs CUDA"),
    (["--trainer.sync_batchnorm", "true", "--trainer.strategy", "ddp"], "trainer.sync_batchnorm=True: torch's SyncBatchNorm runs only on CUDA"),
    (["--trainer.devices", "512"], "trainer.devices=512: this node has"),
    (["--trainer.num_nodes", "2"], "trainer.num_nodes=2: several nodes need a cluster launcher"),
    # missing data, unwritable output, unsafe names
    (["--data.source", "folder", "--data.root", "/nonexistent/cifar10"], "data.root='/nonexistent/cifar10': no such file or directory"),
    (["--output.dir", "/proc/cifarbench-results"], "output.dir='/proc/cifarbench-results': is not a writable directory"),
    (["--output.run_id", "a b"], "output.run_id='a b': use 1-128 letters, digits"),
]


@pytest.mark.parametrize("args, message", FIT_CASES, ids=[c[1].split(":")[0] + f"-{i}" for i, c in enumerate(FIT_CASES)])
def test_bad_fit_input_is_one_clear_line_before_any_work(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["fit", *TINY, "--output.dir", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("cifarbench: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not (tmp_path / "out").exists()  # refused before anything was written


MATRIX_CASES = [
    ({"name": "m", "axes": {}}, "matrix.axes={}: the matrix is empty"),
    ({"name": "m", "axes": {"trainer.epochs": [1]}, "exclude": [{"trainer.epochs": 1}]},
     "matrix.axes={'trainer.epochs': [1]}: the matrix is empty: every combination is excluded"),
    ({"name": "m", "axes": {"trainer.epohcs": [1, 2]}}, "matrix.axes.trainer.epohcs='trainer.epohcs': no such config field"),
    ({"name": "m", "axes": {"trainer.epochs": []}}, "matrix.axes.trainer.epochs=[]: an axis needs a non-empty list"),
    ({"name": "m", "axis": {"trainer.epochs": [1]}}, "matrix.axis={'trainer.epochs': [1]}: allowed keys"),
    ({"name": "bad name;rm", "axes": {"trainer.epochs": [1]}}, "matrix.name='bad name;rm': use letters, digits"),
]


@pytest.mark.parametrize("spec, message", MATRIX_CASES, ids=[f"matrix-{i}" for i in range(len(MATRIX_CASES))])
def test_bad_matrix_is_one_clear_line_before_any_run(spec, message, tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(spec))
    code = main(["run", str(path), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_there_are_at_least_thirty_cases():
    assert len(FIT_CASES) + len(MATRIX_CASES) >= 30
