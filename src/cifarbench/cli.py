"""The ``cifarbench`` command: jsonargparse subcommands with LightningCLI's conventions.

``cifarbench fit -c config.yaml --trainer.precision bf16-mixed`` reads YAML then flag overrides;
``--print_config`` (or ``--print-config``) prints the resolved config and exits.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from dataclasses import fields

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from jsonargparse import ActionConfigFile, ArgumentParser
from jsonargparse import ArgumentError

from .config import RunConfig
from .errors import CifarbenchError


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="cifarbench", description=__doc__.splitlines()[0], exit_on_error=False)
    subcommands = parser.add_subcommands(dest="command")
    fit_parser = ArgumentParser(description="Train one configuration and write its run record.", exit_on_error=False)
    fit_parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML config file(s), later ones win")
    fit_parser.add_class_arguments(RunConfig, nested_key=None, as_group=False)
    subcommands.add_subcommand("fit", fit_parser)
    return parser


def run_config(namespace) -> RunConfig:
    return RunConfig(**{f.name: getattr(namespace, f.name) for f in fields(RunConfig)})


def main(argv: list[str] | None = None) -> int:
    argv = ["--print_config" if a == "--print-config" else a for a in (sys.argv[1:] if argv is None else argv)]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        cfg = run_config(parser.instantiate(args).fit)
        from .run import fit  # heavy imports only once the arguments are good

        path, record = fit(cfg)
    except ArgumentError as err:
        return _fail(explain_argument_error(str(err), build_parser()))
    except CifarbenchError as err:
        return _fail(str(err))
    from lightning.fabric.utilities.rank_zero import _get_rank

    if _get_rank() not in (None, 0):  # a DDP worker: rank 0 reports
        return 0
    if record["status"] == "failed":
        print(f"cifarbench: run failed: {record['error']}", file=sys.stderr)
    print(path, flush=True)
    return 1 if record["status"] in ("failed", "diverged") else 0


def explain_argument_error(message: str, parser: ArgumentParser) -> str:
    """jsonargparse's multi-line message as one line: field, value, what is allowed, closest known name."""
    message = " ".join(message.split())
    unknown = re.search(r"(?:does not accept option|unrecognized arguments:) '?-*([\w.\-]+)", message)
    if unknown:
        name = unknown.group(1)
        keys = sorted({key for action in _fit_parser(parser)._actions for key in [action.dest] if "." in key or key == "test"})
        close = difflib.get_close_matches(name, keys, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see `cifarbench fit --help` for the fields"
        return f"{name}: unknown config field; {hint}"
    typed = re.match(r'Parser key "([^"]+)": Expected a (.+?)\. Got value: (.+)$', message)
    if typed:
        key, expected, value = typed.groups()
        literal = re.match(r"typing\.Literal\[(.*)\]", expected)
        allowed = "one of " + literal.group(1).replace("'", "") if literal else re.sub(r"<class '(\w+)'>", r"\1", expected)
        return f"{key}={value.strip(chr(34))!r}: expected {allowed}"
    return message


def _fit_parser(parser: ArgumentParser) -> ArgumentParser:
    return parser._subcommands_action._name_parser_map["fit"]


def _fail(message: str) -> int:
    print(f"cifarbench: error: {message}", file=sys.stderr)
    return 2
