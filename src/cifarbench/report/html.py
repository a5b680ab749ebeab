"""The self-contained HTML report: one file, the figures embedded as PNG data URIs, every value escaped."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, Optional

import jinja2
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from .. import __version__
from ..record import STOPPED_STATUSES, now
from .aggregate import TRIMMED_MEAN_MIN_RUNS
from .collect import Collected
from .tables import TEXT_COLUMNS, display_table

TEMPLATE = "report.html.j2"


@dataclass
class EmbeddedFigure:
    id: str
    title: str
    caption: str
    src: str


def embed(fig: Figure, id: str, caption: str) -> EmbeddedFigure:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    title = fig.get_suptitle() or id
    plt.close(fig)
    return EmbeddedFigure(id, title, caption, "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())


def variance_statement(summary: pd.DataFrame) -> str:
    runs = summary["runs"]
    counts = f"{runs.min()}" if runs.min() == runs.max() else f"{runs.min()} to {runs.max()}"
    trimmed = int((summary["reached"] >= TRIMMED_MEAN_MIN_RUNS).sum())
    return (f"Each configuration has {counts} run(s) (seeds). Values are medians over its runs; time to target is "
            "the median over the runs that reached the target, with the interquartile range [Q1–Q3] when two or "
            "more did; a run that did not reach it is counted in 'Reached', never averaged in. The MLPerf-style "
            f"trimmed mean (fastest and slowest run dropped) is shown where {TRIMMED_MEAN_MIN_RUNS} or more runs "
            f"reached the target ({trimmed} configuration(s) here). Images/s is steady state (warm-up excluded), "
            "summed over the job's GPUs; scaling efficiency is per-GPU images/s over the same configuration's "
            "1-GPU images/s.")


def environments(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, run in runs.iterrows():
        env = run["environment"] or {}
        versions, gpu, git = env.get("versions") or {}, env.get("gpu") or {}, env.get("git") or {}
        rows.append({"Machine": run["machine"] or "?", "Hosts": ", ".join(env.get("hostnames") or [env.get("hostname") or "?"]),
                     "torch": versions.get("torch"), "lightning": versions.get("lightning"),
                     "CUDA / driver": f"{gpu.get('cuda')} / {gpu.get('driver')}" if gpu else "–",
                     "cifarbench git": f"{(git.get('commit') or '?')[:10]}{' (dirty)' if git.get('dirty') else ''}",
                     "Schema": run["schema_version"]})
    table = pd.DataFrame(rows).astype(str)
    return table.value_counts().rename("Runs").reset_index()


def problems(runs: pd.DataFrame) -> list[dict[str, Any]]:
    bad = runs[runs["status"].isin(["diverged", *STOPPED_STATUSES])]
    return [{"run_id": r["run_id"], "status": r["status"], "error": r["error"] or "",
             "step": "" if pd.isna(r["diverged_at_step"]) else int(r["diverged_at_step"]), "path": r["path"]}
            for _, r in bad.iterrows()]


def render_html(collected: Collected, summary: pd.DataFrame, figures: list[EmbeddedFigure], title: str,
                sources: list[str], baseline: Optional[str]) -> str:
    env = jinja2.Environment(loader=jinja2.PackageLoader("cifarbench", "report"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template(TEMPLATE).render(
        title=title, sources=sources, generated_at=now(), version=__version__, warnings=collected.warnings,
        run_count=len(collected.runs), configuration_count=len(summary), variance=variance_statement(summary),
        baseline=summary["baseline"].iloc[0] if baseline else None, summary=display_table(summary),
        text_columns=TEXT_COLUMNS,
        figures=figures, problems=problems(collected.runs), environments=environments(collected.runs))
