"""Ray Tune search of attack hyperparameters on a shadow-only validation game.

The game: pseudo-targets drawn from the shadows (the run's non-target models) are attacked with the
other shadows; the objective is the chosen metric on their pooled (score, member) pairs. The real
targets are never touched: neither their membership nor their responses (re-queries run on the
shadows only). A setting has two halves: query-set parameters (translation d, rotation r, flips,
noise sigma and copies) that are re-queried through the query engine, and the attack's own settings.

Search algorithm: Optuna's TPE sampler (ray.tune.search.optuna.OptunaSearch), which models which
regions of the space score well and samples there: better than random search for the same trial
budget when a few parameters matter (sigma, d). The attack's default setting (the run's own query
set, default attack settings) is scored the same way and kept as a candidate, so the chosen setting
is never worse than the default on the validation game.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ray import tune

from attacks.compute.requery import requery, with_queries
from attacks.registry import get_attack, resolve_settings, run_attack
from attacks.responses import Responses
from attacks.stats.metrics import auc, threshold_at_fpr, tpr_at_fpr
from attacks.stats.shadow_game import pseudo_targets, shadow_scores
from farm.config import QuerySpec
from farm.data import DatasetInfo
from farm.errors import ConfigError

METRICS = ("auc", "tpr@1%fpr", "tpr@0.1%fpr")
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


def metric_value(metric: str, scores: np.ndarray, member: np.ndarray) -> float:
    if metric == "auc":
        return auc(scores, member)
    fpr = {"tpr@1%fpr": 0.01, "tpr@0.1%fpr": 0.001}.get(metric)
    if fpr is None:
        raise ConfigError(f"--metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    return tpr_at_fpr(scores, member, fpr=fpr).tpr


@dataclass
class Game:
    """The shadow-only validation game of one run (everything a trial needs; no target data)."""

    plan: object  # farm.driver.Plan
    responses: Responses  # the run's responses; the targets' rows are never read
    shadows: np.ndarray  # non-target models
    pseudo: np.ndarray  # shadows playing the target
    seed: int

    def evaluate(self, attack: str, config: dict | None, *, local: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Pooled (scores, member) of the pseudo-targets for one setting (None: the default setting)."""
        from attacks.runner import prepare_statistics

        config = dict(config or {})
        info = self.plan.dataset.info
        specs = search_space(attack, info).queries(config, info) if config else None
        settings = resolve_settings(attack, {k: v for k, v in config.items() if k not in QUERY_KEYS})
        responses = self.responses
        if specs is not None:
            queries, pred = requery(self.plan.run, specs=specs, info=info, x=self.plan.dataset.x,
                                    labels=self.plan.dataset.y, models=self.shadows.tolist(),
                                    n_models=responses.n_models, seed=self.plan.cfg.seed, progress=False,
                                    local=local)
            responses = with_queries(responses, queries, pred)
        responses = prepare_statistics(self.plan, responses, {attack: settings}, scored=self.pseudo.tolist(),
                                       everyone=self.shadows.tolist(), seed=self.seed, progress=False, local=local)

        def fn(resp, *, target, shadows):
            return run_attack(attack, resp, target=target, shadows=shadows, settings=settings)

        # shadow_scores only needs a model outside the shadows to stand for the target it protects
        outsider = next(m for m in range(responses.n_models) if m not in set(self.shadows.tolist()))
        return shadow_scores(fn, responses, target=outsider, shadows=self.shadows, n_pseudo=len(self.pseudo),
                             seed=self.seed)


def _trial(config: dict, *, game: Game, attack: str, metric: str) -> None:
    scores, member = game.evaluate(attack, config)
    tune.report({"score": metric_value(metric, scores, member), "auc": auc(scores, member)})


def make_game(plan, responses: Responses, *, shadows: np.ndarray, n_pseudo: int, seed: int) -> Game:
    return Game(plan, responses, shadows, pseudo_targets(shadows, n_pseudo=n_pseudo, seed=seed), seed)


def run_search(game: Game, *, attack: str, metric: str, num_samples: int, cpus_per_trial: float,
               max_concurrent: int, storage_path: str | None, seed: int, verbose: int = 1):
    """Tune's ResultGrid for `num_samples` Optuna TPE trials of `attack`."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    space = search_space(attack, game.plan.dataset.info).space(game.plan.dataset.info)
    trainable = tune.with_resources(tune.with_parameters(_trial, game=game, attack=attack, metric=metric),
                                    {"cpu": cpus_per_trial})
    searcher = ConcurrencyLimiter(OptunaSearch(seed=seed), max_concurrent=max_concurrent)
    tuner = tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(metric="score", mode="max", search_alg=searcher, num_samples=num_samples),
        run_config=tune.RunConfig(name=f"tune-{attack}", storage_path=storage_path, verbose=verbose),
    )
    return tuner.fit()


def choose(default_score: float, trials: list[dict]) -> dict | None:
    """The best trial's config, or None when no trial beats the default setting."""
    finite = [t for t in trials if t.get("score") is not None and math.isfinite(t["score"])]
    best = max(finite, key=lambda t: t["score"], default=None)
    return None if best is None or best["score"] <= default_score else best


def threshold_for(scores: np.ndarray, member: np.ndarray, fpr: float) -> float:
    return threshold_at_fpr(scores, member, fpr=fpr)


def tune_attack(run_uri: str, *, attack: str, num_samples: int = 16, metric: str = "auc", fpr: float = 0.01,
                n_pseudo: int = 4, seed: int = 0, cpus_per_trial: float = 1.0, max_concurrent: int = 2,
                verbose: int = 1) -> dict:
    """Search `attack`'s settings on the shadow game; writes tune/<attack>/best.json and returns it."""
    from attacks.loader import load_responses
    from attacks.runner import AttackOptions, game
    from farm.driver import ensure_ray, load_plan

    if metric not in METRICS:
        raise ConfigError(f"--metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    if num_samples < 1:
        raise ConfigError(f"--num-samples: expected at least 1, got {num_samples}")
    plan = load_plan(run_uri)
    search_space(attack, plan.dataset.info)
    responses = load_responses(plan.run)
    _, shadows = game(plan, AttackOptions())
    ensure_ray()
    g = make_game(plan, responses, shadows=shadows, n_pseudo=n_pseudo, seed=seed)
    default_scores = g.evaluate(attack, None, local=False)
    default = {"score": metric_value(metric, *default_scores), "auc": auc(*default_scores)}
    storage = plan.run.path("tune/_ray") if plan.run.local else None
    grid = run_search(g, attack=attack, metric=metric, num_samples=num_samples, cpus_per_trial=cpus_per_trial,
                      max_concurrent=max_concurrent, storage_path=storage, seed=seed, verbose=verbose)
    trials = []
    for result in grid:
        row = {"config": result.config, "score": None, "auc": None, "error": None}
        if result.error is not None:
            row["error"] = str(result.error).splitlines()[0][:300]
        elif result.metrics:
            row.update(score=float(result.metrics["score"]), auc=float(result.metrics["auc"]))
        trials.append(row)
    best = choose(default["score"], trials)
    config = None if best is None else best["config"]
    scores, member = (g.evaluate(attack, config, local=False) if config else default_scores)
    info = plan.dataset.info
    specs = search_space(attack, info).queries(config, info) if config else None
    chosen = {
        "source": "default" if config is None else "trial",
        "config": config or {},
        "queries": None if specs is None else [s.as_dict() for s in specs],
        "settings": resolve_settings(attack, {k: v for k, v in (config or {}).items() if k not in QUERY_KEYS}),
        "score": metric_value(metric, scores, member),
        "auc": auc(scores, member),
    }
    out = {
        "attack": attack, "metric": metric, "fpr": fpr, "threshold": threshold_for(scores, member, fpr),
        "search_algorithm": "optuna TPE (ray.tune.search.optuna.OptunaSearch)", "num_samples": num_samples,
        "pseudo_targets": g.pseudo.tolist(), "n_shadows": len(shadows), "seed": seed,
        "default": default, "chosen": chosen, "trials": trials,
        "failed_trials": sum(t["error"] is not None for t in trials),
    }
    from attacks.runner import jsonable

    plan.run.write_json(f"tune/{attack}/best.json", jsonable(out))
    return out
