"""The ``cifarbench`` command: jsonargparse subcommands with LightningCLI's conventions.

``cifarbench fit -c config.yaml --trainer.precision bf16-mixed`` reads YAML then flag overrides;
``--print_config`` (or ``--print-config``) prints the resolved config and exits.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from jsonargparse import ArgumentError, ArgumentParser
from jsonargparse.typing import NonNegativeInt, PositiveInt

from .config import Port
from .config_parser import check_config_files, config_parser, explain_argument_error, run_config
from .errors import CifarbenchError, ConfigError
from .cluster.signals import EXIT_INTERRUPTED, Interrupted, UserInterrupt, hold_requeue_signal

if TYPE_CHECKING:
    from .cluster.matrix import Matrix

SUBMIT_OVERRIDES = ("partition", "account", "qos", "time", "cpus_per_task", "signal_seconds")  # over the matrix's slurm:

def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="cifarbench", description=__doc__.splitlines()[0], exit_on_error=False,
                            allow_abbrev=False)
    subcommands = parser.add_subcommands(dest="command")
    for name, (build, _) in SUBCOMMANDS.items():
        subcommands.add_subcommand(name, sub := build())
        if name == "matrix":  # jsonargparse adds a parser's own subcommands only once it is attached
            add_matrix_actions(sub)
    return parser


def sub_parser(description: str) -> ArgumentParser:
    return ArgumentParser(description=description, exit_on_error=False)


def profile_data_parser() -> ArgumentParser:
    profile = config_parser("Measure loader, model and training rates of the config's data path: is it data-bound?")
    profile.add_argument("--steps", type=PositiveInt, default=30, help="timed batches per measurement")
    profile.add_argument("--warmup", type=NonNegativeInt, default=5, help="batches before the clock starts")
    profile.add_argument("--sweep_workers", type=Optional[list[NonNegativeInt]], default=None, help="e.g. [0,1,2]")
    profile.add_argument("--sweep_batch_sizes", type=Optional[list[PositiveInt]], default=None, help="e.g. [128,256]")
    return profile


def add_matrix_actions(matrix: ArgumentParser) -> None:
    expand = sub_parser("List a matrix's runs with their ids and whether each can run here.")
    expand.add_argument("file", type=str)
    matrix.add_subcommands(dest="action").add_subcommand("expand", expand)


def run_parser() -> ArgumentParser:
    run = sub_parser("Run a matrix here, one run after another; resumes where it stopped.")
    run.add_argument("file", type=str)
    run.add_argument("--output_dir", type=str, default="results", help="runs go to <output_dir>/<matrix name>/")
    return run


def submit_parser() -> ArgumentParser:
    submit = sub_parser("Render one sbatch script per matrix run and submit them to Slurm.")
    submit.add_argument("file", type=str)
    submit.add_argument("--output_dir", type=str, default="results")
    submit.add_argument("--dry_run", type=bool, default=False, help="print the scripts, submit nothing")
    for key in SUBMIT_OVERRIDES:  # #SBATCH values: checked as plain tokens (and times) when rendered, before sbatch
        kind = Optional[PositiveInt] if key in ("cpus_per_task", "signal_seconds") else Optional[str]
        submit.add_argument(f"--{key}", type=kind, default=None, help="overrides the matrix's slurm section")
    submit.add_argument("--setup", type=Optional[list[str]], default=None,
                        help="shell lines run before srun (module load, conda activate), in place of slurm.setup")
    submit.add_argument("--python", type=Optional[str], default=None,
                        help="the interpreter the jobs run cifarbench with (default: this one)")
    return submit


def jobs_parser(description: str):
    def build() -> ArgumentParser:
        jobs = sub_parser(description)
        jobs.add_argument("file", type=str)
        jobs.add_argument("--output_dir", type=str, default="results")
        return jobs
    return build


def analyze_parser() -> ArgumentParser:
    analyze = sub_parser("Evaluate a finished run's checkpoint on its test split: misclassified gallery, GradCAM "
                         "overlays, confusion matrix (PNGs in <run dir>/analysis/).")
    analyze.add_argument("run_dir", type=str)
    analyze.add_argument("--target_layer", type=str, default="net.layer3", help="GradCAM layer (a module name)")
    analyze.add_argument("--gallery_size", type=PositiveInt, default=20, help="most confident mistakes shown")
    analyze.add_argument("--checkpoint", type=Optional[str], default=None, help="default: checkpoints/last.ckpt")
    return analyze


def report_parser() -> ArgumentParser:
    report = sub_parser("Compare the runs under one or more results directories: terminal table, CSV/Markdown and "
                        "one self-contained HTML report (its path is the last line).")
    report.add_argument("results", type=str, nargs="+", help="results directories (or record.json files)")
    report.add_argument("--output", type=Optional[str], default=None, help="default: <first results dir>/report")
    report.add_argument("--baseline", type=Optional[str], default=None,
                        help="a run id or configuration label: the others are shown as speed-ups against it")
    report.add_argument("--wandb", type=Literal["auto", "offline", "online", "disabled"], default="auto",
                        help="auto: a W&B run of job type report, in the mode the runs used, if they used W&B")
    return report


def compare_parser() -> ArgumentParser:
    compare = sub_parser("Is NEW faster or slower than BASE, configuration by configuration, beyond run-to-run "
                         "noise? (compare.md, compare.json, compare.png; the last line is compare.md)")
    compare.add_argument("base", type=str, help="results directory (or record.json) of the baseline")
    compare.add_argument("new", type=str, help="results directory (or record.json) of the runs to judge")
    compare.add_argument("--metric", type=Literal["images_per_sec", "time_to_target"], default="images_per_sec")
    compare.add_argument("--fail-if-slower", "--fail_if_slower", type=Optional[float], default=None,
                         help="exit 1 when a configuration's interval lies wholly below 1 - this (0.05: 5%% slower)")
    compare.add_argument("--output", type=Optional[str], default=None, help="default: <NEW>/compare")
    return compare


def tensorboard_parser() -> ArgumentParser:
    board = sub_parser("Serve a run's profiler traces with TensorBoard on 127.0.0.1.")
    board.add_argument("run_dir", type=str)
    board.add_argument("--port", type=Port, default=6006)
    return board


def fit_command(args) -> tuple[Optional[str], int]:
    from lightning.pytorch.utilities import rank_zero_only

    from .train.run import fit

    path, record = fit(run_config(args))
    if rank_zero_only.rank != 0:  # a DDP worker (Lightning's rank from the launcher's variables): rank 0 reports
        return None, 0
    if record["status"] == "interrupted":
        print(f"cifarbench: {record['error']}; record: {path}", file=sys.stderr, flush=True)
        return None, EXIT_INTERRUPTED
    if record["status"] == "failed":
        print(f"cifarbench: run failed: {record['error']}", file=sys.stderr)
    return str(path), 1 if record["status"] in ("failed", "diverged") else 0


def prepare_ffcv_command(args) -> tuple[Optional[str], int]:
    from .checks import check_config
    from .data.ffcv_path import write_betons

    cfg = run_config(args)
    check_config(cfg)
    return str(write_betons(cfg.data, workers=max(cfg.data.num_workers, 1))), 0


def profile_data_command(args) -> tuple[Optional[str], int]:
    from .tools.profile_data import profile_data

    path, _ = profile_data(run_config(args), args.steps, args.warmup, args.sweep_workers, args.sweep_batch_sizes)
    return str(path), 0


def lr_find_command(args) -> tuple[Optional[str], int]:
    from .checks import check_config
    from .cluster.requeue import resolve_run_id
    from .tools.lr_find import lr_find

    cfg = run_config(args)
    check_config(cfg)
    out = Path(cfg.output.dir).expanduser() / resolve_run_id(cfg) / "lr_find"
    result = lr_find(cfg, out)
    print(f"suggested optim.max_lr: {result['suggestion']:.4g} ({result['points']} points, plot: {out / 'lr_find.png'})")
    return str(out / "lr_find.yaml"), 0


def matrix_command(args) -> tuple[Optional[str], int]:
    from rich.console import Console

    from .cluster.matrix import load_matrix, validate_runs
    from .cluster.runner import expansion_table

    matrix = load_matrix(args.expand.file)
    validate_runs(matrix)
    Console(width=160).print(expansion_table(matrix))
    return None, 0 if any(r.error is None for r in matrix.runs) else 1


def run_command(args) -> tuple[Optional[str], int]:
    from .cluster.matrix import load_matrix
    from .cluster.runner import run_matrix
    from .record import RESULT_STATUSES

    check_output_dir(args.output_dir)
    matrix = load_matrix(args.file, results_root=args.output_dir)
    results = Path(args.output_dir) / matrix.name
    statuses = run_matrix(matrix, results)
    return str(results), 0 if all(s in RESULT_STATUSES for s in statuses.values()) else 1


def analyze_command(args) -> tuple[Optional[str], int]:
    if importlib.util.find_spec("pytorch_grad_cam") is None:
        raise CifarbenchError("analyze: needs grad-cam and torchvision, built for your torch (pip install "
                              "cifarbench[analyze])")
    from .tools.analyze import analyze

    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    result = analyze(Path(args.run_dir), args.target_layer, args.gallery_size, checkpoint)
    print(f"test accuracy {result['test_accuracy']:.4f}; {result['misclassified_total']} misclassified")
    return str(Path(args.run_dir) / "analysis"), 0


def report_command(args) -> tuple[Optional[str], int]:
    from .report import build_report

    return str(build_report(args.results, args.output and Path(args.output), args.baseline, args.wandb)), 0


def tensorboard_command(args) -> tuple[Optional[str], int]:
    from .tensorboard import serve

    return None, serve(Path(args.run_dir), args.port)


def main(argv: list[str] | None = None) -> int:
    hold_requeue_signal()  # the `cifarbench` console script's first chance (python -m cifarbench holds it earlier)
    UserInterrupt.watch()
    aliases = {"--print-config": ["--print_config"], "--lr-find": ["--lr_find.enabled", "true"]}
    argv = [b for a in (sys.argv[1:] if argv is None else argv) for b in aliases.get(a, [a])]
    parser = build_parser()
    try:
        check_config_files(argv)
        args = parser.instantiate(parser.parse_args(argv))
        last_line, code = SUBCOMMANDS[args.command][1](args[args.command])
    except ArgumentError as err:
        return _fail(explain_argument_error(str(err), config_parser("")))
    except CifarbenchError as err:
        return _fail(str(err))
    except (KeyboardInterrupt, SystemExit) as err:  # Ctrl-C (inside Lightning it ends as SystemExit(1))
        if isinstance(err, SystemExit) and not UserInterrupt.seen:
            raise
        print(f"cifarbench: interrupted{f': {err}' if isinstance(err, Interrupted) else ''}", file=sys.stderr,
              flush=True)
        return EXIT_INTERRUPTED
    if last_line is not None:
        print(last_line, flush=True)
    return code


def compare_command(args) -> tuple[Optional[str], int]:
    """Prints the comparison; exit 1 (one line per regression on stderr) when --fail-if-slower finds one."""
    from rich.console import Console
    from rich.markdown import Markdown

    from .report.compare import compare

    result, path, failed = compare([args.base], [args.new], args.metric, args.fail_if_slower,
                                   args.output and Path(args.output))
    Console(width=None if sys.stdout.isatty() else 200).print(Markdown(path.read_text()))
    for row in failed:
        print(f"cifarbench: slower: {row['configuration']} ({row['gpus']} GPU): speed-up {row['speedup']:.3f}x, "
              f"{int(result['confidence'] * 100)}% interval [{row['ci_low']:.3f}, {row['ci_high']:.3f}] lies below "
              f"1 - {args.fail_if_slower}", file=sys.stderr)
    return str(path), 1 if failed else 0


def matrix_results(args) -> tuple["Matrix", Path]:
    """The matrix file of ``args`` and its results directory, absolute (the jobs cd into it)."""
    from .cluster.matrix import load_matrix

    root = Path(args.output_dir).resolve()
    matrix = load_matrix(args.file, results_root=root)
    return matrix, root / matrix.name


def submit_command(args) -> tuple[Optional[str], int]:
    from .cluster import sbatch
    from .cluster.matrix import validate_runs

    check_output_dir(args.output_dir)
    matrix, results = matrix_results(args)
    if args.python is not None and not args.python.strip():
        raise ConfigError("--python", args.python, "the path or name of a Python interpreter, e.g. python3")
    sbatch.setup_lines(args.setup if args.setup is not None else matrix.slurm.get("setup") or [])  # before any file
    validate_runs(matrix, on_this_machine=False)
    for run in matrix.runs:
        if run.error:
            print(f"skipped {run.run_id}: {run.error}", file=sys.stderr)
    overrides = {k: getattr(args, k) for k in (*SUBMIT_OVERRIDES, "setup") if getattr(args, k) is not None}
    scripts = sbatch.write_scripts(matrix, results, overrides, python=args.python or sys.executable)
    if args.dry_run:
        for path in scripts.values():
            print(f"# ---- {path}\n{path.read_text()}")
        return None, 0
    for run_id, job in sbatch.submit(scripts, results).items():
        print(f"{run_id}: job {job}")
    return str(results), 0


def status_command(args) -> tuple[Optional[str], int]:
    from rich.console import Console
    from rich.table import Table

    from .cluster import sbatch
    from .cluster.runner import status_line

    matrix, results = matrix_results(args)
    jobs = sbatch.load_jobs(results)
    states = sbatch.job_states(list(jobs.values()))
    for run_id in sbatch.mark_ended_jobs(results, jobs, states):
        print(f"{run_id}: its job ended before the run finished its record: marked failed", file=sys.stderr)
    table = Table(title=f"matrix {matrix.name}")
    for column in ("run id", "job", "slurm state", "record"):
        table.add_column(column)
    for run in matrix.runs:
        job = jobs.get(run.run_id)
        table.add_row(run.run_id, job or "-", states.get(job, "-") if job else "-", status_line(results, run.run_id))
    Console(width=160).print(table)
    return None, 0


def cancel_command(args) -> tuple[Optional[str], int]:
    from .cluster import sbatch

    _, results = matrix_results(args)
    jobs = sbatch.load_jobs(results)
    sbatch.cancel(list(jobs.values()))
    return f"cancelled {len(jobs)} jobs", 0


def check_output_dir(output_dir: str) -> None:
    from .record import writable

    if not writable(Path(output_dir).expanduser()):
        raise ConfigError("--output_dir", output_dir, "is not a writable directory (nor inside one)")


def _fail(message: str) -> int:
    print(f"cifarbench: error: {message}", file=sys.stderr)
    return 2


# name -> (its parser, what it runs: args -> (the line to print last, exit code))
SUBCOMMANDS = {
    "fit": (lambda: config_parser("Train one configuration and write its run record."), fit_command),
    "prepare-ffcv": (lambda: config_parser("Write the config's data set as FFCV .beton files into data.ffcv.dir."),
                     prepare_ffcv_command),
    "profile-data": (profile_data_parser, profile_data_command),
    "matrix": (lambda: sub_parser("Benchmark matrices."), matrix_command),
    "run": (run_parser, run_command),
    "submit": (submit_parser, submit_command),
    "status": (jobs_parser("Each run's Slurm state and record status."), status_command),
    "cancel": (jobs_parser("Cancel the matrix's jobs."), cancel_command),
    "lr-find": (lambda: config_parser("LR range test on a throw-away copy of the config's model: plot, and a "
                                      "suggestion for optim.max_lr (last line: lr_find.yaml, for `fit -c`)."),
                lr_find_command),
    "analyze": (analyze_parser, analyze_command),
    "report": (report_parser, report_command),
    "compare": (compare_parser, compare_command),
    "tensorboard": (tensorboard_parser, tensorboard_command),
}
