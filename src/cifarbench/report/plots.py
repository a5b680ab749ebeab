"""The report's figures, one function each, from the run and summary tables (matplotlib, no display)."""

from __future__ import annotations

import textwrap
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .aggregate import TRAINED_TO_THE_END, missing  # noqa: E402


def styled_figure(title: str, width: float = 7.5, height: float = 4.2) -> tuple[Figure, Any]:
    """A figure in the report's style; its title over the whole figure (not the axes, which a legend or long tick
    labels narrow), wrapped to the figure's width: a long one is never cut off."""
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    fig.suptitle(textwrap.fill(title, width=int(width * TITLE_CHARS_PER_INCH)))
    ax.grid(alpha=0.3)
    return fig, ax


TITLE_CHARS_PER_INCH = 10  # at the title's 12 pt
LABEL_CHARS = 40  # a legend entry or axis label wider than this wraps onto further lines


def outside_legend(ax, fontsize: int = 7) -> None:
    """The legend right of the axes, its entries wrapped, and the figure tall enough to hold it: constrained layout
    makes room beside the axes, not above or below the figure's edges."""
    handles, labels = ax.get_legend_handles_labels()
    wrapped = [textwrap.fill(label, width=LABEL_CHARS) for label in labels]
    lines = sum(label.count("\n") + 1 for label in wrapped)
    fig = ax.figure
    fig.set_figheight(max(fig.get_figheight(), 0.03 * fontsize * lines + 1.5))
    ax.legend(handles, wrapped, fontsize=fontsize, loc="center left", bbox_to_anchor=(1.01, 0.5))


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def _name(row) -> str:
    """Configuration label and GPU count, wrapped so that long labels do not squeeze the axes."""
    return textwrap.fill(f"{row['label']} ({row['gpus']} GPU)", width=36)


SCALING_MARKERS = {"weak": "o", "strong": "s"}  # the caption says which is which


def throughput_scaling(summary: pd.DataFrame) -> Figure:
    """Images/s against GPU count per configuration, with the ideal line through its 1-GPU point; the marker
    says whether the configuration scales weakly (circles) or strongly (squares); a red cross marks a point with
    a run whose GPU was throttled."""
    fig, ax = styled_figure("Throughput vs GPU count (median over runs; dashed: ideal linear scaling)")
    plotted = False
    for label, rows in summary.groupby("label", sort=True):
        rows = rows.dropna(subset=["images_per_sec"]).sort_values("gpus")
        if rows.empty:
            continue
        scaling = rows["scaling"].iloc[0]
        line, = ax.plot(rows["gpus"], rows["images_per_sec"], marker=SCALING_MARKERS[scaling.split(",")[0]],
                        label=f"{label} ({scaling})")
        one = rows[rows["gpus"] == 1]
        if not one.empty:
            ax.plot(rows["gpus"], one["images_per_sec"].iloc[0] * rows["gpus"], linestyle="--", color=line.get_color(),
                    alpha=0.6)
        capped = rows[rows["throttled"] > 0]  # a power- or heat-capped GPU: the point is not the configuration's
        ax.scatter(capped["gpus"], capped["images_per_sec"], marker="x", s=120, color="red", zorder=4,
                   label="throttled GPU (power or heat)" if not capped.empty else None)
        plotted = True
    if plotted:
        ax.set_xticks(sorted(summary["gpus"].unique()))
        outside_legend(ax, fontsize=8)
    else:
        _empty(ax, "no run has a steady-state throughput")
    ax.set_xlabel("GPUs (devices x nodes)")
    ax.set_ylabel("images/s (whole job)")
    return fig


def time_to_target(runs: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Each run's time to target (dots), the median (bar) and the IQR (line); runs that did not reach the
    target are marked at the right edge, never placed at a time."""
    fig, ax = styled_figure("Time to target, mlperf clock (dots: runs; bar: median; band: IQR)",
                      height=max(2.5, 0.7 * len(summary) + 1.5))
    finite = runs["time_to_target"].dropna()
    right = (finite.max() * 1.15) if not finite.empty else 1.0
    for y, (_, row) in enumerate(summary.iterrows()):
        mine = runs[runs["configuration"] == row["configuration"]]
        times = mine["time_to_target"].dropna()
        ax.scatter(times, [y] * len(times), color="C0", zorder=3)
        if not missing(row["ttt_median"]):
            ax.plot([row["ttt_q1"], row["ttt_q3"]], [y, y], color="C0", linewidth=3, alpha=0.4)
            ax.plot([row["ttt_median"]] * 2, [y - 0.3, y + 0.3], color="C3", linewidth=2)
        missed = len(mine) - len(times)
        if missed:
            ax.scatter([right], [y], marker="x", color="C3", zorder=3)
            ax.annotate(f"{missed} not reached", (right, y), textcoords="offset points", xytext=(-6, 7), ha="right",
                        fontsize=8, color="C3")
    ax.set_yticks(range(len(summary)), [_name(r) for _, r in summary.iterrows()])
    ax.set_xlim(0, right * 1.05)
    ax.set_xlabel("seconds to target accuracy\n(mlperf clock: data setup and validation included)")
    return fig


def accuracy_vs_time(runs: pd.DataFrame, curves: dict[str, list[dict[str, Any]]]) -> Figure:
    """Validation accuracy against wall-clock time for every run: the DAWNBench view."""
    fig, ax = styled_figure("Validation accuracy vs wall-clock time (every run; solid: seed protocol, held-out split; "
                      "dashed: published, test set; dotted: target)", height=5.0)
    colours = {name: f"C{i % 10}" for i, name in enumerate(sorted({_name(run) for _, run in runs.iterrows()}))}
    seen = set()
    for _, run in runs.iterrows():
        curve = curves.get(run["key"]) or []
        if not curve:
            continue
        name = _name(run)
        ax.plot([p["seconds"]["mlperf"] for p in curve], [p["val_acc"] for p in curve], marker=".", color=colours[name],
                alpha=0.8, label=None if name in seen else f"{name} ({run.get('protocol', 'seed')})",
                linestyle="-" if run.get("protocol", "seed") == "seed" else "--")
        seen.add(name)
    for target in runs["target"].dropna().unique():
        ax.axhline(target, linestyle=":", color="grey")
    if seen:
        outside_legend(ax)
    else:
        _empty(ax, "no run has a validation curve")
    ax.set_xlabel("seconds on the mlperf clock\n(from data setup, everything included)")
    ax.set_ylabel("validation accuracy")
    return fig


def pareto(summary: pd.DataFrame) -> Figure:
    """Median time to target against best accuracy per configuration (numbered; the legend names them); per
    protocol (the accuracy is on other images in each), a frontier joins the configurations no other of that
    protocol beats on both (faster and at least as accurate)."""
    points = summary.dropna(subset=["ttt_median", "best_val_acc"]).sort_values(["ttt_median", "best_val_acc"],
                                                                                 ascending=[True, False])
    left_out = len(summary) - len(points)
    fig, ax = styled_figure("Pareto: time to target vs accuracy, per protocol"
                      + (f" ({left_out} configuration(s) never reached it)" if left_out else ""))
    for i, (protocol, mine) in enumerate(points.groupby("protocol", sort=True)):
        frontier, best = [], -1.0
        for _, row in mine.iterrows():
            if row["best_val_acc"] > best:
                frontier.append(row)
                best = row["best_val_acc"]
        ax.scatter(mine["ttt_median"], mine["best_val_acc"], color=f"C{2 * i}", zorder=3, label=f"{protocol} protocol")
        ax.step([r["ttt_median"] for r in frontier], [r["best_val_acc"] for r in frontier], where="post",
                color=f"C{2 * i + 1}", label=f"Pareto frontier ({protocol})")
    for number, (_, row) in enumerate(points.iterrows(), start=1):  # numbered here, named in the legend
        ax.annotate(str(number), (row["ttt_median"], row["best_val_acc"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
        ax.plot([], [], linestyle="none", label=f"{number}: {row['label']} ({row['gpus']} GPU)")
    if len(points):
        outside_legend(ax)
    else:
        _empty(ax, "no configuration reached the target")
    ax.set_xlabel("median seconds to target")
    ax.set_ylabel("best validation accuracy (median)")
    return fig


def data_wait(runs: pd.DataFrame) -> Figure:
    """Per data path, the share of steady step time the training waited for data (the device's idle gap on
    CUDA, the batch fetch on a CPU) beside the harness's share (hooks, loggers, progress bar between steps),
    which is never data wait (bars: median; dots: runs)."""
    fig, ax = styled_figure("Data stall and harness time per data path (share of steady step time)")
    trained = runs[runs["status"].isin(TRAINED_TO_THE_END)].dropna(subset=["data_stall"])
    if trained.empty:
        _empty(ax, "no run has data-wait measurements")
        return fig
    paths = sorted(trained["data_path"].astype(str).unique())
    for x, path in enumerate(paths):
        mine = trained[trained["data_path"].astype(str) == path]
        for offset, column, colour, label in ((-0.2, "data_stall", "C1", "data stall"),
                                              (0.2, "harness_share", "C7", "harness")):
            values = mine[column].dropna() * 100
            if values.empty:
                continue
            ax.bar(x + offset, values.median(), width=0.4, color=colour, alpha=0.6, label=label if x == 0 else None)
            ax.scatter([x + offset] * len(values), values, color=colour, zorder=3)
    ax.set_xticks(range(len(paths)), paths)
    ax.set_ylabel("% of steady step time")
    ax.legend(fontsize=8)
    return fig
    paths = sorted(trained["data_path"].astype(str).unique())
    for x, path in enumerate(paths):
        values = trained[trained["data_path"].astype(str) == path]["data_stall"] * 100
        ax.bar(x, values.median(), color="C1", alpha=0.6)
        ax.scatter([x] * len(values), values, color="C1", zorder=3)
    ax.set_xticks(range(len(paths)), paths)
    ax.set_ylabel("% of step time waiting for the batch")
    return fig
