"""Reading run configs as the CLI does (jsonargparse, LightningCLI conventions), and explaining its errors
in one line. Used by `cifarbench fit`, by matrices (each run's config) and by `analyze` (a run's config.yaml)."""

from __future__ import annotations

import difflib
import re
from dataclasses import fields
from pathlib import Path

import yaml
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

from .config import RunConfig
from .errors import CifarbenchError


def config_parser(description: str) -> ArgumentParser:
    """A subcommand that takes the run config: ``-c FILE`` and ``--section.field value`` overrides."""
    parser = ArgumentParser(description=description, exit_on_error=False)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML config file(s), later ones win")
    parser.add_class_arguments(RunConfig, nested_key=None, as_group=False)
    return parser


def run_config(namespace) -> RunConfig:
    return RunConfig(**{f.name: getattr(namespace, f.name) for f in fields(RunConfig)})


def config_from_dict(values: dict) -> RunConfig:
    """A RunConfig from a nested dict, type-checked as the CLI checks a YAML file."""
    parser = config_parser("a run config")
    try:
        return run_config(parser.instantiate(parser.parse_object(values)))
    except ArgumentError as err:
        raise CifarbenchError(explain_argument_error(str(err), parser)) from None


def config_from_file(path: Path) -> RunConfig:
    return config_from_dict(yaml.safe_load(Path(path).read_text()))


def explain_argument_error(message: str, parser: ArgumentParser) -> str:
    """jsonargparse's multi-line message as one line: field, value, what is allowed, closest known name
    among ``parser``'s config fields."""
    message = " ".join(message.split())
    unknown = re.search(r"(?:does not accept option|unrecognized arguments:) '?-*([\w.\-]+)", message)
    if unknown:
        name = unknown.group(1)
        keys = sorted({key for action in parser._actions for key in [action.dest] if "." in key or key == "test"})
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
