"""Ray Tune search of attack hyperparameters on a shadow-only validation game.

The game: pseudo-targets drawn from the shadows (the run's non-target models) are attacked with the
other shadows; the objective is the chosen metric on their pooled (score, member) pairs. The real
targets are never touched: neither their membership nor their responses (re-queries run on the
shadows only). The pseudo-targets are split in two: the selection half chooses the setting, in a game
whose shadows leave out the held-out half (so, like the real target, they take no part in the choice);
the held-out half, each attacked with all the other shadows as the target is, scores the chosen and the
default setting, and those are the figures to expect on the target (the selection score is optimistic).
The threshold for --fpr is chosen on all pseudo-targets, each attacked with all the other shadows (the
attack stage's own shadow game). best.json records the targets and shadows it was tuned on: `--tuned`
refuses it for a target that was among them (`attacks.tune.tuned`). A setting has two halves: query-set
parameters (translation d, rotation r, flips, noise sigma and copies) that are re-queried through the
query engine, and the attack's own settings.

Search algorithm: Optuna's TPE sampler (ray.tune.search.optuna.OptunaSearch), which models which
regions of the space score well and samples there: better than random search for the same trial
budget when a few parameters matter (sigma, d). The attack's default setting (the run's own query
set, default attack settings) is scored the same way and kept as a candidate, so the chosen setting
is never worse than the default on the validation game.

Speed (issue 18, `jobs.bench.tune`): the game (responses, data) goes to the object store once and every trial
reads it from there; trial processes are reused (reuse_actors); as many trials run at once as the cluster's CPUs
hold; a trial's re-query perturbs each query once for all its shadows (`requery(local=True)`), and a
query set already answered (the chosen trial's, re-scored on the full game) is read from the run's requery
cache. What is left of a trial is the shadows' forward passes (`python -m jobs.bench.tune --profile`). No ASHA:
a trial has one result (the metric of its pooled scores; partial shadow sets would be another statistic), so
there is nothing to stop early on. TPE learns results in proposal order (`run_search`): same seed, same trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ray import tune

from attacks.artifacts import TUNE_RAY_DIR, jsonable, tune_best
from attacks.compute.requery import requery_responses
from attacks.compute.statistics import prepare_statistics
from attacks.loader import load_responses
from attacks.modes import split_targets
from attacks.registry import ATTACKS, attack_with, get_attack, register
from attacks.responses import Responses
from attacks.settings import resolve
from attacks.spaces import QUERY_KEYS
from attacks.spec import AttackSpec, SearchSpace
from attacks.stats.lira import collect_fallbacks
from attacks.stats.metrics import DEFAULT_FPRS, auc, threshold_at_fpr, tpr_at_fpr, tpr_metric_name
from attacks.stats.shadow_game import pseudo_targets
from attacks.tune.search import InOrder, concurrent_trials
from farm.cluster import ensure_ray
from farm.content import write_recorded
from farm.data import DatasetInfo
from farm.errors import ConfigError
from farm.plan import Plan, load_plan
from farm.storage import json_bytes

TPR_METRICS = {tpr_metric_name(fpr): fpr for fpr in reversed(DEFAULT_FPRS)}  # "tpr@1%fpr": 0.01, ...
METRICS = ("auc", *TPR_METRICS)


def metric_value(metric: str, scores: np.ndarray, member: np.ndarray) -> float:
    """The objective `metric` (one of METRICS) of pooled (scores, member)."""
    if metric == "auc":
        return auc(scores, member)
    if metric not in TPR_METRICS:
        raise ConfigError(f"--metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    return tpr_at_fpr(scores, member, fpr=TPR_METRICS[metric]).tpr


def attack_settings(config: dict | None) -> dict:
    """The attack's own settings of a Tune config (without its query-set parameters)."""
    return {k: v for k, v in (config or {}).items() if k not in QUERY_KEYS}


@dataclass
class Game:
    """The shadow-only validation game of one run (everything a trial needs; no target data)."""

    plan: Plan
    responses: Responses  # the run's responses; the targets' rows are never read
    shadows: np.ndarray  # non-target models
    pseudo: np.ndarray  # shadows playing the target
    seed: int
    target_shadows: int  # the real target's shadow count: "auto" global variance is decided from it

    def settings(self, attack: str, config: dict | None) -> dict:
        settings, _ = resolve([attack], explicit={attack: attack_settings(config)}, n_shadows=self.target_shadows)
        return settings[attack]

    def evaluate(self, attack: str, config: dict | None, *, local: bool = True,
                 requery_local: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pooled (scores, member) of the pseudo-targets for one setting (None: the default setting).

        local: statistics and re-queries in this process (a trial), else as Ray tasks; requery_local (None: as
        local) for the re-queries alone."""
        config = dict(config or {})
        info = self.plan.dataset.info
        specs = search_space(attack, info).queries(config, info) if config else None
        settings = self.settings(attack, config)
        requery_local = local if requery_local is None else requery_local
        responses = self.responses if specs is None else requery_responses(
            self.plan, self.responses, specs, models=self.shadows.tolist(),
            local=requery_local)  # the shadows' answers only: the targets are never queried
        responses = prepare_statistics(self.plan, responses, {attack: settings}, scored=self.pseudo.tolist(),
                                       everyone=self.shadows.tolist(), seed=self.seed, progress=False, local=local)
        attack_fn = attack_with(attack, settings)  # each pseudo-target attacked with the game's other shadows
        with collect_fallbacks():  # a trial's calibration fallbacks: the attack stage reports the chosen setting's
            scores = [attack_fn(responses, target=int(p), shadows=self.shadows[self.shadows != p])
                      for p in self.pseudo]
        return (np.concatenate(scores).astype(np.float64),
                np.concatenate([responses.member[p] for p in self.pseudo]).astype(bool))


def search_space(attack: str, info: DatasetInfo) -> SearchSpace:
    """The attack's search space (`AttackSpec.tune`); ConfigError when it has none."""
    space = get_attack(attack).tune
    if space is None:
        tunable = ", ".join(sorted(name for name, spec in ATTACKS.items() if spec.tune is not None))
        raise ConfigError(f"attack {attack!r} has nothing to tune (tunable: {tunable})")
    return space


def tune_space(space: dict) -> dict:
    """Ray Tune's param space of an `attacks.spaces` space."""
    kinds = {"choice": tune.choice, "loguniform": tune.loguniform, "randint": tune.randint}
    return {key: kinds[d.kind](*d.args) for key, d in space.items()}


def _trial(config: dict, *, game: Game, spec: AttackSpec, metric: str) -> None:
    if spec.name not in ATTACKS:
        register(spec)  # a trial's worker imports the registry afresh: an attack registered at run time comes along
    scores, member = game.evaluate(spec.name, config)
    tune.report({"score": metric_value(metric, scores, member), "auc": auc(scores, member)})


def make_games(plan: Plan, responses: Responses, *, shadows: np.ndarray, n_pseudo: int, seed: int) -> tuple[Game, Game]:
    """(selection, full): the selection half of the pseudo-targets with the shadows but the held-out half, and
    every pseudo-target with all the shadows (the held-out half's figures and the threshold come from it)."""
    if n_pseudo < 2:
        raise ConfigError(f"--pseudo-targets: expected at least 2 (half choose the setting, half score it), "
                          f"got {n_pseudo}")
    pseudo = pseudo_targets(shadows, n_pseudo=n_pseudo, seed=seed)
    held_out = pseudo[1::2]
    return (Game(plan, responses, np.setdiff1d(shadows, held_out), pseudo[0::2], seed, len(shadows)),
            Game(plan, responses, shadows, pseudo, seed, len(shadows)))


def held_out_figures(game: Game, held_out: np.ndarray, metric: str, scores: np.ndarray, member: np.ndarray) -> dict:
    """{"score", "auc"} of the `held_out` pseudo-targets' rows of the full game's pooled (scores, member)."""
    rows = np.repeat(np.isin(game.pseudo, held_out), game.responses.n_examples)
    return {"score": metric_value(metric, scores[rows], member[rows]), "auc": auc(scores[rows], member[rows])}


def run_search(game: Game, *, attack: str, metric: str, num_samples: int, cpus_per_trial: float,
               max_concurrent: int, storage_path: str | None, seed: int, verbose: int = 1):
    """Tune's ResultGrid for `num_samples` Optuna TPE trials of `attack`, `max_concurrent` at a time.

    The game goes to the object store once (`tune.with_parameters`); reuse_actors keeps the trial processes
    (and their imports) across trials; TPE learns the trials' results in the order it proposed them
    (`attacks.tune.search.InOrder`), so the trials (and the setting chosen) depend on the seed only, not on which
    trial happened to finish first. The attack's spec goes to the trials by value (`_trial`)."""
    from ray.tune.search.optuna import OptunaSearch

    space = tune_space(search_space(attack, game.plan.dataset.info).space(game.plan.dataset.info))
    trainable = tune.with_resources(tune.with_parameters(_trial, game=game, spec=get_attack(attack), metric=metric),
                                    {"cpu": cpus_per_trial})
    searcher = InOrder(OptunaSearch(seed=seed), max_concurrent=max_concurrent)
    tuner = tune.Tuner(
        trainable, param_space=space,
        # max_concurrent_trials (a ConcurrencyLimiter around InOrder) also lets Tune start that many trial workers
        # at once: with one pending trial at a time, a reused worker takes each trial before a second one is up
        tune_config=tune.TuneConfig(metric="score", mode="max", search_alg=searcher, num_samples=num_samples,
                                    reuse_actors=True, max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(name=f"tune-{attack}", storage_path=storage_path, verbose=verbose),
    )
    return tuner.fit()


def trial_rows(grid) -> list[dict]:
    """One {"config", "score", "auc", "error"} per trial of a ResultGrid (error: its first line, or None)."""
    trials = []
    for result in grid:
        row = {"config": result.config, "score": None, "auc": None, "error": None}
        if result.error is not None:
            row["error"] = str(result.error).splitlines()[0][:300]
        elif result.metrics:
            row.update(score=float(result.metrics["score"]), auc=float(result.metrics["auc"]))
        trials.append(row)
    return trials


def choose(default_score: float, trials: list[dict]) -> dict | None:
    """The best trial's config, or None when no trial beats the default setting."""
    finite = [t for t in trials if t.get("score") is not None and math.isfinite(t["score"])]
    best = max(finite, key=lambda t: t["score"], default=None)
    return None if best is None or best["score"] <= default_score else best


def chosen_setting(game: Game, attack: str, config: dict | None, *, selection: dict, held_out: dict) -> dict:
    """best.json's "chosen": the setting (None: the default one), its query set and its figures on the
    selection pseudo-targets (score, auc) and on the held-out ones (held_out)."""
    info = game.plan.dataset.info
    specs = search_space(attack, info).queries(config, info) if config else None
    return {
        "source": "default" if config is None else "trial",
        "config": config or {},
        "queries": None if specs is None else [s.as_dict() for s in specs],
        "settings": game.settings(attack, config),
        "score": selection["score"], "auc": selection["auc"], "held_out": held_out,
    }


def tune_attack(run_uri: str, *, attack: str, num_samples: int = 16, metric: str = "auc", fpr: float = 0.01,
                n_pseudo: int = 8, seed: int = 0, cpus_per_trial: float = 1.0, max_concurrent: int | None = None,
                verbose: int = 1, targets: tuple[int, ...] | None = None) -> dict:
    """Search `attack`'s settings on the shadow game; writes tune/<attack>/best.json and returns it.

    targets: the models the setting is for (None: membership.target_ids); the shadows are all the others.
    max_concurrent: trials at once (None: as many as the cluster's CPUs hold at `cpus_per_trial`)."""
    if metric not in METRICS:
        raise ConfigError(f"--metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    if num_samples < 1:
        raise ConfigError(f"--num-samples: expected at least 1, got {num_samples}")
    plan = load_plan(run_uri)
    search_space(attack, plan.dataset.info)
    responses = load_responses(plan.run)
    targets, shadows = split_targets(plan.cfg.membership, targets)
    selection, full = make_games(plan, responses, shadows=shadows, n_pseudo=n_pseudo, seed=seed)
    held_out = np.setdiff1d(full.pseudo, selection.pseudo)
    ensure_ray()
    max_concurrent = concurrent_trials(cpus_per_trial, max_concurrent)
    default_scores = selection.evaluate(attack, None, local=False)
    default = {"score": metric_value(metric, *default_scores), "auc": auc(*default_scores)}
    storage = plan.run.path(TUNE_RAY_DIR) if plan.run.local else None
    trials = trial_rows(run_search(selection, attack=attack, metric=metric, num_samples=num_samples,
                                   cpus_per_trial=cpus_per_trial, max_concurrent=max_concurrent,
                                   storage_path=storage, seed=seed, verbose=verbose))
    best = choose(default["score"], trials)
    config = None if best is None else best["config"]
    default_full = full.evaluate(attack, None, local=False)
    # the chosen trial answered its query set on the selection game's shadows: the held-out few are left, in process
    scores, member = full.evaluate(attack, config, local=False, requery_local=True) if config else default_full
    out = {
        "attack": attack, "metric": metric, "fpr": fpr, "threshold": threshold_at_fpr(scores, member, fpr=fpr),
        "search_algorithm": "optuna TPE (ray.tune.search.optuna.OptunaSearch)", "num_samples": num_samples,
        "target_model_ids": targets, "shadows": shadows.tolist(), "pseudo_targets": full.pseudo.tolist(),
        "selection_pseudo_targets": selection.pseudo.tolist(), "held_out_pseudo_targets": held_out.tolist(),
        "n_shadows": len(shadows), "seed": seed,
        "default": {**default, "held_out": held_out_figures(full, held_out, metric, *default_full)},
        "chosen": chosen_setting(full, attack, config, selection=best or default,
                                 held_out=held_out_figures(full, held_out, metric, scores, member)),
        "trials": trials, "failed_trials": sum(t["error"] is not None for t in trials),
    }
    write_recorded(plan.run, tune_best(attack), json_bytes(jsonable(out)))  # its sha256 and size beside it
    return out
