"""The search spaces of `shadowfarm tune` (`attacks.tune`): per attack, the Tune param space and the query set a
setting asks for. A setting has two halves: query-set parameters (QUERY_KEYS: translation d, rotation r, flips,
noise sigma and copies) that are re-queried through the query engine, and the attack's own settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ray import tune

from attacks.registry import get_attack
from farm.config import QuerySpec
from farm.data import DatasetInfo
from farm.errors import ConfigError

QUERY_KEYS = ("d", "r", "flip", "sigma", "n", "p")


def _noise_specs(config: dict, info: DatasetInfo) -> list[QuerySpec]:
    specs = []
    if info.has_continuous:
        specs.append(QuerySpec("gaussian", (("n", config["n"]), ("sigma", config["sigma"] * _scale(info)))))
    if info.has_binary:
        specs.append(QuerySpec("bitflip", (("n", config["n"]), ("p", config["p"]))))
    return specs


def _augment_specs(config: dict) -> list[QuerySpec]:
    specs = [QuerySpec("flip")] if config.get("flip") else []
    if config.get("d"):
        specs.append(QuerySpec("translate", (("d", config["d"]),)))
    if config.get("r"):
        specs.append(QuerySpec("rotate", (("r", config["r"]),)))
    return specs


def _scale(info: DatasetInfo) -> float:
    """Noise sigma is searched in units of the data's value range."""
    lo, hi = info.bounds
    return float(hi - lo) if hi > lo else 1.0


@dataclass(frozen=True)
class SearchSpace:
    """space(info) -> Tune param space; queries(config, info) -> query specs or None (the run's own)."""

    space: Callable[[DatasetInfo], dict]
    queries: Callable[[dict, DatasetInfo], list[QuerySpec] | None]


def _noise_space(info: DatasetInfo) -> dict:
    space = {"n": tune.choice([10, 25, 50, 100])}
    if info.has_continuous:
        space["sigma"] = tune.loguniform(0.02, 1.0)
    if info.has_binary:
        space["p"] = tune.loguniform(0.005, 0.2)
    return space


def _augment_space(info: DatasetInfo) -> dict:
    if info.kind != "image":
        raise ConfigError(f"attack 'augmentation' needs image data; {info.name!r} is {info.kind}")
    return {"d": tune.choice([0, 1, 2]), "r": tune.choice([0, 2, 4, 8]), "flip": tune.choice([False, True])}


SPACES: dict[str, SearchSpace] = {
    "augmentation": SearchSpace(
        lambda info: {**_augment_space(info), "variant": tune.choice(["classifier", "count"]),
                      "c": tune.loguniform(0.01, 10.0)},
        # nothing selected would leave no augmentation at all: fall back to one-pixel shifts
        lambda c, info: [QuerySpec("clean")] + (_augment_specs(c) or [QuerySpec("translate", (("d", 1),))])),
    "noise": SearchSpace(
        lambda info: {**_noise_space(info), "variant": tune.choice(["threshold", "classifier"])},
        lambda c, info: [QuerySpec("clean")] + _noise_specs(c, info)),
    "calibrated": SearchSpace(
        lambda info: {**_noise_space(info), **({"d": tune.choice([0, 1])} if info.kind == "image" else {}),
                      "variant": tune.choice(["online", "offline"]),
                      "global_variance": tune.choice([True, False])},
        lambda c, info: [QuerySpec("clean")] + _noise_specs(c, info) + _augment_specs(c)),
    "boundary": SearchSpace(
        lambda info: {"max_iter": tune.randint(2, 13), "init_evals": tune.choice([25, 50, 100]),
                      "max_evals": tune.choice([100, 300, 1000])},
        lambda c, info: None),
    "transfer": SearchSpace(lambda info: {"n_models": tune.choice([2, 4, 8])}, lambda c, info: None),
    "confidence_classifier": SearchSpace(
        lambda info: {"max_iter": tune.choice([50, 100, 200, 400])}, lambda c, info: None),
    "lira_confidence": SearchSpace(
        lambda info: {"variant": tune.choice(["online", "offline"]),
                      "global_variance": tune.choice([True, False])}, lambda c, info: None),
}


def search_space(attack: str, info: DatasetInfo) -> SearchSpace:
    get_attack(attack)
    if attack not in SPACES:
        raise ConfigError(f"attack {attack!r} has nothing to tune (tunable: {', '.join(sorted(SPACES))})")
    return SPACES[attack]
