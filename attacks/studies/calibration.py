"""Calibration study: how the shadow-calibrated attacks improve with the number of shadows.

For each k in `shadow_counts` and each target, the attacks see only the first k non-target models
(by model_id) as shadows. Rows: AUC and TPR at 0.1%/1% FPR read off the target's ROC, and the
realized FPR/TPR on the target at the threshold chosen for 1% FPR on those k shadows (pseudo-targets
among them; needs k >= 3, else NaN). Attacks (each calibrated attack's `AttackSpec.calibration_rows`):
- `calibrated` (online, LiRA on the label-only statistic), `calibrated-offline`;
- `global-threshold`: the same statistic with one global threshold (no per-example calibration):
  the baseline calibration is measured against;
- `lira_confidence` (confidence baseline) when the run has logits.
Examples with no IN (or OUT) shadow among k get the mean over all IN (OUT) rows.
One statistics pass: each attack's per-(model, example) statistic (a row per model, the same whichever game the
model plays in: `AttackSpec.statistic_of`) is computed once for every model (`statistics`), and every k, target
and pseudo-target reads its rows from it, scored as the attack scores them (`attacks.methods.calibrated.calibrate`
with the attack's resolved settings); the rows equal those of `run_attack` on each game (tests/test_tune.py pins
it).
The report's section of the study (table and curve) is `attacks.report.calibration`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from attacks.artifacts import CALIBRATION, write_study
from attacks.loader import load_responses
from attacks.methods.calibrated import calibrate
from attacks.modes import split_targets
from attacks.registry import ATTACKS, get_attack, resolve_settings
from attacks.responses import Responses
from attacks.settings import resolve
from attacks.stats.metrics import auc, rates_at_threshold, threshold_at_fpr, tpr_at_fpr
from attacks.stats.shadow_game import shadow_scores
from farm.errors import ConfigError
from farm.plan import load_plan


def study_rows(responses: Responses) -> dict[str, tuple[str, dict]]:
    """row name -> (attack, settings): every calibrated attack's `calibration_rows` (the confidence ones only when
    the run has logits)."""
    return {row: (name, settings) for name, spec in ATTACKS.items() for row, settings in spec.calibration_rows.items()
            if spec.label_only or responses.logits is not None}


def _row(attack: str, k: int, target: int, scores: np.ndarray, member: np.ndarray, threshold: float) -> dict:
    fpr, tpr = (np.nan, np.nan) if np.isnan(threshold) else rates_at_threshold(scores, member, threshold=threshold)
    return {"n_shadows": k, "attack": attack, "target_model_id": target, "auc": auc(scores, member),
            "tpr@0.1%fpr": tpr_at_fpr(scores, member, fpr=0.001).tpr,
            "tpr@1%fpr": tpr_at_fpr(scores, member, fpr=0.01).tpr,
            "threshold_1%fpr": threshold, "realized_fpr": fpr, "realized_tpr": tpr,
            "n_nonmembers": int((~member).sum())}


def statistics(responses: Responses, attacks: set[str]) -> dict[str, np.ndarray]:
    """attack -> float64[M, N]: the statistic each of `attacks` calibrates (`AttackSpec.statistic_of`, its default
    settings), every model's row: e.g. the fraction of the run's perturbed queries answered correctly, smoothed
    (`calibrated`), or the logit-scaled confidence at the true label."""
    models = np.arange(responses.n_models)
    return {name: get_attack(name).statistic_of(responses, models, resolve_settings(name)) for name in attacks}


def scorer(attack: str, settings: dict, statistic: np.ndarray, member: np.ndarray):
    """fn(responses, *, target, shadows) -> float64[N]: `attack` with `settings` on the precomputed `statistic`
    rows (reads member[shadows] only, as the attack does)."""
    chosen = resolve([attack], explicit={attack: settings})[0][attack]

    def fn(_responses, *, target: int, shadows: np.ndarray) -> np.ndarray:
        shadows = np.asarray(shadows, dtype=np.intp)
        if chosen["variant"] == "global":
            return statistic[target]
        return calibrate(statistic[np.r_[target, shadows]], member[shadows], variant=chosen["variant"],
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
    variants = study_rows(responses)
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
    write_study(plan.run, CALIBRATION, pa.Table.from_pylist(rows))
    return rows
