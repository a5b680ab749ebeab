"""Reading run configs as the CLI does (jsonargparse, LightningCLI conventions), and explaining its errors
in one line. Used by `cifarbench fit`, by matrices (each run's config) and by `analyze` (a run's config.yaml)."""

from __future__ import annotations

import difflib
import re
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

from .config import ALLOWED, RunConfig
from .errors import CifarbenchError


def config_parser(description: str) -> ArgumentParser:
    """A subcommand that takes the run config: ``-c FILE`` and ``--section.field value`` overrides."""
    # no abbreviations: `--optim.lr 0.1` must be refused as unknown, not taken as --optim.lr_scaling
    parser = ArgumentParser(description=description, exit_on_error=False, allow_abbrev=False)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML config file(s), later ones win")
    parser.add_class_arguments(RunConfig, nested_key=None, as_group=False)
    return parser


def run_config(namespace) -> RunConfig:
    cfg = RunConfig(**{f.name: getattr(namespace, f.name) for f in fields(RunConfig)})
    _plain_values(cfg)
    return cfg


def _plain_values(section: object) -> None:
    """Bounded values as plain int, float and str: the parser can hand back its restricted types (subclasses),
    which YAML cannot write and a weights-only checkpoint load refuses."""
    for f in fields(section):
        value = getattr(section, f.name)
        if is_dataclass(value):
            _plain_values(value)
        elif type(value) not in (bool, int, float, str) and isinstance(value, (int, float, str)):
            setattr(section, f.name, next(t for t in (int, float, str) if isinstance(value, t))(value))


def config_from_dict(values: dict) -> RunConfig:
    """A RunConfig from a nested dict, type-checked as the CLI checks a YAML file."""
    parser = config_parser("a run config")
    try:
        return run_config(parser.instantiate(parser.parse_object(values)))
    except ArgumentError as err:
        raise CifarbenchError(explain_argument_error(str(err), parser)) from None


def config_from_file(path: Path) -> RunConfig:
    return config_from_dict(read_yaml(path, "config"))


def read_yaml(path: str | Path, what: str) -> Any:
    """A YAML file's content; a missing file or a syntax error is one line naming the file (and line)."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise CifarbenchError(f"{what} {str(path)!r}: cannot read it ({err.strerror})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or type(err).__name__
        context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and start and mark and start.line != mark.line:
            problem += f" ({context.removeprefix('while parsing ')} from line {start.line + 1})"
        raise CifarbenchError(f"{what} {where}: not valid YAML: {problem}") from None


def check_config_files(argv: list[str]) -> None:
    """Reads each ``-c``/``--config`` file first, so a file that is missing or not YAML is named with its line
    (jsonargparse would say ``<unicode string>``)."""
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            read_yaml(argv[i + 1], "config")
        elif arg.startswith("--config="):
            read_yaml(arg.split("=", 1)[1], "config")


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
    bounded = re.match(r'Parser key "([^"]+)": .*?Not of type (\w+): (.*?)(?: does not (?:conform|match) .*)?$', message)
    if bounded and bounded.group(2) in ALLOWED:
        key, kind, value = bounded.groups()
        given = re.search(r"Given value: (.+)$", message) or re.search(r"invalid literal for \w+\(\) .*?: '(.+)'", message)
        key = key if "." in key else f"--{key}"  # a subcommand's own argument, not a config field
        return f"{key}={_shown(given.group(1) if given else value)}: {ALLOWED[kind]}"
    typed = re.match(r'Parser key "([^"]+)": Expected a (.+?)\. Got value: (.+)$', message)
    if typed:
        key, expected, value = typed.groups()
        literal = re.match(r"typing\.Literal\[(.*)\]", expected)
        allowed = "one of " + literal.group(1).replace("'", "") if literal else re.sub(r"<class '(\w+)'>", r"\1", expected)
        return f"{key}={value.strip(chr(34))!r}: expected {allowed}"
    return message


def _shown(text: str) -> str:
    """A value as the config checks show it (``repr`` of what YAML makes of it): 0, 0.5, 'a b'."""
    try:
        return repr(yaml.safe_load(text))
    except yaml.YAMLError:
        return repr(text)
