"""Calibration study: how the shadow-calibrated attacks improve with the number of shadows.

For each k in `shadow_counts` and each target, the attacks see only the first k non-target models
(by model_id) as shadows. Rows: AUC and TPR at 0.1%/1% FPR read off the target's ROC, and the
realized FPR/TPR on the target at the threshold chosen for 1% FPR on those k shadows (pseudo-targets
among them; needs k >= 3, else NaN). Attacks:
- `calibrated` (online, LiRA on the label-only statistic), `calibrated-offline`;
- `global-threshold`: the same statistic with one global threshold (no per-example calibration):
  the baseline calibration is measured against;
- `lira_confidence` (confidence baseline) when the run has logits.
Examples with no IN (or OUT) shadow among k get the mean over all IN (OUT) rows.
One statistics pass: each attack's per-(model, example) statistic (a row per model, the same whichever game the
model plays in) is computed once for every model (`statistics`), and every k, target and pseudo-target reads its
rows from it, scored as the attack scores them (`lira_scores` with the attack's resolved settings); the rows
equal those of `run_attack` on each game (tests/test_tune.py pins it).
The report's section of the study (table and curve) is `attacks.report.calibration`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from attacks.artifacts import CALIBRATION
from attacks.loader import load_responses
from attacks.methods.baselines import logit_scaled_confidence
from attacks.registry import resolve_settings
from attacks.responses import Responses
from attacks.runner import split_targets
from attacks.stats.correctness import PERTURBATION_KINDS, count_correct, query_indices, require_kinds
from attacks.stats.lira import lira_scores, smoothed_logit_fraction
from attacks.stats.metrics import auc, rates_at_threshold, threshold_at_fpr, tpr_at_fpr
from attacks.stats.shadow_game import shadow_scores
from farm.errors import ConfigError
from farm.plan import load_plan

VARIANTS = {
    "calibrated": ("calibrated", {"variant": "online", "empty": "global"}),
    "calibrated-offline": ("calibrated", {"variant": "offline", "empty": "global"}),
    "global-threshold": ("calibrated", {"variant": "global"}),
    "lira_confidence": ("lira_confidence", {"variant": "online", "empty": "global"}),
}


def _row(attack: str, k: int, target: int, scores: np.ndarray, member: np.ndarray, threshold: float) -> dict:
    fpr, tpr = (np.nan, np.nan) if np.isnan(threshold) else rates_at_threshold(scores, member, threshold=threshold)
    return {"n_shadows": k, "attack": attack, "target_model_id": target, "auc": auc(scores, member),
            "tpr@0.1%fpr": tpr_at_fpr(scores, member, fpr=0.001).tpr,
            "tpr@1%fpr": tpr_at_fpr(scores, member, fpr=0.01).tpr,
            "threshold_1%fpr": threshold, "realized_fpr": fpr, "realized_tpr": tpr,
            "n_nonmembers": int((~member).sum())}


def statistics(responses: Responses, attacks: set[str]) -> dict[str, np.ndarray]:
    """attack -> float64[M, N]: the statistic `attacks` ("calibrated", "lira_confidence") calibrate, every model's
    row: the fraction of the run's perturbed queries answered correctly, smoothed (`calibrated`'s default kinds),
    and the logit-scaled confidence at the true label."""
    out = {}
    if "calibrated" in attacks:
        kinds = tuple(sorted({kind for kind in responses.query_kinds if kind != "clean"}))
        if not kinds:
            require_kinds(responses, attack="calibrated", any_of=PERTURBATION_KINDS)
        queries = query_indices(responses, kinds=kinds)
        out["calibrated"] = smoothed_logit_fraction(count_correct(responses, queries=queries), len(queries))
    if "lira_confidence" in attacks:
        out["lira_confidence"] = logit_scaled_confidence(responses.logits, responses.labels)
    return out


def scorer(attack: str, settings: dict, statistic: np.ndarray, member: np.ndarray):
    """fn(responses, *, target, shadows) -> float64[N]: `attack` with `settings` on the precomputed `statistic`
    rows (reads member[shadows] only, as the attack does)."""
    chosen = resolve_settings(attack, settings)

    def fn(_responses, *, target: int, shadows: np.ndarray) -> np.ndarray:
        shadows = np.asarray(shadows, dtype=np.intp)
        if chosen["variant"] == "global":
            return statistic[target]
        return lira_scores(target_statistic=statistic[target], shadow_statistic=statistic[shadows],
                           shadow_member=member[shadows], variant=chosen["variant"],
                           global_variance=chosen["global_variance"], min_std=chosen["min_std"], empty=chosen["empty"])

    return fn


def calibration_study(run_uri: str, *, shadow_counts: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
                      targets: Sequence[int] | None = None, n_pseudo: int = 4, seed: int = 0) -> list[dict]:
    """Rows of studies/calibration.parquet (also written)."""
    plan = load_plan(run_uri)
    responses = load_responses(plan.run)
    chosen_targets, all_shadows = split_targets(plan.cfg.membership, tuple(targets) if targets else None)
    counts = sorted({min(int(k), len(all_shadows)) for k in shadow_counts})
    if not counts or counts[0] < 1:
        raise ConfigError("--shadows: expected positive shadow counts, e.g. 1,2,4,8")
    variants = {name: v for name, v in VARIANTS.items() if v[0] != "lira_confidence" or responses.logits is not None}
    statistic = statistics(responses, {attack for attack, _ in variants.values()})
    rows = []
    for k in counts:
        shadows = all_shadows[:k]
        for name, (attack, settings) in variants.items():
            fn = scorer(attack, settings, statistic[attack], responses.member)
            threshold = np.nan
            if k >= 3:
                pooled = shadow_scores(fn, responses, target=chosen_targets[0], shadows=shadows,
                                       n_pseudo=min(n_pseudo, k), seed=seed)
                threshold = threshold_at_fpr(*pooled, fpr=0.01)
            for t in chosen_targets:
                scores = fn(responses, target=t, shadows=shadows)
                rows.append(_row(name, k, t, scores, responses.member[t], threshold))
    plan.run.write_table(CALIBRATION, pa.Table.from_pylist(rows))
    return rows
