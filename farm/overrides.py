"""Text to plain data for configs: YAML files and `--set a.b=value` overrides.

Knows nothing of the config's types: `farm.config` turns the plain data into typed, validated dataclasses.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path

import yaml

from farm.errors import ConfigError


def parse_override(text: str, *, flag: str = "--set", example: str = "train.epochs=5") -> tuple[list[str], object]:
    """``"train.epochs=5"`` -> (["train", "epochs"], 5); the value is parsed as YAML.

    `flag` and `example` name the command-line option in the error (e.g. ``--setting``, ``calibrated.variant=offline``).
    """
    if "=" not in text:
        raise ConfigError(f"{flag} {text!r}: expected KEY=VALUE, e.g. {example}")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(k.strip() for k in keys):
        raise ConfigError(f"{flag} {text!r}: expected KEY=VALUE with a dotted KEY, e.g. {example}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return [k.strip() for k in keys], value


def apply_overrides(data: dict, overrides: typing.Iterable[str]) -> dict:
    """Set dotted keys in a nested dict (copying), creating sections as needed."""
    data = json.loads(json.dumps(data))
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {k!r} is not a section")
        node[keys[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {str(path)!r}: invalid YAML{at}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping at the top level")
    return data or {}
