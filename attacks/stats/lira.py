"""LiRA-style per-example calibration (Carlini et al. 2112.03570) applied to label-only statistics.

For every example, the statistic's distribution over the shadows that trained on it (IN) and over
those that did not (OUT) is modelled as a Gaussian; the target's value is scored by the likelihood
ratio (online) or by a one-sided test against OUT alone (offline). `lira_scores` is the shared core,
also used by `attacks.methods.confidence.lira_confidence` and usable for any per-(model, example) statistic
(e.g. boundary distances). Only shadow statistics and shadow membership go in: the target's
membership cannot even be passed.

Departures from the LiRA reference code (research/mi_lira_2021), on purpose:
- means are per-example *means* (the reference uses medians; with discrete label-only statistics
  medians tie too often);
- the global variance is the pooled *within-example* variance (squared deviations from each example's
  own IN or OUT mean), not the variance of all values, which would mix in between-example spread;
  IN and OUT each get their own;
- examples with fewer than two IN (OUT) shadows use the global IN (OUT) variance;
- an example with no IN (OUT) shadow at all (a disjoint run's shadow game: every other shadow trained on it) is
  scored against the pooled IN (OUT) distribution (`empty="pooled"`, the default) and counted in a
  `CalibrationFallback` warning, which the attack stage and the audit collect (`collect_fallbacks`) and report:
  one example must not sink an attack;
- an example with n rows on a side adds max(n - 1, 0) degrees of freedom to that side's pool (one with
  no row, possible under `empty="global"`, adds nothing);
- with no degrees of freedom at all (e.g. one shadow: no example has two rows on a side) there is no
  within-example spread to measure, and the std is `min_std`;
- every std is floored at `min_std`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from scipy.special import logit
from scipy.stats import norm

from farm.errors import ConfigError

GLOBAL_VARIANCE_BELOW = 64  # "auto": LiRA recommends a global variance with few shadows
EMPTY = ("pooled", "global", "error")


class CalibrationFallback(UserWarning):
    """`examples` examples had no `side` ("IN" or "OUT") shadow in one calibration and got the pooled fit."""

    def __init__(self, side: str, examples: int):
        super().__init__(f"{examples} example(s) have no {side} shadow; scored against the pooled {side} distribution")
        self.side, self.examples = side, examples


@contextmanager
def collect_fallbacks() -> Iterator[list[CalibrationFallback]]:
    """Collects the `CalibrationFallback` warnings raised inside (and shows none of them)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationFallback)
        found: list[CalibrationFallback] = []
        yield found
        found.extend(w.message for w in caught if isinstance(w.message, CalibrationFallback))
    for w in caught:
        if not isinstance(w.message, CalibrationFallback):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def fallback_summary(found: list[CalibrationFallback]) -> dict | None:
    """{side: {"examples": most in one calibration, "calibrations": how many fell back}} or None (metrics.json)."""
    summary: dict = {}
    for f in found:
        side = summary.setdefault(f.side, {"examples": 0, "calibrations": 0})
        side["examples"], side["calibrations"] = max(side["examples"], f.examples), side["calibrations"] + 1
    return summary or None


def lira_scores(*, target_statistic: np.ndarray, shadow_statistic: np.ndarray, shadow_member: np.ndarray,
                variant: str = "online", global_variance: bool | str = "auto",
                min_std: float = 0.1, empty: str = "pooled") -> np.ndarray:
    """Per-example likelihood-ratio scores from shadow statistics (higher = more likely member).

    target_statistic: float[N]; shadow_statistic: float[S, N]; shadow_member: bool[S, N].
    variant "online":  log N(s; mu_in, sd_in) - log N(s; mu_out, sd_out); needs >= 1 IN and >= 1 OUT
                       shadow for every example.
    variant "offline": log Phi((s - mu_out) / sd_out): one-sided, higher s => member; OUT shadows only.
    global_variance: True (one IN and one OUT variance for all examples), False (per example), or
                     "auto" (global when S < 64).
    empty: what an example with no IN (online) or OUT shadow gets: "pooled" the mean over all IN (OUT) rows, with
           a `CalibrationFallback` warning; "global" the same, silently (few-shadow studies); "error" a ConfigError.
    Returns float64[N].
    """
    if variant not in ("online", "offline"):
        raise ConfigError(f"attack 'calibrated': unknown variant {variant!r} (valid: offline, online)")
    if global_variance not in (True, False, "auto"):
        raise ConfigError(f"global_variance must be true, false or 'auto', got {global_variance!r}")
    if not min_std > 0:
        raise ConfigError(f"min_std must be > 0, got {min_std}")
    stat = np.asarray(shadow_statistic, dtype=np.float64)
    member = np.asarray(shadow_member, dtype=bool)
    s = np.asarray(target_statistic, dtype=np.float64)
    use_global = use_global_variance(global_variance, n_shadows=len(stat))

    if empty not in EMPTY:
        raise ConfigError(f"empty must be one of {', '.join(EMPTY)}, got {empty!r}")
    mu_out, sd_out = gaussian_fit(stat, ~member, use_global=use_global, min_std=min_std, side="OUT", empty=empty)
    if variant == "offline":
        return norm.logcdf((s - mu_out) / sd_out)
    mu_in, sd_in = gaussian_fit(stat, member, use_global=use_global, min_std=min_std, side="IN", empty=empty)
    return norm.logpdf(s, mu_in, sd_in) - norm.logpdf(s, mu_out, sd_out)


def use_global_variance(global_variance: bool | str, *, n_shadows: int) -> bool:
    """Whether `global_variance` (True, False or "auto") means a global variance with `n_shadows` shadows.

    A game resolves "auto" once from its real target's shadow count (its pseudo-targets see one fewer), so
    the target and the pseudo-targets that set its thresholds are scored by the same rule."""
    return n_shadows < GLOBAL_VARIANCE_BELOW if global_variance == "auto" else bool(global_variance)


def gaussian_fit(stat: np.ndarray, mask: np.ndarray, *, use_global: bool, min_std: float,
                  side: str, empty: str = "pooled") -> tuple[np.ndarray, np.ndarray]:
    """Per-example mean and std (float64[N] each) of stat[S, N] over the rows where mask[S, N].

    empty: what an example with no row on this side gets (`lira_scores`).
    An example with no row adds no degrees of freedom; with none pooled the global variance is 0 (std min_std)."""
    count = mask.sum(axis=0)
    if (count == 0).any() and (empty == "error" or not mask.any()):
        hint = " (use variant='offline' or more shadows)" if side == "IN" else " (use more shadows)"
        raise ConfigError(f"{int((count == 0).sum())} examples have no {side} shadow, so their {side} "
                          f"distribution cannot be fit{hint}")
    if (count == 0).any() and empty == "pooled":
        warnings.warn(CalibrationFallback(side, int((count == 0).sum())), stacklevel=3)
    fallback = stat[mask].mean() if mask.any() else 0.0
    mean = np.where(count > 0, np.where(mask, stat, 0.0).sum(axis=0) / np.maximum(count, 1), fallback)
    squares = np.where(mask, (stat - mean) ** 2, 0.0).sum(axis=0)
    dof = np.maximum(count - 1, 0)
    pooled_dof = dof.sum()
    global_var = squares.sum() / pooled_dof if pooled_dof > 0 else 0.0
    if use_global:
        var = np.full(stat.shape[1], global_var)
    else:
        var = np.where(dof > 0, squares / np.maximum(dof, 1), global_var)
    return mean, np.maximum(np.sqrt(var), min_std)


def smoothed_logit_fraction(correct_count: np.ndarray, n_queries: int) -> np.ndarray:
    """logit((k + 0.5) / (n + 1)): a finite, roughly Gaussian version of k correct out of n.

    correct_count: int[...]; returns float64[...] of the same shape.
    """
    return logit((np.asarray(correct_count, dtype=np.float64) + 0.5) / (n_queries + 1))


ANSWER_FLOOR = 1e-3  # `answer_scores`: the chance of a right (wrong) answer is kept in [floor, 1 - floor]


def answer_scores(*, target_answers: np.ndarray, shadow_margins: np.ndarray, shadow_member: np.ndarray,
                  variant: str = "online", global_variance: bool | str = "auto", min_std: float = 0.1,
                  empty: str = "pooled") -> np.ndarray:
    """Per-example log-likelihood ratio of a target's right and wrong answers to Q queries of each example, the
    chance that an IN (OUT) model answers a query right modelled from the shadows' margins on that very query.

    target_answers: float[N, Q], 1 where the target answered the true label, else 0 (its labels only);
    shadow_margins: float[S, N, Q], each shadow's logit of the true label minus its largest other logit (> 0: a
    right answer); shadow_member: bool[S, N]. Per (example, query), a Gaussian is fit over the IN (OUT) shadows'
    margins as `lira_scores` fits a statistic (per-example mean; global or per-example variance; `empty`), and a
    model of that side answers right with chance Phi(mean / std), kept in [ANSWER_FLOOR, 1 - ANSWER_FLOOR]. A few
    shadows' margins grade what their few right/wrong answers cannot: no two examples tie unless their shadows do.

    variant "online": sum over queries of log P_IN(answer) - log P_OUT(answer); "offline": the same against an IN
    model that always answers right (P_IN = 1 - ANSWER_FLOOR), OUT shadows only. Returns float64[N].
    """
    if variant not in ("online", "offline"):
        raise ConfigError(f"unknown variant {variant!r} for margin scores (valid: offline, online)")
    margins = np.asarray(shadow_margins, dtype=np.float64)
    member = np.asarray(shadow_member, dtype=bool)
    right = np.asarray(target_answers, dtype=np.float64)
    use_global = use_global_variance(global_variance, n_shadows=len(margins))

    def log_chances(mask: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
        fits = [gaussian_fit(margins[:, :, q], mask, use_global=use_global, min_std=min_std, side=side,
                             empty=empty) for q in range(margins.shape[2])]
        chance = np.clip(np.stack([norm.cdf(mean / std) for mean, std in fits], axis=1), ANSWER_FLOOR,
                         1 - ANSWER_FLOOR)
        return np.log(chance), np.log1p(-chance)

    out_right, out_wrong = log_chances(~member, "OUT")
    if variant == "offline":
        in_right, in_wrong = np.log1p(-ANSWER_FLOOR), np.log(ANSWER_FLOOR)
    else:
        in_right, in_wrong = log_chances(member, "IN")
    return (right * (in_right - out_right) + (1 - right) * (in_wrong - out_wrong)).sum(axis=1)
