"""`cifarbench analyze RUN_DIR`: what a trained run gets wrong, and where it looks.

Loads the run's checkpoint into the run's model, evaluates its test split (normalised, not augmented, as
every data path evaluates), and writes into ``<run dir>/analysis/``: the misclassified images with the
most confident mistakes first (``misclassified.png`` and ``misclassified.json``), a GradCAM overlay of
each (the grad-cam package, for the predicted class), and the confusion matrix. Figures have fixed sizes
(panel and matrix sizes below) so they read the same for every run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.image import show_cam_on_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from torchmetrics.functional.classification import multiclass_confusion_matrix  # noqa: E402

from ..config import RunConfig  # noqa: E402
from ..config_parser import config_from_file  # noqa: E402
from ..data.device_path import normalise  # noqa: E402
from ..data.module import load_splits  # noqa: E402
from ..errors import CifarbenchError, ConfigError  # noqa: E402
from ..figures import save_png  # noqa: E402
from ..record import atomic_write_text  # noqa: E402
from ..train.module import CifarClassifier  # noqa: E402

GALLERY_COLUMNS = 5
PANEL_PX = (200, 240)  # width, height of one gallery panel (image and its two-line title)
CONFUSION_PX = (800, 700)
DPI = 100


def analyze(run_dir: Path, target_layer: str = "net.layer3", gallery_size: int = 20,
            checkpoint: Optional[Path] = None) -> dict[str, Any]:
    """Writes the analysis PNGs and misclassified.json; returns the latter's content (with the PNG paths)."""
    if gallery_size < 1:
        raise ConfigError("--gallery_size", gallery_size, "must be at least 1")
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise CifarbenchError(f"{run_dir} is not a run directory: no config.yaml")
    cfg = config_from_file(config_path)
    checkpoint = checkpoint or run_dir / "checkpoints" / "last.ckpt"
    if not checkpoint.exists():
        raise CifarbenchError(f"no checkpoint at {checkpoint}: the run had trainer.checkpoint false, or did not "
                              "finish an epoch; pass --checkpoint")
    module = CifarClassifier(cfg.model, cfg.optim)
    module.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"])
    module.eval()
    layer = target_module(module, target_layer)

    test = load_splits(cfg.data)["test"]
    images = normalise(torch.from_numpy(test.images))
    with torch.no_grad():
        probs = torch.cat([module(batch).softmax(1) for batch in images.split(256)])
    confidence, predicted = probs.max(1)
    labels = torch.from_numpy(test.labels)
    is_wrong = predicted != labels
    wrong = torch.nonzero(is_wrong).flatten()
    wrong = wrong[confidence[wrong].argsort(descending=True)][:gallery_size]

    out = run_dir / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    mistakes = [{"index": int(i), "actual": test.classes[labels[i]], "predicted": test.classes[predicted[i]],
                 "confidence": float(confidence[i])} for i in wrong]
    titles = [f"pred: {m['predicted']} ({m['confidence']:.2f})\nactual: {m['actual']}" for m in mistakes]
    with GradCAM(model=module, target_layers=[layer]) as cam:
        heat = cam(input_tensor=images[wrong], targets=[ClassifierOutputTarget(int(predicted[i])) for i in wrong])
    shown = test.images[wrong.numpy()]
    overlays = [show_cam_on_image(image, h, use_rgb=True) for image, h in zip(shown.astype(np.float32) / 255, heat)]
    paths = {"misclassified": gallery(shown, titles, out / "misclassified.png"),
             "gradcam": gallery(overlays, titles, out / "gradcam.png"),
             "confusion_matrix": confusion_figure(multiclass_confusion_matrix(predicted, labels, cfg.model.num_classes).numpy(),
                                                  test.classes, out / "confusion_matrix.png")}
    result = {"checkpoint": str(checkpoint), "target_layer": target_layer, "test_images": len(labels),
              "test_accuracy": float((~is_wrong).float().mean()),
              "misclassified_total": int(is_wrong.sum()), "gallery": mistakes,
              "files": {k: str(v) for k, v in paths.items()}}
    atomic_write_text(out / "misclassified.json", json.dumps(result, indent=2) + "\n")
    if cfg.output.wandb != "disabled":
        log_to_wandb(cfg, run_dir, paths)
    return result


def target_module(module: CifarClassifier, name: str) -> torch.nn.Module:
    try:
        return module.get_submodule(name)
    except AttributeError:
        blocks = [n for n, _ in module.net.named_children()]
        raise ConfigError("--target_layer", name, f"a module of the model, e.g. net.{' net.'.join(blocks)}") from None


def gallery(images, titles: list[str], path: Path) -> Path:
    """Images in rows of GALLERY_COLUMNS panels of PANEL_PX each, titled."""
    rows = max(1, math.ceil(len(titles) / GALLERY_COLUMNS))
    fig, axes = plt.subplots(rows, GALLERY_COLUMNS, squeeze=False,
                             figsize=(GALLERY_COLUMNS * PANEL_PX[0] / DPI, rows * PANEL_PX[1] / DPI))
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=9)
    if not titles:
        axes.flat[0].text(0.5, 0.5, "no misclassified image", ha="center", va="center")
    return save_png(fig, path, dpi=DPI)


def confusion_figure(matrix: np.ndarray, classes: tuple[str, ...], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(CONFUSION_PX[0] / DPI, CONFUSION_PX[1] / DPI), layout="constrained")
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="actual",
           title="Confusion matrix (test set)")
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", fontsize=8,
                color="white" if count > matrix.max() / 2 else "black")
    return save_png(fig, path, dpi=DPI)


def log_to_wandb(cfg: RunConfig, run_dir: Path, paths: dict[str, Path]) -> None:
    """The figures into the run's own W&B run (resumed by its id)."""
    import wandb

    run = wandb.init(id=run_dir.name, resume="allow", project=cfg.output.wandb_project, entity=cfg.output.wandb_entity,
                     dir=str(run_dir), mode=cfg.output.wandb, settings=wandb.Settings(silent=True))
    run.log({f"analysis/{name}": wandb.Image(str(path)) for name, path in paths.items()})
    run.finish()
