"""Membership-inference metrics (DESIGN §8). Pure: arrays in, numbers out.

Conventions: scores float[N] (higher = more likely member), member bool[N]. A threshold t predicts
"member" iff score >= t; t = +inf predicts no member. ROC points are taken at the distinct scores
only (no interpolation between tied scores), so TPR-at-FPR figures are never optimistic.

Thresholds that are *applied* to a target come from shadow scores (`shadow_thresholds` on the output
of `attacks.stats.shadow_game.shadow_scores`); figures read off the target's own ROC curve (AUC, TPR at
FPR, the "oracle" balanced accuracy) are labelled as such.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np

DEFAULT_FPRS = (0.001, 0.01)
BALANCED_ACCURACY = "balanced_accuracy"  # key of the best-balanced-accuracy threshold in a thresholds dict


class TprAtFpr(NamedTuple):
    """TPR at a requested FPR, with what backs it.

    tpr: largest TPR whose FPR <= the requested fpr; fpr: the realized FPR of that point; threshold:
    its threshold; n_nonmembers: how many non-members the FPR is measured on; false_positives_allowed:
    floor(fpr * n_nonmembers): 0 means the figure rests on zero false positives (fpr * n_nonmembers < 1).
    """

    tpr: float
    fpr: float
    threshold: float
    n_nonmembers: int
    false_positives_allowed: int


def reported_fprs(requested: float) -> list[float]:
    """The FPR levels a result reports, ascending: DEFAULT_FPRS and the `requested` one."""
    return sorted({*DEFAULT_FPRS, requested})


# An FPR level is spelled three ways, each derived from the level here: the key of metrics.json dicts
# (tpr_at_fpr {"0.001": ..}), a table column (tpr_at_fpr_0.001) and the metric name users type (tpr@0.1%fpr).
def fpr_key(fpr: float) -> str:
    """The dict/JSON key of an FPR level: 0.001 -> "0.001"."""
    return f"{fpr:g}"


def fpr_column(metric: str, fpr: float) -> str:
    """The table column of a metric at an FPR level: ("tpr_at_fpr", 0.001) -> "tpr_at_fpr_0.001"."""
    return f"{metric}_{fpr_key(fpr)}"


def tpr_metric_name(fpr: float) -> str:
    """The name users type for TPR at an FPR level (e.g. `--metric`): 0.001 -> "tpr@0.1%fpr"."""
    return f"tpr@{100 * fpr:g}%fpr"


def _checked(scores: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    member = np.asarray(member).reshape(-1)
    if member.dtype != bool:
        raise ValueError(f"member must be bool, got {member.dtype}")
    if scores.shape != member.shape:
        raise ValueError(f"scores and member differ in length: {scores.shape[0]} vs {member.shape[0]}")
    if np.isnan(scores).any():
        raise ValueError(f"{int(np.isnan(scores).sum())} scores are NaN")
    if member.all() or not member.any():
        raise ValueError("metrics need both members and non-members")
    return scores, member


def roc_curve(scores: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve over every distinct score.

    Returns (fpr, tpr, thresholds), each float64[D + 1] with D distinct scores; thresholds decrease
    from +inf (point (0, 0)) to the smallest score (point (1, 1)).
    """
    scores, member = _checked(scores, member)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_member = scores[order], member[order]
    # The last position of each run of equal scores: a threshold admits all ties at once.
    last_of_run = np.r_[np.flatnonzero(np.diff(sorted_scores) != 0), len(scores) - 1]
    true_positives = np.cumsum(sorted_member)[last_of_run]
    false_positives = (last_of_run + 1) - true_positives
    tpr = np.r_[0.0, true_positives / member.sum()]
    fpr = np.r_[0.0, false_positives / (~member).sum()]
    return fpr, tpr, np.r_[np.inf, sorted_scores[last_of_run]]


def auc(scores: np.ndarray, member: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half, as in sklearn.metrics.roc_auc_score)."""
    fpr, tpr, _ = roc_curve(scores, member)
    return float(np.trapezoid(tpr, fpr))


def tpr_at_fpr(scores: np.ndarray, member: np.ndarray, *, fpr: float) -> TprAtFpr:
    """The largest TPR with FPR <= `fpr` on this (scores, member) set; see `TprAtFpr`."""
    if not 0 <= fpr <= 1:
        raise ValueError(f"fpr must lie in [0, 1], got {fpr}")
    fprs, tprs, thresholds = roc_curve(scores, member)
    best = np.flatnonzero(fprs <= fpr)[-1]  # fpr and tpr both grow along the curve
    n_nonmembers = int((~np.asarray(member, dtype=bool)).sum())
    return TprAtFpr(float(tprs[best]), float(fprs[best]), float(thresholds[best]), n_nonmembers,
                    math.floor(fpr * n_nonmembers + 1e-9))


def threshold_at_fpr(shadow_scores: np.ndarray, shadow_member: np.ndarray, *, fpr: float) -> float:
    """The lowest threshold whose FPR on the SHADOW set is <= `fpr` (+inf if only "no member" qualifies)."""
    return tpr_at_fpr(shadow_scores, shadow_member, fpr=fpr).threshold


def threshold_at_best_balanced_accuracy(shadow_scores: np.ndarray, shadow_member: np.ndarray) -> float:
    """The threshold maximizing balanced accuracy (equivalently TPR - FPR) on the SHADOW set."""
    fpr, tpr, thresholds = roc_curve(shadow_scores, shadow_member)
    return float(thresholds[np.argmax(tpr - fpr)])


def rates_at_threshold(scores: np.ndarray, member: np.ndarray, *, threshold: float) -> tuple[float, float]:
    """(fpr, tpr) realized when predicting member iff score >= threshold."""
    scores, member = _checked(scores, member)
    predicted = scores >= threshold
    return float(predicted[~member].mean()), float(predicted[member].mean())


def balanced_accuracy(scores: np.ndarray, member: np.ndarray, *, threshold: float) -> float:
    """(TPR + TNR) / 2 when predicting member iff score >= threshold."""
    fpr, tpr = rates_at_threshold(scores, member, threshold=threshold)
    return 0.5 * (tpr + 1.0 - fpr)


def oracle_balanced_accuracy(scores: np.ndarray, member: np.ndarray) -> float:
    """Best balanced accuracy over all thresholds, chosen with THIS set's membership (optimistic)."""
    fpr, tpr, _ = roc_curve(scores, member)
    return float(0.5 * (1.0 + np.max(tpr - fpr)))


def shadow_thresholds(shadow_scores: np.ndarray, shadow_member: np.ndarray, *,
                      fprs: Sequence[float] = DEFAULT_FPRS) -> dict[str, float]:
    """Thresholds chosen on shadow scores: {"balanced_accuracy": t, "0.001": t, "0.01": t, ...}."""
    out = {BALANCED_ACCURACY: threshold_at_best_balanced_accuracy(shadow_scores, shadow_member)}
    for fpr in fprs:
        out[fpr_key(fpr)] = threshold_at_fpr(shadow_scores, shadow_member, fpr=fpr)
    return out


def evaluate(scores: np.ndarray, member: np.ndarray, *, thresholds: dict[str, float] | None,
             fprs: Sequence[float] = DEFAULT_FPRS) -> dict:
    """All metrics of one (pooled) target set, as a JSON-ready dict.

    thresholds: from `shadow_thresholds` (None: the shadow-threshold figures are None).
    Keys: auc; balanced_accuracy and advantage (= TPR - FPR = 2 * balanced_accuracy - 1) at the
    shadow-chosen "balanced_accuracy" threshold; oracle_balanced_accuracy and oracle_advantage (best
    threshold picked on the target's own membership: an upper bound, not an attack); tpr_at_fpr
    {"0.001": ..} read off the target's ROC curve; false_positives_allowed {"0.001": ..} (0: that
    figure rests on zero false positives); n_members; n_nonmembers; at_shadow_thresholds
    {key: {"threshold", "fpr", "tpr"}}: realized rates on the target (threshold None when +-inf).
    """
    scores, member = _checked(scores, member)
    result: dict = {"auc": auc(scores, member)}
    at_shadow = {}
    for key, threshold in (thresholds or {}).items():
        fpr, tpr = rates_at_threshold(scores, member, threshold=threshold)
        at_shadow[key] = {"threshold": float(threshold) if np.isfinite(threshold) else None,
                          "fpr": fpr, "tpr": tpr}
    chosen = at_shadow.get(BALANCED_ACCURACY)
    result["balanced_accuracy"] = None if chosen is None else 0.5 * (chosen["tpr"] + 1.0 - chosen["fpr"])
    result["advantage"] = None if chosen is None else chosen["tpr"] - chosen["fpr"]
    result["oracle_balanced_accuracy"] = oracle_balanced_accuracy(scores, member)
    result["oracle_advantage"] = 2.0 * result["oracle_balanced_accuracy"] - 1.0
    points = {fpr_key(fpr): tpr_at_fpr(scores, member, fpr=fpr) for fpr in fprs}
    result["tpr_at_fpr"] = {key: point.tpr for key, point in points.items()}
    result["false_positives_allowed"] = {key: point.false_positives_allowed for key, point in points.items()}
    result["n_members"] = int(member.sum())
    result["n_nonmembers"] = int((~member).sum())
    result["at_shadow_thresholds"] = at_shadow
    return result


def bootstrap_ci(scores: np.ndarray, member: np.ndarray, *,
                 metric_fn: Callable[[np.ndarray, np.ndarray], float], n: int = 200, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of metric_fn(scores, member) (`bootstrap_intervals` of one metric)."""
    return bootstrap_intervals(scores, member, metrics={"m": metric_fn}, n=n, seed=seed, level=level)["m"]


def bootstrap_intervals(scores: np.ndarray, member: np.ndarray, *,
                        metrics: dict[str, Callable[[np.ndarray, np.ndarray], float]], n: int = 200, seed: int = 0,
                        level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals {name: (low, high)} of each metrics[name](scores, member), every metric on
    the same replicates.

    Members and non-members are resampled separately (stratified), so every replicate keeps the
    class counts and AUC/TPR-at-FPR stay defined. Intervals at the given `level`.
    """
    scores, member = _checked(scores, member)
    if n < 1 or not 0 < level < 1:
        raise ValueError(f"need n >= 1 and 0 < level < 1, got n={n}, level={level}")
    values = np.empty((len(metrics), n))
    for i, index in enumerate(stratified_resamples(member, n=n, seed=seed)):
        values[:, i] = [fn(scores[index], member[index]) for fn in metrics.values()]
    bounds = np.percentile(values, [50 * (1 - level), 50 * (1 + level)], axis=1)
    return {name: (float(low), float(high)) for name, low, high in zip(metrics, *bounds, strict=True)}


def stratified_resamples(member: np.ndarray, *, n: int, seed: int = 0) -> Iterator[np.ndarray]:
    """n index arrays int[N], each the members and the non-members of bool[N] `member` resampled with replacement
    apart (class counts kept), seeded: the replicates of `bootstrap_intervals` (and of a paired comparison, which
    applies one replicate to two attacks' scores)."""
    rng = np.random.default_rng(seed)
    members, nonmembers = np.flatnonzero(member), np.flatnonzero(~np.asarray(member, dtype=bool))
    for _ in range(n):
        yield np.r_[rng.choice(members, len(members)), rng.choice(nonmembers, len(nonmembers))]


def pool(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Pool several targets: concatenate their (scores float[N_i], member bool[N_i]) pairs."""
    if not pairs:
        raise ValueError("pool needs at least one (scores, member) pair")
    scores = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for s, _ in pairs])
    member = np.concatenate([np.asarray(m, dtype=bool).reshape(-1) for _, m in pairs])
    return scores, member
