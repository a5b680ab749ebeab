"""`cifarbench report` on real CPU runs, opened in a real headless Chromium."""

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from cifarbench.record import read_record
from conftest import CLI, REPO, last_line, run_cli

SCREENSHOT_DIR = REPO / "test-output"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """The tiny CPU matrix with three seeds (9 runs, DDP included), plus a run that cannot reach its target,
    one that diverges and one killed by SIGTERM mid-training."""
    root = tmp_path_factory.mktemp("report-results")
    spec = yaml.safe_load((REPO / "bench/matrices/tiny-cpu.yaml").read_text())
    spec["base"] = str(REPO / "bench/configs/smoke.yaml")
    spec["axes"]["trainer.seed"] = [1, 2, 3]
    matrix = root / "tiny-cpu.yaml"
    matrix.write_text(yaml.safe_dump(spec))
    assert run_cli("run", str(matrix), "--output_dir", str(root), timeout=600).returncode == 0
    config = root / "tiny-cpu/configs/tiny-cpu-pathdevice-devices1-seed1.yaml"
    extra = ["fit", "-c", str(config), "--trainer.strategy", "auto", "--output.dir", str(root / "extra")]
    hard = run_cli(*extra, "--output.run_id", "hard-target", "--measure.target_accuracy", "0.99", timeout=300)
    assert read_record(Path(last_line(hard)))["status"] == "not-reached"
    bad = run_cli(*extra, "--output.run_id", "diverges", "--optim.optimizer", "sgd", "--optim.max_lr", "1e12",
                  "--optim.div_factor", "1", "--optim.pct_start", "0.01", timeout=300)
    assert read_record(Path(last_line(bad)))["status"] == "diverged"
    killed = subprocess.Popen([CLI, *extra, "--output.run_id", "killed", "--trainer.epochs", "200"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    metrics = root / "extra/killed/logs/metrics.csv"  # written at the end of the first epoch: training is on
    deadline = time.monotonic() + 120
    while not metrics.exists():
        assert time.monotonic() < deadline and killed.poll() is None
        time.sleep(0.5)
    killed.send_signal(signal.SIGTERM)
    killed.wait(timeout=60)
    assert read_record(root / "extra/killed/record.json")["status"] == "failed"
    return root


def test_report_of_real_runs_loads_in_chromium_with_every_plot(results, tmp_path):
    assert CHROMIUM, "headless Chromium is needed (make test installs it with apt)"
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report"
    result = run_cli("report", str(results), "--output", str(out), "--baseline", "path=albumentations", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    html = Path(last_line(result))
    assert html == out / "report.html" and (out / "summary.csv").exists() and (out / "runs.csv").exists()
    assert "Speed-up, time to target" in (out / "summary.md").read_text()
    assert "Configuration" in result.stdout and "path=albumentations" in result.stdout  # the terminal table

    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]}"))
        page.goto(html.as_uri(), wait_until="load")
        figures = page.eval_on_selector_all(
            "figure.plot", "els => els.map(f => [f.id, f.querySelector('img').complete, f.querySelector('img').naturalWidth])")
        summary_rows = page.eval_on_selector_all("#summary tr", "rows => rows.map(r => r.innerText)")
        problem_rows = page.inner_text("#problems")
        environments = page.inner_text("#environments")
        body = page.inner_text("body")
        SCREENSHOT_DIR.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / "report.png"), full_page=True)
        shutil.copy(SCREENSHOT_DIR / "report.png", tmp_path / "report.png")
        browser.close()

    assert problems == []
    assert [f[0] for f in figures] == ["throughput-scaling", "time-to-target", "accuracy-vs-time", "pareto", "data-wait"]
    assert all(complete and width > 500 for _, complete, width in figures), figures
    # header + 3 matrix configurations (albumentations 1 GPU, device 1 and 2 GPUs) + hard target + diverge + killed
    assert len(summary_rows) == 1 + 6
    device_two = next(r for r in summary_rows if r.startswith("path=device") and "\t2\t" in r and "0.99" not in r)
    assert "\t3\t" in device_two  # three seeds in one row
    assert "not reached" in "\n".join(summary_rows)
    assert "diverges" in problem_rows and "diverged" in problem_rows
    assert "killed" in problem_rows and "SIGTERM" in problem_rows
    assert "AMD" in environments or "Intel" in environments or "cores" in environments
    assert "trimmed mean" in body and "interquartile range" in body
    assert (SCREENSHOT_DIR / "report.png").stat().st_size > 50_000


def test_report_pushes_its_tables_to_an_offline_wandb_run(results, tmp_path):
    result = run_cli("report", str(results / "tiny-cpu"), "--output", str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    inspected = subprocess.run([str(Path(CLI).parent / "wandb"), "leet", "inspect", "--json", str(runs[0])],
                               capture_output=True, text=True, timeout=120).stdout
    assert '"job_type":"report"' in inspected and inspected.count('"type":"run_table"') == 2  # summary and runs
    assert "path=device/2gpu/scaling_efficiency" in inspected  # the grouped summary


def test_every_report_figure_shows_its_title_labels_and_legend_in_full(results):
    """Every title, axis (its label and tick labels), annotation and legend lies inside its figure as the report
    embeds it: nothing is cut off at an edge."""
    from cifarbench.report import report_figures
    from cifarbench.report.aggregate import summarise
    from cifarbench.report.collect import collect

    collected = collect([results])
    for fig in report_figures(collected, summarise(collected.runs, "path=albumentations")):
        fig.set_dpi(110)  # as embedded
        fig.canvas.draw()
        renderer, box = fig.canvas.get_renderer(), fig.bbox
        for ax in fig.axes:
            legend = [ax.get_legend()] if ax.get_legend() else []
            for artist in [*fig.texts, ax.xaxis, ax.yaxis, *ax.texts, *legend]:
                extent = artist.get_tightbbox(renderer)
                assert extent is None or (box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1
                                          and box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1), \
                    (fig.get_suptitle(), artist, extent.extents, box.extents)


def test_report_refuses_a_directory_without_records(tmp_path):
    result = run_cli("report", str(tmp_path), timeout=120)
    assert result.returncode == 2 and "no run records (record.json) under" in result.stdout
