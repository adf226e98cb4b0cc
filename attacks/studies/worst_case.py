"""Worst case: how much attacks leak on the population's outliers (Choquette-Choo et al. 2007.14321, §7).

Outlier rule (registry `OUTLIER_RULES`; Euclidean distance on the flattened inputs exactly as the models
see them, over the whole population; labels are the true labels):
- "knn" (default): the examples with the FEWEST same-class examples among their k nearest neighbours;
  ties broken by the larger mean distance to those k neighbours.
- "centroid": the examples FARTHEST from their class centroid, in units of their class's RMS distance to
  that centroid (so a tight class and a spread-out class are comparable).
The `fraction` most outlying examples (round(fraction * N), at least 1) form the outlier subset. The rule
reads inputs and labels only: never membership, never a model.

For every attack with a result, on the outlier subset and on the whole population: AUC and TPR at 0.1% and
1% FPR read off the target's ROC (pooled over the attack's targets, as in the results table), with the
members and non-members behind each figure and the false positives each FPR level allows; and the realized
FPR/TPR on the target at the attack's requested FPR with two shadow-chosen thresholds:
- `population_threshold_*`: the threshold chosen on the shadows' whole population (the attack stage's);
- `subset_threshold_*`: a threshold chosen on the shadows' rows of the same subset (for the outlier row:
  the pseudo-targets' scores on the outliers only). An attacker who targets outliers can calibrate on
  them: the outlier subset is a property of the data, known to the attacker, and shadows supply its
  membership.
Neither threshold ever reads a target's membership.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from attacks.artifacts import (
    ATTACKS_DIR,
    OUTLIERS,
    OUTLIERS_SCHEMA,
    WORST_CASE,
    WORST_CASE_SCHEMA,
    read_scores,
    with_study_metadata,
    write_study,
)
from attacks.loader import load_responses
from attacks.stats.metrics import DEFAULT_FPRS, auc, fpr_column, rates_at_threshold, threshold_at_fpr, tpr_at_fpr
from attacks.studies.game import attack_games, prepare_game_statistics, shadow_game
from farm.errors import ConfigError, RunError, unknown_name
from farm.plan import load_plan

SUBSETS = ("population", "outliers")


@dataclass(frozen=True)
class OutlierRule:
    """rule: a key of OUTLIER_RULES; k: neighbours (knn); fraction: share of the population marked outlier."""

    rule: str = "knn"
    k: int = 10
    fraction: float = 0.1

    def check(self, n_examples: int) -> None:
        if self.rule not in OUTLIER_RULES:
            raise unknown_name("outlier rule", self.rule, OUTLIER_RULES)
        if not 0 < self.fraction < 1:
            raise ConfigError(f"--fraction: expected a value in (0, 1), got {self.fraction}")
        if not 1 <= self.k < n_examples:
            raise ConfigError(f"--k: expected an integer in [1, {n_examples - 1}], got {self.k}")


def _knn_order(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    # X=None: each example's neighbours exclude itself (duplicates of it still count).
    distance, index = NearestNeighbors(n_neighbors=k).fit(x).kneighbors()
    same = (y[index] == y[:, None]).sum(axis=1)
    return np.lexsort((-distance.mean(axis=1), same))  # fewest same-class neighbours first, then farthest


def _centroid_order(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    relative = np.empty(len(y))
    for label in np.unique(y):
        rows = y == label
        d = np.linalg.norm(x[rows] - x[rows].mean(axis=0), axis=1)
        relative[rows] = d / max(float(np.sqrt((d ** 2).mean())), 1e-12)
    return np.argsort(-relative, kind="stable")


OUTLIER_RULES = {"knn": _knn_order, "centroid": _centroid_order}


def outlier_ranking(x: np.ndarray, y: np.ndarray, *, rule: OutlierRule) -> np.ndarray:
    """int[N]: example indices from the most to the least outlying under `rule`. x: float[N, ...]; y: int[N]."""
    rule.check(len(y))
    flat = np.asarray(x, dtype=np.float64).reshape(len(y), -1)
    return OUTLIER_RULES[rule.rule](flat, np.asarray(y), rule.k)


def outlier_mask(x: np.ndarray, y: np.ndarray, *, rule: OutlierRule = OutlierRule()) -> np.ndarray:
    """bool[N]: the round(fraction * N) (at least 1) most outlying examples under `rule`."""
    order = outlier_ranking(x, y, rule=rule)
    mask = np.zeros(len(y), dtype=bool)
    mask[order[:max(1, round(rule.fraction * len(y)))]] = True
    return mask


def subset_rows(*, attack: str, label_only: bool, scores: np.ndarray, member: np.ndarray, example_id: np.ndarray,
                outlier: np.ndarray, shadow_scores: np.ndarray, shadow_member: np.ndarray,
                shadow_example_id: np.ndarray, requested_fpr: float,
                fprs: Sequence[float] = DEFAULT_FPRS) -> list[dict]:
    """One row per subset ("population", "outliers") of an attack's pooled target scores. Pure.

    scores float[R], member bool[R], example_id int[R]: the targets' pooled rows; outlier bool[N];
    shadow_*: the shadow game's pooled rows (float[P*N], bool[P*N], int[P*N]). Figures a subset cannot
    support (no member or no non-member) are NaN.
    """
    population_threshold = threshold_at_fpr(shadow_scores, shadow_member, fpr=requested_fpr)
    rows = []
    for subset in SUBSETS:
        keep = np.ones(len(scores), bool) if subset == "population" else outlier[example_id]
        shadow_keep = np.ones(len(shadow_scores), bool) if subset == "population" else outlier[shadow_example_id]
        s, m, ss, sm = scores[keep], member[keep], shadow_scores[shadow_keep], shadow_member[shadow_keep]
        row = {"attack": attack, "label_only": label_only, "subset": subset,
               "n_examples": int(len(np.unique(example_id[keep]))), "n_members": int(m.sum()),
               "n_nonmembers": int((~m).sum()), "requested_fpr": requested_fpr,
               "n_shadow_nonmembers": int((~sm).sum()), "population_threshold": population_threshold}
        both = m.any() and not m.all()
        row["auc"] = auc(s, m) if both else math.nan
        for f in fprs:
            point = tpr_at_fpr(s, m, fpr=f) if both else None
            row[fpr_column("tpr_at_fpr", f)] = point.tpr if point else math.nan
            row[fpr_column("false_positives_allowed", f)] = math.floor(f * int((~m).sum()) + 1e-9)
        subset_threshold = (threshold_at_fpr(ss, sm, fpr=requested_fpr) if sm.any() and not sm.all()
                            else math.nan)
        row["subset_threshold"] = subset_threshold
        for name, threshold in (("subset", subset_threshold), ("population", population_threshold)):
            fpr, tpr = rates_at_threshold(s, m, threshold=threshold) if both and not math.isnan(threshold) \
                else (math.nan, math.nan)
            row[f"{name}_threshold_fpr"], row[f"{name}_threshold_tpr"] = fpr, tpr
        rows.append(row)
    return rows


def worst_case_study(run_uri: str, *, rule: OutlierRule = OutlierRule(), attacks: Sequence[str] | None = None,
                     progress: bool = False) -> list[dict]:
    """Mark outliers, score every attack with a result on them and on the population; write WORST_CASE
    (rows of `subset_rows`; metadata "shadowfarm.study": the rule and counts as JSON) and OUTLIERS."""
    plan = load_plan(run_uri)
    run = plan.run
    y = plan.dataset.y
    order = outlier_ranking(plan.dataset.x, y, rule=rule)
    outlier = outlier_mask(plan.dataset.x, y, rule=rule)
    rank = np.empty(len(y), dtype=np.int32)
    rank[order] = np.arange(len(y), dtype=np.int32)
    games = attack_games(run, n_models=plan.cfg.membership.n_models, names=attacks)
    responses = prepare_game_statistics(plan, load_responses(run), games, progress=progress)
    rows = []
    for game in games:
        table = read_scores(run, game.name).to_pandas()
        if sorted(set(table["target_model_id"])) != sorted(game.targets):
            raise RunError(f"{run.path(f'{ATTACKS_DIR}/{game.name}')}: scores and metrics.json name different "
                           "targets; rerun the attack")
        shadow = shadow_game(game, responses)
        rows += subset_rows(attack=game.name, label_only=game.label_only, scores=table["score"].to_numpy(),
                            member=table["member"].to_numpy(bool), example_id=table["example_id"].to_numpy(),
                            outlier=outlier, shadow_scores=shadow[0], shadow_member=shadow[1],
                            shadow_example_id=shadow[2], requested_fpr=game.requested_fpr)
    meta = {**asdict(rule), "n_outliers": int(outlier.sum()), "n_examples": len(y),
            "description": describe(rule), "n_pseudo_targets": {g.name: g.n_pseudo for g in games}}
    write_study(run, WORST_CASE, pa.Table.from_pylist(rows, schema=with_study_metadata(WORST_CASE_SCHEMA, meta)))
    write_study(run, OUTLIERS, pa.table({"example_id": np.arange(len(y), dtype=np.int32), "label": y,
                                        "outlier": outlier, "rank": rank}, schema=OUTLIERS_SCHEMA))
    return rows


def describe(rule: OutlierRule) -> str:
    """One sentence stating the rule, for reports."""
    what = (f"the fewest same-class examples among their {rule.k} nearest neighbours (ties: farthest from "
            "those neighbours)" if rule.rule == "knn" else
            "the largest distance to their class centroid, relative to their class's RMS distance")
    return (f"Outliers: the {100 * rule.fraction:g}% of the population with {what}; Euclidean distance on the "
            "inputs as the models see them, true labels, no model involved.")
