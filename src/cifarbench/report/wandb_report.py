"""The report's tables and a grouped summary in one W&B run of job type ``report`` (offline: a local run
directory like any other, for ``wandb sync``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from .aggregate import missing


def wandb_mode(runs: pd.DataFrame, requested: str) -> Optional[str]:
    """``auto``: the mode the runs were logged in (online wins over offline), None when none used W&B."""
    if requested != "auto":
        return None if requested == "disabled" else requested
    modes = {cfg.get("output.wandb") for cfg in runs["config"]}
    return "online" if "online" in modes else "offline" if "offline" in modes else None


def push_report(summary: pd.DataFrame, runs: pd.DataFrame, html_path: Path, out_dir: Path, mode: str,
                project: str = "cifarbench") -> str:
    """Logs the summary and per-run tables, the HTML report and per-configuration summary values; returns
    the W&B run's local directory."""
    import wandb

    run = wandb.init(project=project, job_type="report", mode=mode, dir=str(out_dir), name=f"report-{html_path.parent.name}",
                     config={"runs": len(runs), "configurations": len(summary)}, settings=wandb.Settings(silent=True))
    try:
        numbers = summary.drop(columns=["configuration", "scaling_group", "seeds"]).astype(object)
        run.log({"summary": wandb.Table(dataframe=numbers.where(numbers.notna(), None)),
                 "runs": wandb.Table(dataframe=_run_table(runs)),
                 "report": wandb.Html(html_path.read_text())})
        for _, row in summary.iterrows():
            group = f"{row['label']}/{row['gpus']}gpu"
            for name in ("images_per_sec", "ttt_median", "best_val_acc", "data_stall", "scaling_efficiency"):
                if not missing(row[name]):
                    run.summary[f"{group}/{name}"] = row[name]
        return str(Path(run.dir).parent)
    finally:
        run.finish()


def _run_table(runs: pd.DataFrame) -> pd.DataFrame:
    columns = ["run_id", "label", "gpus", "seed", "status", "images_per_sec", "time_to_target", "best_val_acc",
               "data_stall", "mfu", "machine"]
    table = runs[columns].astype(object)
    return table.where(table.notna(), None)
