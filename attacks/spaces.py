"""The pieces of the attacks' `shadowfarm tune` search spaces (`AttackSpec.tune`), free of Ray.

A space is {parameter: distribution}, with distributions `choice`, `loguniform` and `randint` (plain data:
`attacks.tune.trials.tune_space` turns them into Ray Tune's). A setting has two halves: query-set parameters
(QUERY_KEYS: translation d, rotation r, flips, noise sigma and copies) that are re-queried through the query
engine, and the attack's own settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from farm.config import QuerySpec
from farm.errors import ConfigError

if TYPE_CHECKING:
    from farm.data import DatasetInfo

QUERY_KEYS = ("d", "r", "flip", "sigma", "n", "p")


@dataclass(frozen=True)
class Distribution:
    """kind "choice" (args: the list), "loguniform" (low, high) or "randint" (low, high exclusive)."""

    kind: str
    args: tuple


def choice(values: list) -> Distribution:
    return Distribution("choice", (list(values),))


def loguniform(low: float, high: float) -> Distribution:
    return Distribution("loguniform", (low, high))


def randint(low: int, high: int) -> Distribution:
    return Distribution("randint", (low, high))


def scale(info: DatasetInfo) -> float:
    """Noise sigma is searched in units of the data's value range."""
    lo, hi = info.bounds
    return float(hi - lo) if hi > lo else 1.0


def noise_specs(config: dict, info: DatasetInfo) -> list[QuerySpec]:
    """The noise queries of a config: gaussian (continuous features) and bitflip (binary ones)."""
    specs = []
    if info.has_continuous:
        specs.append(QuerySpec("gaussian", (("n", config["n"]), ("sigma", config["sigma"] * scale(info)))))
    if info.has_binary:
        specs.append(QuerySpec("bitflip", (("n", config["n"]), ("p", config["p"]))))
    return specs


def augment_specs(config: dict) -> list[QuerySpec]:
    """The augmentation queries of a config: flip, translate by d, rotate by r (those asked for)."""
    specs = [QuerySpec("flip")] if config.get("flip") else []
    if config.get("d"):
        specs.append(QuerySpec("translate", (("d", config["d"]),)))
    if config.get("r"):
        specs.append(QuerySpec("rotate", (("r", config["r"]),)))
    return specs


def noise_space(info: DatasetInfo) -> dict:
    space = {"n": choice([10, 25, 50, 100])}
    if info.has_continuous:
        space["sigma"] = loguniform(0.02, 1.0)
    if info.has_binary:
        space["p"] = loguniform(0.005, 0.2)
    return space


def augment_space(info: DatasetInfo, *, attack: str) -> dict:
    if info.kind != "image":
        raise ConfigError(f"attack {attack!r} needs image data; {info.name!r} is {info.kind}")
    return {"d": choice([0, 1, 2]), "r": choice([0, 2, 4, 8]), "flip": choice([False, True])}
