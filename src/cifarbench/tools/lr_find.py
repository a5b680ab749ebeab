"""`cifarbench lr-find`: the LR range test, with Lightning's Tuner.

Tuner.lr_find fits the bill (exponential sweep, early stop on divergence, a smoothed loss, steepest-descent
suggestion as the seed's torch-lr-finder gave), so cifarbench does not sweep by hand: it runs the Tuner on
a freshly built copy of the run's model and data on one device, in the run's precision, and throws the
copy away. Smoothing is Lightning's exponential moving average of the loss (beta 0.98, not configurable).
The suggestion goes to ``lr_find.yaml`` (``optim: {max_lr: ...}``), ready for ``fit -c``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.tuner import Tuner

from ..config import RunConfig
from ..data import build_datamodule
from ..errors import CifarbenchError
from ..figures import save_png
from ..record import atomic_write_text
from ..train.trainer import build_trainer
from ..train.module import CifarClassifier

RESULT_NAME = "lr_find.json"


def lr_find(cfg: RunConfig, out_dir: Path) -> dict[str, Any]:
    """Runs the range test (or reuses the one already in ``out_dir``, e.g. after a requeue) and returns its
    result: suggestion, range, the loss curve; writes lr_find.json, lr_find.yaml and lr_find.png."""
    if (out_dir / RESULT_NAME).exists():
        return json.loads((out_dir / RESULT_NAME).read_text())
    f = cfg.lr_find
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    module = CifarClassifier(cfg.model, cfg.optim, cfg.trainer.channels_last, cfg.trainer.compile)
    # the same Trainer knobs as training, on one device; enough epochs that ``steps`` ends the sweep, not them
    one_device = replace(cfg.trainer, devices=1, num_nodes=1, strategy="auto", checkpoint=False, epochs=f.steps)
    trainer = build_trainer(one_device, out_dir, callbacks=[], loggers=[], enable_progress_bar=False,
                            enable_model_summary=False)
    finder = Tuner(trainer).lr_find(module, datamodule=build_datamodule(cfg.data, seed=cfg.trainer.seed),
                                    min_lr=f.min_lr, max_lr=f.max_lr, num_training=f.steps, mode="exponential",
                                    early_stop_threshold=f.early_stop_threshold, update_attr=False)
    suggestion = finder.suggestion()
    points = len(finder.results["lr"])
    if suggestion is None:
        raise CifarbenchError(f"lr-find: only {points} loss values before the sweep stopped, too few for a "
                              "suggestion; raise lr_find.steps or lr_find.early_stop_threshold, or lower lr_find.max_lr")
    result = {"suggestion": suggestion, "method": "steepest descent of the smoothed loss (Lightning Tuner.lr_find)",
              "min_lr": f.min_lr, "max_lr": f.max_lr, "steps": f.steps, "points": points,
              "stopped_early": points < f.steps, "lr": finder.results["lr"], "loss": finder.results["loss"]}
    out_dir.mkdir(parents=True, exist_ok=True)
    fig = finder.plot(suggest=True)
    ax = fig.axes[0]
    ax.set_title(f"LR range test: suggestion {suggestion:.3g} (steepest descent)")
    ax.axvline(suggestion, color="red", linestyle=":")
    save_png(fig, out_dir / "lr_find.png")
    atomic_write_text(out_dir / "lr_find.yaml", yaml.safe_dump({"optim": {"max_lr": suggestion}}))
    atomic_write_text(out_dir / RESULT_NAME, json.dumps(result, indent=2) + "\n")
    return result
