"""Shadow fidelity: does the target look like its shadows, on what a label-only auditor can see? Pure.

Thresholds chosen on shadows keep their false-positive rate only while the shadows resemble the target. A
target of another family, trained longer or on more data, answers its non-members differently, and the
shadow thresholds can miss the requested FPR by several times (docs/audit.md). Every measure here is computed
per model from its labels alone, for the target and for each shadow on the same examples:

- accuracy: the fraction of clean answers that are the true label;
- agreement: the fraction of clean answers equal to each shadow's (a shadow: to each other shadow), averaged;
- correct under KIND: per query kind other than clean, the fraction of answers that are the true label;
- statistic NAME: the mean over examples of a per-(model, example) statistic the attacks read (boundary
  distances, the transfer attack's losses), where the caller has computed one.

The target is outside the shadows' range on a measure when its value lies more than `Z_LIMIT` shadow standard
deviations from the shadows' mean (and outside their min-max range). Matched shadows (the run's own targets)
stay inside; `summary_line` says in one line which measures are not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Z_LIMIT = 3.0


def per_model_measures(*, pred: np.ndarray, labels: np.ndarray, query_kinds: Sequence[str], shadows: np.ndarray,
                       target: int, statistics: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """{measure: float64[1 + S]} (the target first, then `shadows`) from pred int[M, N, Q] on N examples."""
    models = np.r_[int(target), np.asarray(shadows, dtype=np.intp)]
    kinds = np.asarray(query_kinds)
    correct = pred[models] == np.asarray(labels)[None, :, None]
    clean = pred[models][:, :, int(np.flatnonzero(kinds == "clean")[0])]
    same = np.stack([(clean == clean[1 + s]).mean(axis=1) for s in range(len(models) - 1)], axis=1)  # [1 + S, S]
    same[1:][np.diag_indices(len(models) - 1)] = np.nan  # a shadow is not compared with itself
    out = {"accuracy": correct[:, :, kinds == "clean"].mean(axis=(1, 2)), "agreement": _row_mean(same)}
    for kind in dict.fromkeys(k for k in query_kinds if k != "clean"):
        out[f"correct under {kind}"] = correct[:, :, kinds == kind].mean(axis=(1, 2))
    for name, values in (statistics or {}).items():
        out[f"statistic {name}"] = _row_mean(np.asarray(values, dtype=np.float64)[models])
    return out


def _row_mean(values: np.ndarray) -> np.ndarray:
    """Each row's mean over its non-NaN entries (NaN for a row with none: a statistic not computed for that model)."""
    known = ~np.isnan(values)
    count = known.sum(axis=1)
    return np.where(count > 0, np.where(known, values, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)


def compare(measures: Mapping[str, np.ndarray], *, z_limit: float = Z_LIMIT) -> dict:
    """The target (row 0 of each measure) against the shadows (the rest): a JSON-ready dict.

    {"measures": {name: {target, shadow_mean, shadow_std, shadow_min, shadow_max, z, outside}}, "outside": [names],
    "z_limit": z_limit}; z is None when the shadows do not vary and the target equals them."""
    result, outside = {}, []
    for name, values in measures.items():
        values = np.asarray(values, dtype=np.float64)
        target, shadow = float(values[0]), values[1:]
        mean, std = float(shadow.mean()), float(shadow.std(ddof=1)) if len(shadow) > 1 else 0.0
        low, high = float(shadow.min()), float(shadow.max())
        z = (target - mean) / std if std > 0 else (0.0 if target == mean else float(np.sign(target - mean) * np.inf))
        out = bool(abs(z) > z_limit and not low <= target <= high)
        result[name] = {"target": target, "shadow_mean": mean, "shadow_std": std, "shadow_min": low,
                        "shadow_max": high, "z": z if np.isfinite(z) else None, "outside": out}
        if out:
            outside.append(name)
    return {"measures": result, "outside": outside, "z_limit": z_limit}


def summary_line(fidelity: dict, *, subject: str = "the target") -> str | None:
    """One line naming the measures on which `subject` falls outside its shadows' range, with the figures; None
    when it falls outside on none."""
    if not fidelity["outside"]:
        return None
    parts = []
    for name in fidelity["outside"]:
        m = fidelity["measures"][name]
        parts.append(f"{name} {m['target']:.3g} (shadows {m['shadow_min']:.3g}-{m['shadow_max']:.3g})")
    return (f"fidelity: {subject} is outside its shadows' range on {', '.join(parts)}: thresholds chosen on these "
            "shadows may not keep their false-positive rate (check them with known non-members: --nonmembers)")
