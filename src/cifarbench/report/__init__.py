"""`cifarbench report RESULTS_DIR...`: run records -> summary table (terminal, CSV, Markdown) and one HTML file.

Data flows one way: ``collect`` (records -> one row per run) -> ``aggregate`` (one row per configuration)
-> ``tables`` / ``plots`` -> ``html`` (and ``wandb_report``). Nothing here reads anything but records.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import pandas as pd
from matplotlib.figure import Figure
from rich.console import Console

from ..errors import CifarbenchError, ConfigError
from ..record import atomic_write_text, writable
from . import plots
from .aggregate import summarise
from .collect import Collected, collect
from .html import embed, render_html
from .tables import rich_table, write_tables
from .wandb_report import push_report, wandb_mode

FIGURES = [  # id, caption
    ("throughput-scaling", "Steady-state images/s of the whole job against its GPU count; the dashed line "
                           "multiplies the 1-GPU throughput (perfect scaling). Circles: weak scaling (each GPU's "
                           "batch fixed, so the global batch grows with the GPUs); squares: strong scaling (the "
                           "global batch fixed, split over the GPUs). The legend says how each scaled its max_lr."),
    ("time-to-target", "Seconds from the start of fit to the first validation at the target, validation included."),
    ("accuracy-vs-time", "Validation accuracy after each epoch against wall-clock seconds since the start of fit."),
    ("pareto", "Median time to target against best validation accuracy; the frontier marks the configurations "
               "that no other beats on both."),
    ("data-wait", "Share of each training step spent waiting for its batch (after warm-up), per data path."),
]


def report_figures(collected: Collected, summary: pd.DataFrame) -> list[Figure]:
    """The report's figures, in the order of :data:`FIGURES`."""
    runs = collected.runs
    return [plots.throughput_scaling(summary), plots.time_to_target(runs, summary),
            plots.accuracy_vs_time(runs, collected.curves), plots.pareto(summary), plots.data_wait(runs)]


def build_report(paths: list[str], out_dir: Optional[Path] = None, baseline: Optional[str] = None,
                 wandb: str = "auto", console: Optional[Console] = None) -> Path:
    """Writes summary.csv, summary.md, runs.csv and report.html into ``out_dir`` (default: ``<first
    path>/report``); prints the table and the warnings; returns the HTML file's path."""
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    for path in paths:
        if not Path(path).exists():
            raise CifarbenchError(f"results directory {path!r} does not exist")
    out_dir = Path(out_dir or Path(paths[0]) / "report")
    if not writable(out_dir):
        raise ConfigError("--output", str(out_dir), "is not a writable directory (nor inside one)")
    collected = collect(paths)
    if collected.runs.empty:
        raise CifarbenchError(f"no run records (record.json) under {', '.join(map(str, paths))}")
    summary = summarise(collected.runs, baseline)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = ", ".join(Path(p).resolve().name for p in paths)
    for warning in collected.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(rich_table(summary, f"cifarbench report: {title}"))
    write_tables(summary, collected.runs, out_dir)
    runs = collected.runs
    embedded = [embed(fig, id, caption) for fig, (id, caption) in zip(report_figures(collected, summary), FIGURES)]
    html = out_dir / "report.html"
    atomic_write_text(html, render_html(collected, summary, embedded, title, [str(p) for p in paths], baseline))
    mode = wandb_mode(runs, wandb)
    if mode:
        run_dir = push_report(summary, runs, html, out_dir, mode)
        console.print(f"W&B report run ({mode}): {run_dir}" + (f" (upload: wandb sync {run_dir})" if mode == "offline" else ""),
                      highlight=False, soft_wrap=True)
    return html
