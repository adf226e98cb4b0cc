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
        value = load_yaml(raw) if raw.strip() else None
    except yaml.constructor.ConstructorError as exc:
        raise ConfigError(f"{flag} {text!r}: {exc.problem}") from None
    except yaml.YAMLError:
        value = raw
    _count_values(value, f"{flag} {key.strip()}")
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


MAX_VALUES = 1_000_000  # values a config may expand to (YAML anchors repeat a value without copying it)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            if isinstance(key, typing.Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str):
    """YAML text -> plain data, with `_Loader` (duplicate keys are errors)."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: plain data only


def _count_values(data, where: str) -> int:
    """How many values `data` stands for once every anchor is expanded (each shared node counted once per use,
    computed once); ConfigError past MAX_VALUES or for a node that contains itself."""
    sizes: dict[int, int] = {}

    def size(node, path: set[int]) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        if id(node) in path:
            raise ConfigError(f"{where}: a value that contains itself (a recursive YAML anchor)")
        if id(node) not in sizes:
            children = node.values() if isinstance(node, dict) else node
            sizes[id(node)] = 1 + sum(size(child, path | {id(node)}) for child in children)
        return sizes[id(node)]

    total = size(data, set())
    if total > MAX_VALUES:
        raise ConfigError(f"{where}: expands to {total:,} values (YAML anchors repeated?); a config holds at most "
                          f"{MAX_VALUES:,}")
    return total


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    where = f"config file {str(path)!r}"
    if not path.is_file():
        raise ConfigError(f"{where} not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                          "save it as UTF-8") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or ""
        what = problem if problem.startswith("duplicate key") else "invalid YAML"
        raise ConfigError(f"{where}: {what}{at}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    _count_values(data, where)
    return data or {}
