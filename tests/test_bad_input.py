"""Every kind of bad input is refused before any work, in one line naming the field, the value and what is
allowed (table-driven: each row is a command line and the message the user must see)."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from cifarbench.checks import check_config
from cifarbench.cli import main
from cifarbench.config_parser import config_from_dict
from cifarbench.data.sources import CIFAR10_CLASSES

REPO = Path(__file__).resolve().parents[1]

TINY = ["--model.width", "8", "--data.source", "synthetic", "--data.synthetic_train_size", "1200",
        "--data.synthetic_test_size", "200", "--data.val_size", "200", "--data.batch_size", "100",
        "--data.num_workers", "0", "--trainer.accelerator", "cpu", "--output.wandb", "disabled"]

FIT_CASES = [
    # unknown keys and typos, with the closest name
    (["--trainer.epohcs", "3"], "trainer.epohcs: unknown config field; did you mean trainer.epochs?"),
    (["--data.batchsize", "64"], "data.batchsize: unknown config field; did you mean data.batch_size?"),
    (["--optim.lr", "0.1"], "optim.lr: unknown config field; did you mean optim.max_lr?"),
    # wrong types and values outside a fixed set
    (["--trainer.epochs", "three"], "trainer.epochs='three': must be a whole number of at least 1"),
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
    (["--data.cutout_size", "40"], "data.cutout_size=40: 0 to 32"),
    # other values out of range
    (["--data.flip_prob", "1.5"], "data.flip_prob=1.5: a probability must be between 0 and 1"),
    (["--model.dropout", "1.0"], "model.dropout=1.0: must be in [0, 1)"),
    (["--optim.max_lr", "0"], "optim.max_lr=0: must be greater than 0"),
    (["--optim.pct_start", "1.0"], "optim.pct_start=1.0: must be in (0, 1)"),
    (["--optim.weight_decay", "-0.1"], "optim.weight_decay=-0.1: must be 0 or more"),
    (["--measure.target_accuracy", "0"], "measure.target_accuracy=0: must be in (0, 1]"),
    (["--measure.target_accuracy", "1.5"], "measure.target_accuracy=1.5: must be in (0, 1]"),
    (["--data.ffcv.jpeg_quality", "101"], "data.ffcv.jpeg_quality=101: a JPEG quality is 1 to 100"),
    (["--lr_find.steps", "5"], "lr_find.steps=5: at least 15"),
    (["--lr_find.min_lr", "0"], "lr_find.min_lr=0: must be greater than 0"),
    # every numeric field has its range (issue 13: a negative seed reached seed_everything)
    (["--trainer.seed", "-5"], "trainer.seed=-5: a seed must be a whole number from 0 to 4294967295"),
    (["--data.split_seed", "4294967296"], "data.split_seed=4294967296: a seed must be a whole number from 0 to"),
    (["--optim.momentum", "1.5"], "optim.momentum=1.5: must be in [0, 1)"),
    (["--profiler.active", "0"], "profiler.active=0: must be a whole number of at least 1"),
    (["--data.ffcv.batches_ahead", "0"], "data.ffcv.batches_ahead=0: must be a whole number of at least 1"),
    (["--data.path", "ffcv", "--data.ffcv.dir", "/proc/cifarbench-betons"],
     "data.ffcv.dir='/proc/cifarbench-betons': holds no .beton files and is not a writable directory"),
    (["--data.train_subset", "0"], "data.train_subset=0: must be a whole number of at least 1"),
    (["--lr_find.early_stop_threshold", "0.5"], "lr_find.early_stop_threshold=0.5: must be above 1"),
    (["--output.name", "a;b"], "output.name='a;b': use 1-128 letters, digits"),
    (["--model.num_classes", "1"], "model.num_classes=1: at least 2 classes"),
    (["--model.name", "resnet9", "--model.dropout", "0.1"], "model.dropout=0.1: only custom_resnet has dropout"),
    (["--model.num_classes", "11"], "model.num_classes=11: data.source=synthetic has 10 classes"),
    # W&B online with no API key (issue 13): refused before a W&B run exists
    (["--output.wandb", "online"], "output.wandb='online': no W&B API key for api.wandb.ai: run `wandb login`"),
    # precision / accelerator / compile combinations that cannot work here, and more devices than exist
    (["--trainer.precision", "16-mixed"], "trainer.precision='16-mixed': fp16 autocast needs a CUDA GPU"),
    (["--trainer.accelerator", "gpu"], "trainer.accelerator='gpu': no CUDA GPU is visible on this machine"),
    (["--trainer.compile", "max-autotune"], "trainer.compile='max-autotune': this mode needs CUDA"),
    (["--trainer.sync_batchnorm", "true", "--trainer.strategy", "ddp", "--trainer.devices", "2"],
     "trainer.sync_batchnorm=True: torch's SyncBatchNorm runs only on CUDA"),
    # combinations that fail late (or silently) on any machine, a GPU's too (issue 16)
    (["--trainer.precision", "16-true"], "trainer.precision='16-true': with optim.optimizer=adam: Adam's eps (1e-8) "
                                         "is below fp16's smallest value"),
    (["--trainer.sync_batchnorm", "true"], "trainer.sync_batchnorm=True: one device has no other batch statistics"),
    (["--data.path", "ffcv", "--data.ffcv.order", "quasi_random", "--trainer.devices", "2", "--trainer.strategy", "ddp"],
     "data.ffcv.order='quasi_random': FFCV's quasi-random order does not support distributed training"),
    (["--trainer.compile", "reduce-overhead", "--trainer.devices", "2", "--trainer.strategy", "ddp"],
     "trainer.compile='reduce-overhead': has not been shown to work under DDP"),
    (["--data.batch_scaling", "strong", "--data.batch_size", "101", "--trainer.devices", "2", "--trainer.strategy", "ddp"],
     "data.batch_size=101: strong scaling splits this global batch over the 2 devices: use a multiple of 2"),
    (["--data.batch_scaling", "even"], "data.batch_scaling='even': expected one of weak, strong"),
    (["--optim.lr_scaling", "cubic"], "optim.lr_scaling='cubic': expected one of none, linear, sqrt"),
    (["--trainer.devices", "512"], "trainer.devices=512: this node has"),
    (["--trainer.num_nodes", "2"], "trainer.num_nodes=2: several nodes need a cluster launcher"),
    # missing data, unwritable output, unsafe names
    (["--data.source", "folder", "--data.root", "/nonexistent/cifar10"], "data.root='/nonexistent/cifar10': no such file or directory"),
    (["--output.dir", "/proc/cifarbench-results"], "output.dir='/proc/cifarbench-results': is not a writable directory"),
    (["--output.run_id", "a b"], "output.run_id='a b': use 1-128 letters, digits"),
]


# Image folders with one thing wrong (issue 13): each is refused from its layout and image headers, before a
# run directory, a record or a W&B run exists. {folder} is a real folder of JPEGs, built by `image_folder`.
FOLDER = ["--data.source", "folder", "--data.root", "{folder}", "--data.train_subset", "40"]
FOLDER_CASES = [
    ("eleven-classes", "has 11 classes (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck, "
                       "unicorn) but the network has model.num_classes=10 outputs; set model.num_classes=11"),
    ("no-test", "found no test/<class>/*.jpg images"),
    ("truncated", "train/cat/1.jpg is truncated (its JPEG end marker is missing)"),
    ("64x48", "train/dog/0.jpg is 64x48; CIFAR images must be 32x32"),
    ("class-mismatch", "train classes ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', "
                       "'ship', 'truck') differ from test classes"),
    ("not-an-image", "test/frog/0.jpg is not a readable image"),
]


def image_folder(root: Path, kind: str) -> Path:
    """A CIFAR-shaped folder of real JPEGs (4 train and 1 test image per class), broken as ``kind`` says."""
    from PIL import Image

    classes = list(CIFAR10_CLASSES) + (["unicorn"] if kind == "eleven-classes" else [])
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 1)):
        if split == "test" and kind == "no-test":
            continue
        for cls in classes:
            if split == "test" and kind == "class-mismatch" and cls == "truck":
                continue
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                size = (64, 48) if (kind, split, cls, i) == ("64x48", "train", "dog", 0) else (32, 32)
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.jpg", quality=75)
    if kind == "truncated":
        path = root / "train/cat/1.jpg"
        path.write_bytes(path.read_bytes()[:-200])
    if kind == "not-an-image":
        (root / "test/frog/0.jpg").write_text("not a JPEG")
    return root


def assert_refused(code: int, err: str, message: str, out: Path) -> None:
    """Exit code 2, one line with the message, no traceback, nothing written."""
    assert code == 2, err
    assert err.startswith("cifarbench: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert not out.exists()  # no run directory, record or W&B run


@pytest.mark.parametrize("args, message", FIT_CASES, ids=[c[1].split(":")[0] + f"-{i}" for i, c in enumerate(FIT_CASES)])
def test_bad_fit_input_is_one_clear_line_before_any_work(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no W&B credentials
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    code = main(["fit", *TINY, "--output.dir", str(tmp_path / "out"), *args])
    assert_refused(code, capsys.readouterr().err, message, tmp_path / "out")


@pytest.mark.parametrize("kind, message", FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES])
def test_a_broken_image_folder_is_refused_before_the_run_exists(kind, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = image_folder(tmp_path / "images", kind)
    args = [str(root) if a == "{folder}" else a for a in FOLDER]
    code = main(["fit", *TINY, *args, "--output.dir", str(tmp_path / "out"), "--output.wandb", "offline"])
    assert_refused(code, capsys.readouterr().err, message, tmp_path / "out")


def test_the_same_folder_unbroken_passes_the_checks(tmp_path):
    root = image_folder(tmp_path / "images", "sound")
    check_config(config_from_dict({"data": {"source": "folder", "root": str(root), "val_size": 10, "batch_size": 10},
                                   "trainer": {"accelerator": "cpu"}, "output": {"dir": str(tmp_path / "out")}}))


def test_wandb_online_with_an_unreachable_server_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # loopback, nothing listens (discard port)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    code = main(["fit", *TINY, "--output.wandb", "online", "--output.dir", str(tmp_path / "out")])
    assert_refused(code, capsys.readouterr().err, "output.wandb='online': cannot reach 127.0.0.1:9", tmp_path / "out")


CONFIG_FILE_CASES = [  # (file text, message): the file is named with its line (issue 13: "<unicode string>")
    ("trainer:\n  epochs: 3\n  seed: [1\nmodel:\n  width: 8\n",
     "bad.yaml:4:6: not valid YAML: expected ',' or ']', but got ':' (a flow sequence from line 3)"),
    ("trainer:\n\tepochs: 3\n", "bad.yaml:2:1: not valid YAML: found character '\\t' that cannot start any token"),
    ("trainer:\n  seed: -5\n", "trainer.seed=-5: a seed must be a whole number from 0 to 4294967295"),
]


@pytest.mark.parametrize("text, message", CONFIG_FILE_CASES, ids=[f"config-file-{i}" for i in range(len(CONFIG_FILE_CASES))])
def test_a_bad_config_file_is_named_with_its_line(text, message, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(text)
    code = main(["fit", *TINY, "-c", str(tmp_path / "bad.yaml"), "--output.dir", str(tmp_path / "out")])
    assert_refused(code, capsys.readouterr().err, message, tmp_path / "out")


SUBCOMMAND_CASES = [  # every subcommand's own arguments are bounded too
    (["profile-data", "--steps", "0"], "--steps=0: must be a whole number of at least 1"),
    (["profile-data", "--sweep_workers", "[1,-1]"], "--sweep_workers=[1, -1]: must be 0 or more"),
    (["analyze", "run", "--gallery_size", "0"], "--gallery_size=0: must be a whole number of at least 1"),
    (["tensorboard", "run", "--port", "70000"], "--port=70000: a TCP port is 1 to 65535"),
    (["submit", "bench/matrices/tiny-cpu.yaml", "--cpus_per_task", "0"], "--cpus_per_task=0: must be a whole number"),
    (["report", "/nonexistent/results"], "results directory '/nonexistent/results' does not exist"),
    (["report", "bench/results/cpu-2core/smoke", "--output", "/proc/cifarbench-report"],
     "--output='/proc/cifarbench-report': is not a writable directory"),
    (["run", "/nonexistent/matrix.yaml"], "matrix '/nonexistent/matrix.yaml': cannot read it (No such file or directory)"),
    (["run", "bench/matrices/tiny-cpu.yaml", "--output_dir", "/proc/cifarbench"],
     "--output_dir='/proc/cifarbench': is not a writable directory"),
]


@pytest.mark.parametrize("argv, message", SUBCOMMAND_CASES, ids=[" ".join(c[0][:2]) for c in SUBCOMMAND_CASES])
def test_bad_subcommand_arguments_are_one_clear_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    own_dir = argv[0] in ("run", "submit") and "--output_dir" not in argv
    code = main([*argv, "--output_dir", str(tmp_path / "out")] if own_dir else argv)
    assert_refused(code, capsys.readouterr().err, message, tmp_path / "out")


MATRIX_CASES = [
    ({"name": "m", "axes": {}}, "matrix.axes={}: the matrix is empty"),
    ({"name": "m", "axes": {"trainer.epochs": [1]}, "exclude": [{"trainer.epochs": 1}]},
     "matrix.axes={'trainer.epochs': [1]}: the matrix is empty: every combination is excluded"),
    ({"name": "m", "axes": {"trainer.epohcs": [1, 2]}}, "matrix.axes.trainer.epohcs='trainer.epohcs': no such config field"),
    ({"name": "m", "axes": {"trainer.epochs": []}}, "matrix.axes.trainer.epochs=[]: an axis needs a non-empty list"),
    ({"name": "m", "axis": {"trainer.epochs": [1]}}, "matrix.axis={'trainer.epochs': [1]}: allowed keys"),
    ({"name": "bad name;rm", "axes": {"trainer.epochs": [1]}}, "matrix.name='bad name;rm': use letters, digits"),
    ({"name": "m", "axes": {"trainer.seed": [1, -5]}}, "trainer.seed=-5: a seed must be a whole number"),
    ([1, 2], "matrix='"),
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
    assert len(FIT_CASES) + len(MATRIX_CASES) + len(FOLDER_CASES) + len(CONFIG_FILE_CASES) + len(SUBCOMMAND_CASES) >= 70
