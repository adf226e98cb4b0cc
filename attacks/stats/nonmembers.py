"""Known non-members: examples the auditor knows the target never trained on (data collected after it was
trained, a public test split). Pure.

With them an audit measures what no shadow can promise: the false-positive rate its thresholds realize on the
target itself (`realized_fpr`, with a Clopper-Pearson interval), and can choose its thresholds on the target's
own scores of them instead of the shadows' (`nonmember_thresholds`, `--calibrate nonmembers`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import beta

from attacks.stats.metrics import fpr_key


def binomial_interval(k: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of a rate observed as k successes in n trials."""
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def realized_fpr(scores: np.ndarray, thresholds: Mapping[str, float], *, requested: float) -> dict:
    """What `thresholds` (key -> threshold; flag score >= threshold) realize on known non-members' scores float[K].

    {"n_nonmembers", "at_thresholds": {key: {"false_positives", "fpr", "interval"}}, "requested_fpr",
    "exceeds": the requested level's interval lies wholly above the requested FPR}."""
    scores = np.asarray(scores, dtype=np.float64)
    at = {}
    for key, threshold in thresholds.items():
        k = int((scores >= threshold).sum())
        at[key] = {"false_positives": k, "fpr": k / len(scores), "interval": binomial_interval(k, len(scores))}
    level = at.get(fpr_key(requested))
    return {"n_nonmembers": len(scores), "at_thresholds": at, "requested_fpr": requested,
            "exceeds": bool(level is not None and level["interval"][0] > requested)}


def nonmember_thresholds(scores: np.ndarray, fprs: Sequence[float]) -> dict[str, float]:
    """{fpr key: the lowest threshold that flags at most floor(fpr * K) of the K known non-members' scores}."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    out = {}
    for fpr in fprs:
        allowed = math.floor(fpr * len(ordered) + 1e-9)
        out[fpr_key(fpr)] = (float(np.nextafter(ordered[allowed], np.inf)) if allowed < len(ordered)
                             else float(ordered[-1]))
    return out


def warning_line(attack: str, check: dict) -> str | None:
    """One line when the requested FPR's threshold realizes more false positives on the known non-members than
    the requested rate allows beyond its binomial interval; None otherwise."""
    if not check["exceeds"]:
        return None
    level = check["at_thresholds"][fpr_key(check["requested_fpr"])]
    low, high = level["interval"]
    return (f"{attack}: on {check['n_nonmembers']:,} known non-members the threshold for FPR "
            f"{check['requested_fpr']:g} flags {level['false_positives']:,} (FPR {level['fpr']:.3g}, 95% interval "
            f"{low:.3g}-{high:.3g}): the shadows do not match this target; --calibrate nonmembers chooses the "
            "threshold on the known non-members instead")


def known_nonmember_lines(results: list[dict], fpr: float) -> list[str]:
    """What the known non-members said: the FPR each attack's threshold realizes on them (one line for all),
    a warning line per attack whose threshold realizes more than the requested FPR allows, and which
    thresholds were used when they were chosen on the known non-members."""
    checked = [r for r in results if r.get("known_nonmembers")]
    if not checked:
        return []
    n = checked[0]["known_nonmembers"]["n_nonmembers"]
    rates = ", ".join(f"{r['attack']} {r['known_nonmembers']['at_thresholds'][f'{fpr:g}']['fpr']:.3g}"
                      for r in checked)
    lines = [f"FPR realized on {n:,} known non-members at the shadow thresholds for {fpr:g}: {rates}"]
    lines += [line for r in checked if (line := warning_line(r["attack"], r["known_nonmembers"]))]
    if any(r.get("tuned_threshold") == "known non-members" for r in checked):
        lines.append(f"thresholds for the FPR levels chosen on the {n:,} known non-members (--calibrate nonmembers)")
    return lines
