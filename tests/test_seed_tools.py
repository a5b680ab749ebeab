"""The seed project's tools on finished runs: LR range test, training plots, epoch table, analyze/GradCAM."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from cifarbench.tools.analyze import CONFUSION_PX, GALLERY_COLUMNS, PANEL_PX
from cifarbench.config_parser import config_from_file
from cifarbench.data.device_path import normalise
from cifarbench.data.module import load_splits
from cifarbench.record import read_record
from cifarbench.train.module import CifarClassifier
from conftest import last_line, run_cli

TINY = ["--model.width", "8", "--data.source", "synthetic", "--data.synthetic_train_size", "1200",
        "--data.synthetic_test_size", "200", "--data.val_size", "200", "--data.batch_size", "100",
        "--data.num_workers", "0", "--trainer.accelerator", "cpu", "--measure.warmup_steps", "2"]


def test_lr_find_suggests_an_lr_in_its_range_and_fit_trains_with_it(tmp_path):
    found = run_cli("lr-find", *TINY, "--lr_find.min_lr", "1e-5", "--lr_find.max_lr", "1", "--lr_find.steps", "30",
                    "--output.dir", str(tmp_path / "sweep"), timeout=300)
    assert found.returncode == 0, found.stdout[-2000:]
    snippet = Path(last_line(found))
    result = json.loads((snippet.parent / "lr_find.json").read_text())
    assert 1e-5 <= result["suggestion"] <= 1 and result["points"] == 30 and len(result["loss"]) == 30
    assert Image.open(snippet.parent / "lr_find.png").size == (640, 480)
    assert snippet.read_text().strip() == f"optim:\n  max_lr: {result['suggestion']}"

    fit = run_cli("fit", *TINY, "--trainer.epochs", "1", "--lr-find", "--lr_find.steps", "20",
                  "--output.dir", str(tmp_path / "runs"), "--output.run_id", "tuned", "--output.wandb", "disabled",
                  timeout=300)
    assert fit.returncode == 0, fit.stdout[-2000:]
    record = read_record(Path(last_line(fit)))
    sweep = json.loads((tmp_path / "runs/tuned/lr_find/lr_find.json").read_text())
    assert record["config"]["optim"]["max_lr"] == sweep["suggestion"] == record["lr_find"]["suggestion"]
    assert record["config"]["lr_find"]["enabled"] is False  # config.yaml repeats the run at that LR


@pytest.mark.parametrize("args, message", [
    (["--lr_find.min_lr", "0.1", "--lr_find.max_lr", "0.01"], "lr_find.max_lr=0.01: must be greater than lr_find.min_lr"),
    (["--lr_find.steps", "5"], "lr_find.steps=5: at least 15"),
    (["--lr-find", "--trainer.devices", "2"], "lr_find.enabled=True: only for 1-device runs"),
])
def test_lr_find_settings_are_checked_before_any_work(tmp_path, args, message):
    result = run_cli("fit", *TINY, "--output.dir", str(tmp_path), *args, timeout=120)
    assert result.returncode == 2 and message in result.stdout


def test_fit_on_real_images_then_analyze(tmp_path, cifar_tarball):
    fit = run_cli("fit", "--data.source", "folder", "--data.root", str(cifar_tarball), "--data.train_subset", "2000",
                  "--data.test_subset", "300", "--data.val_size", "200", "--data.path", "device",
                  "--data.batch_size", "100", "--data.num_workers", "0", "--model.width", "16",
                  "--trainer.accelerator", "cpu", "--trainer.channels_last", "true",
                  "--trainer.epochs", "3", "--measure.target_accuracy", "0.3", "--measure.warmup_steps", "2",
                  "--output.dir", str(tmp_path), "--output.run_id", "real", "--output.wandb", "offline", timeout=600)
    assert fit.returncode == 0, fit.stdout[-3000:]
    run_dir = tmp_path / "real"
    # the epoch table: printed and saved, epoch means for every epoch
    assert "Train loss" in fit.stdout and "Val accuracy" in fit.stdout
    rows = (run_dir / "epochs.md").read_text().splitlines()
    assert [c.strip() for c in rows[0].split("|")[1:-1]] == ["Epoch", "Train loss", "Val loss", "Train accuracy",
                                                            "Val accuracy"]
    assert [r.split("|")[1].strip() for r in rows[2:]] == ["1", "2", "3"]
    for name in ("lr", "loss", "accuracy"):
        assert Image.open(run_dir / "plots" / f"{name}.png").size == (700, 400)
    logged = list(run_dir.glob("wandb/offline-run-*/files/media/images/plots/*.png"))
    assert {p.name.split("_")[0] for p in logged} == {"lr", "loss", "accuracy"}

    result = run_cli("analyze", str(run_dir), "--gallery_size", "10", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    out = Path(last_line(result))
    report = json.loads((out / "misclassified.json").read_text())
    gallery = report["gallery"]
    assert len(gallery) == 10 and report["misclassified_total"] > 10
    panels = (GALLERY_COLUMNS * PANEL_PX[0], 2 * PANEL_PX[1])
    assert Image.open(out / "misclassified.png").size == panels
    assert Image.open(out / "gradcam.png").size == panels
    assert Image.open(out / "confusion_matrix.png").size == CONFUSION_PX

    # independently: every image in the gallery is really misclassified, and they are the most confident mistakes
    cfg = config_from_file(run_dir / "config.yaml")
    test = load_splits(cfg.data)["test"]
    model = CifarClassifier(cfg.model, cfg.optim)
    model.load_state_dict(torch.load(run_dir / "checkpoints/last.ckpt", weights_only=False)["state_dict"])
    with torch.no_grad():
        probs = model.eval()(normalise(torch.from_numpy(test.images))).softmax(1)
    confidence, predicted = probs.max(1)
    labels = torch.from_numpy(test.labels)
    for entry in gallery:
        i = entry["index"]
        assert predicted[i] != labels[i]
        assert (test.classes[predicted[i]], test.classes[labels[i]]) == (entry["predicted"], entry["actual"])
        assert entry["confidence"] == pytest.approx(float(confidence[i]), abs=1e-4)
    mistakes = sorted(confidence[predicted != labels].tolist(), reverse=True)
    assert [e["confidence"] for e in gallery] == pytest.approx(mistakes[:10], abs=1e-4)


def test_analyze_says_what_is_missing(tmp_path):
    result = run_cli("analyze", str(tmp_path), timeout=120)
    assert result.returncode == 2 and "not a run directory: no config.yaml" in result.stdout
