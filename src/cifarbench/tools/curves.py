"""A run's training curves from its CSV logs: LR, loss and accuracy plots, and the per-epoch table.

The source is Lightning's CSVLogger output in the run directory (``logs/metrics.csv``, then
``logs-restart<n>/metrics.csv`` of resumed attempts; a step logged twice, lost and redone after a
preemption, keeps its later value). Epoch values are Lightning's epoch means (``on_epoch=True``), not
last-batch values.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from ..figures import save_png  # noqa: E402
from ..record import atomic_write_text  # noqa: E402

EPOCH_COLUMNS = {"train/loss_epoch": "Train loss", "val/loss": "Val loss", "train/acc_epoch": "Train accuracy",
                 "val/acc": "Val accuracy"}


def read_metrics(run_dir: Path) -> pd.DataFrame:
    files = [run_dir / "logs" / "metrics.csv"] + sorted(run_dir.glob("logs-restart*/metrics.csv"),
                                                        key=lambda p: int(p.parent.name.removeprefix("logs-restart")))
    frames = [pd.read_csv(f) for f in files if f.exists()]
    if not frames:
        raise FileNotFoundError(f"no metrics.csv under {run_dir}/logs")
    return pd.concat(frames, ignore_index=True)


def series(metrics: pd.DataFrame, column: str, by: str = "step") -> pd.DataFrame:
    """One value per ``by`` (step or epoch) for ``column``: the last one logged."""
    if column not in metrics:
        return pd.DataFrame(columns=[by, "step", column])
    rows = metrics.dropna(subset=[column])
    return rows.drop_duplicates(subset=[by], keep="last")[list(dict.fromkeys([by, "step", column]))]


def epoch_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Epoch | Train loss | Val loss | Train accuracy | Val accuracy (1-based epochs, epoch means)."""
    table = pd.DataFrame({"epoch": sorted(metrics["epoch"].dropna().unique().astype(int))})
    for column, name in EPOCH_COLUMNS.items():
        values = series(metrics, column, by="epoch")[["epoch", column]].rename(columns={column: name})
        table = table.merge(values, on="epoch", how="left")
    table = table.dropna(subset=list(EPOCH_COLUMNS.values()), how="all")
    return table.assign(epoch=table["epoch"].astype(int) + 1).rename(columns={"epoch": "Epoch"}).reset_index(drop=True)


def epoch_markdown(table: pd.DataFrame) -> str:
    return table.to_markdown(index=False, floatfmt=["g"] + [".4f"] * (len(table.columns) - 1)) + "\n"


def epoch_rich_table(table: pd.DataFrame, title: str) -> Table:
    shown = Table(title=title)
    for name in table.columns:
        shown.add_column(name, justify="right")
    for row in table.itertuples(index=False):
        shown.add_row(str(row[0]), *("–" if pd.isna(v) else f"{v:.4f}" for v in row[1:]))
    return shown


def plot_training(metrics: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """lr.png, loss.png and accuracy.png: per step (thin line) and per epoch (markers at the epoch's last step)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    lr_columns = [c for c in metrics.columns if c.startswith("lr-")]
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for column in lr_columns:
        s = series(metrics, column)
        ax.plot(s["step"], s[column], label=column.removeprefix("lr-"))
    ax.set(title="Learning rate per step", xlabel="step", ylabel="learning rate")
    if lr_columns:
        ax.legend()
    paths["lr"] = save_png(fig, out_dir / "lr.png")
    for name, label in (("loss", "loss"), ("acc", "accuracy")):
        fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
        step = series(metrics, f"train/{name}_step")
        ax.plot(step["step"], step[f"train/{name}_step"], linewidth=0.8, alpha=0.5, label="train, per step")
        for column, legend in ((f"train/{name}_epoch", "train, epoch mean"), (f"val/{name}", "validation, per epoch")):
            s = series(metrics, column, by="epoch")
            ax.plot(s["step"], s[column], marker="o", label=legend)
        ax.set(title=f"{label.capitalize()} per step and per epoch", xlabel="step", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend()
        paths[label] = save_png(fig, out_dir / f"{label}.png")
    return paths


def write_training_curves(run_dir: Path, console: Console) -> dict[str, Path]:
    """The end of a run: plots into ``<run dir>/plots/``, the epoch table printed and saved as epochs.md.
    Nothing for a run that failed before it logged a metric."""
    try:
        metrics = read_metrics(run_dir)
    except FileNotFoundError:
        return {}
    table = epoch_table(metrics)
    console.print(epoch_rich_table(table, f"{run_dir.name}: epoch means"))
    atomic_write_text(run_dir / "epochs.md", epoch_markdown(table))
    return plot_training(metrics, run_dir / "plots")
