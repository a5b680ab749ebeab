"""The summary table for people: formatted columns, printed with rich, saved as CSV and Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd
from rich.table import Table

from ..record import atomic_write_text
from .aggregate import missing


def _num(fmt: str) -> Callable[[Any], str]:
    return lambda v: "–" if missing(v) else format(v, fmt)


def _percent(v: Any) -> str:
    return "–" if missing(v) else f"{100 * v:.1f}%"


def _time_to_target(row: pd.Series) -> str:
    if row["reached"] == 0:
        return "not reached"
    if row["reached"] == 1:
        return f"{row['ttt_median']:.1f} s"
    return f"{row['ttt_median']:.1f} s [{row['ttt_q1']:.1f}–{row['ttt_q3']:.1f}]"


# display name -> how to format it from a summary row
COLUMNS: dict[str, Callable[[pd.Series], str]] = {
    "Configuration": lambda r: r["label"],
    "Network": lambda r: r["network"],
    "Protocol": lambda r: r["protocol"],
    "GPUs": lambda r: str(r["gpus"]),
    "Scaling": lambda r: r["scaling"],
    "Runs": lambda r: str(r["runs"]),
    "Images/s": lambda r: _num(",.0f")(r["images_per_sec"]),
    "Images/s per GPU": lambda r: _num(",.0f")(r["images_per_sec_per_gpu"]),
    "Scaling eff.": lambda r: _percent(r["scaling_efficiency"]),
    "Time to target (mlperf clock), median [IQR]": _time_to_target,
    "Trimmed mean": lambda r: "–" if missing(r["ttt_trimmed_mean"]) else f"{r['ttt_trimmed_mean']:.1f} s",
    "Reached": lambda r: f"{r['reached']}/{r['runs']}",
    "Best val acc": lambda r: _percent(r["best_val_acc"]),
    "Data stall": lambda r: _percent(r["data_stall"]),
    "MFU": lambda r: _percent(r["mfu"]),
    "Peak memory": lambda r: "–" if missing(r["peak_memory_bytes"]) else f"{r['peak_memory_bytes'] / 2**30:.2f} GiB",
    "Images/J": lambda r: _num(",.1f")(r["images_per_joule"]),
    "Status": lambda r: r["status"],
}
BASELINE_COLUMNS: dict[str, Callable[[pd.Series], str]] = {
    "Speed-up, time to target": lambda r: "–" if missing(r["speedup_time_to_target"]) else f"{r['speedup_time_to_target']:.2f}x",
    "Speed-up, images/s": lambda r: "–" if missing(r["speedup_images_per_sec"]) else f"{r['speedup_images_per_sec']:.2f}x",
}


TEXT_COLUMNS = ("Configuration", "Status")  # left-aligned; the numbers are right-aligned


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    columns = COLUMNS | (BASELINE_COLUMNS if "baseline" in summary else {})
    return pd.DataFrame([{name: fmt(row) for name, fmt in columns.items()} for _, row in summary.iterrows()],
                        columns=list(columns))


def rich_table(summary: pd.DataFrame, title: str) -> Table:
    shown = display_table(summary)
    table = Table(title=title)
    for name in shown.columns:
        text = name in TEXT_COLUMNS
        table.add_column(name, justify="left" if text else "right", no_wrap=text)
    for row in shown.itertuples(index=False):
        table.add_row(*row)
    return table


def write_tables(summary: pd.DataFrame, runs: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """summary.csv (numbers, unformatted), summary.md (as printed) and runs.csv (one row per run)."""
    raw = summary.drop(columns=["configuration", "scaling_group"])
    per_run = runs.drop(columns=["config", "environment", "software", "configuration", "config_only", "scaling_group",
                                 "key"])
    paths = {"summary_csv": out_dir / "summary.csv", "summary_md": out_dir / "summary.md", "runs_csv": out_dir / "runs.csv"}
    atomic_write_text(paths["summary_csv"], raw.to_csv(index=False))
    atomic_write_text(paths["summary_md"], display_table(summary).to_markdown(index=False) + "\n")
    atomic_write_text(paths["runs_csv"], per_run.to_csv(index=False))
    return paths
