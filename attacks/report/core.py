"""The attack stage's results as the report reads them (DESIGN §8): summary rows, the terminal table, ROC curves.

Reads only files of the run directory, through `RunDir` so that s3:// runs work: `models/*/metrics.json`,
`attacks/<attack>/metrics.json` and `attacks/<attack>/scores.parquet`. An attack counts as a result when its
metrics.json exists (the attack stage writes it after the scores). The page around these figures is written
by `attacks.report.page.write_report`; the HTML of the run's own sections is in `attacks.report.results`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from attacks.artifacts import ATTACKS_DIR, attack_metrics, attack_names, attack_scores, read_attack_metrics, read_scores
from attacks.methods.whitebox import precision_check, stolen_memories
from attacks.registry import ATTACKS, attack_type
from attacks.report.figure import new_figure, png_bytes
from attacks.report.markup import pct, text_table
from attacks.stats.fidelity import summary_line
from attacks.stats.metrics import roc_curve
from attacks.stats.nonmembers import known_nonmember_lines
from farm.errors import RunError
from farm.storage import RunDir

REPORT_HTML = "report/index.html"
REPORT_ROC = "report/roc.png"
FPR_LEVELS = (("0.01", "1%"), ("0.001", "0.1%"))  # (metrics.json key, label): the report's TPR@FPR columns
_REQUIRED = ("auc", "label_only", "tpr_at_fpr", "n_members", "n_nonmembers")


def summary_rows(run: RunDir) -> list[dict]:
    """One flat dict per attack result, label-only attacks first, then baselines; each by AUC descending.

    Keys: attack (its folder name under attacks/), label_only, type (label-only, confidence or white-box),
    precision_check (stolen_memories: `precision_check` of its decisions on the targets, else None), description,
    settings, target_model_ids,
    seconds; queries_per_example (the queries the attack sends the target of its own; None: the run's query set)
    and run_queries_per_example (the size of that query set, None in results made before it was recorded);
    membership_mode ("lira" when not recorded), challenge_set, n_shadow_pool_examples and
    auto_settings (the variant the mode chose, or None), as metrics.json records them (`attacks.modes`);
    auc, auc_ci ((low, high) or None); for key in "0.01", "0.001": f"tpr_at_fpr_{key}", f"tpr_at_fpr_{key}_ci",
    f"false_positives_allowed_{key}" (0: the figure rests on zero false positives); balanced_accuracy and
    advantage at the threshold chosen on shadows; oracle_balanced_accuracy; n_members; n_nonmembers;
    requested_fpr with realized_fpr, realized_tpr on the target at the shadow threshold for it. Missing
    figures are None. RunError when there is no result or a metrics.json lacks a required key.
    """
    names = attack_names(run)
    if not names:
        raise RunError(f"{run.path(ATTACKS_DIR)}: no attack results; run `shadowfarm attack RUN` first")
    rows = []
    for name in names:
        m = read_attack_metrics(run, name)
        missing = [key for key in _REQUIRED if key not in m]
        if missing:
            raise RunError(f"{run.path(attack_metrics(name))}: missing {', '.join(missing)}; "
                           "rerun the attack")
        requested = m.get("requested_fpr")
        at_shadow = (m.get("at_shadow_thresholds") or {}).get(f"{requested:g}" if requested is not None else "", {})
        row = {"attack": name, "label_only": bool(m["label_only"]), "type": attack_type(name, bool(m["label_only"])),
               "precision_check": _precision_check(run, name, m.get("settings", {})),
               "description": m.get("description", ""), "settings": m.get("settings", {}),
               "target_model_ids": m.get("target_model_ids", []), "seconds": m.get("seconds"),
               "queries_per_example": m.get("queries_per_example"),
               "run_queries_per_example": m.get("run_queries_per_example"),
               "membership_mode": m.get("membership_mode", "lira"), "challenge_set": m.get("challenge_set"),
               "n_shadow_pool_examples": m.get("n_shadow_pool_examples"), "auto_settings": m.get("auto_settings"),
               "calibration_fallback": m.get("calibration_fallback"), "fidelity": m.get("fidelity"),
               "known_nonmembers": m.get("known_nonmembers"), "tuned_threshold": m.get("tuned_threshold"),
               "auc": m["auc"], "auc_ci": _pair(m.get("auc_ci"))}
        for key, _ in FPR_LEVELS:
            row[f"tpr_at_fpr_{key}"] = m["tpr_at_fpr"].get(key)
            row[f"tpr_at_fpr_{key}_ci"] = _pair((m.get("tpr_at_fpr_ci") or {}).get(key))
            row[f"false_positives_allowed_{key}"] = (m.get("false_positives_allowed") or {}).get(key)
        row.update(balanced_accuracy=m.get("balanced_accuracy"), advantage=m.get("advantage"),
                   oracle_balanced_accuracy=m.get("oracle_balanced_accuracy"),
                   n_members=m["n_members"], n_nonmembers=m["n_nonmembers"], requested_fpr=requested,
                   realized_fpr=at_shadow.get("fpr"), realized_tpr=at_shadow.get("tpr"))
        rows.append(row)
    return sorted(rows, key=lambda r: (not r["label_only"], -r["auc"], r["attack"]))


def _calibrated_precision(name: str) -> bool:
    """Whether attack `name`'s scores are a calibrated P(member) read at the precision it asks for."""
    return name in ATTACKS and ATTACKS[name].fn is stolen_memories


def _precision_check(run: RunDir, name: str, settings: dict) -> dict | None:
    """stolen_memories' promised vs realized precision on its targets (from its scores.parquet); None otherwise."""
    if not _calibrated_precision(name) or "precision" not in settings or not run.is_file(attack_scores(name)):
        return None
    table = read_scores(run, name, columns=["member", "score"])
    return precision_check(table["score"].to_numpy(), table["member"].to_numpy(zero_copy_only=False),
                           precision=float(settings["precision"]))


def precision_line(row: dict) -> str:
    """One line (< 100 columns): the precision stolen_memories' calibration promised on the targets' flagged
    examples (their mean calibrated P(member)), and the one they realize."""
    c = row["precision_check"]
    if not c["n_flagged"]:
        return f"{row['attack']}: nothing flagged (no P(member) >= {c['precision']:g})"
    return (f"{row['attack']}: {c['n_flagged']:,} flagged at P(member) >= {c['precision']:g}, precision promised "
            f"{pct(c['promised'])}, realized {pct(c['realized'])}")


def _pair(value) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


def zero_fp(row: dict, key: str) -> bool:
    """Whether the row's TPR at FPR level `key` rests on zero allowed false positives."""
    return row[f"false_positives_allowed_{key}"] == 0


def format_table(rows: Sequence[dict]) -> str:
    """Plain-text table of `summary_rows` for a terminal (< 100 columns for attack names up to 24 chars).

    TPR figures that rest on zero allowed false positives carry a `*` and a footnote.
    """
    headers = ("attack", "type", "AUC", "TPR@1%FPR", "TPR@0.1%FPR", "bal. acc", "non-members")
    body = []
    for r in rows:
        tprs = [pct(r[f"tpr_at_fpr_{key}"]) + ("*" if zero_fp(r, key) else " ") for key, _ in FPR_LEVELS]
        body.append((r["attack"], r["type"], f"{r['auc']:.3f}", *tprs,
                     pct(r["balanced_accuracy"]), f"{r['n_nonmembers']:,}"))
    out = text_table(headers, body)
    if any(zero_fp(r, key) for r in rows for key, _ in FPR_LEVELS):
        out.append("* rests on zero allowed false positives (FPR x non-members < 1)")
    out.append("bal. acc at the threshold chosen on shadow models; AUC and TPR@FPR pooled over targets")
    out += [precision_line(r) for r in rows if r.get("precision_check")]
    out += [fallback_line(r["attack"], r["calibration_fallback"]) for r in rows if r.get("calibration_fallback")]
    checked = [r for r in rows if r.get("known_nonmembers")]
    out += known_nonmember_lines(checked, checked[0]["requested_fpr"]) if checked else []
    fidelity = next((r["fidelity"] for r in rows if r.get("fidelity")), {})
    out += [line for t, f in fidelity.items() if (line := summary_line(f, subject=f"target {t}"))]
    return "\n".join(out)


def fallback_line(attack: str, fallback: dict) -> str:
    """One line: the examples that had no IN or OUT shadow in some calibration (`attacks.stats.lira`)."""
    parts = [f"{f['examples']:,} example(s) had no {side} shadow in {f['calibrations']} calibration(s)"
             for side, f in sorted(fallback.items())]
    return f"{attack}: {'; '.join(parts)}; scored against the pooled distribution there"


# ---------------------------------------------------------------- ROC plot


LINE_STYLES = {"label-only": "-", "confidence": "--", "white-box": "-."}


def roc_png(curves: Sequence[tuple[str, str, float, np.ndarray, np.ndarray]], *, n_nonmembers: int) -> bytes:
    """Log-log ROC plot as PNG bytes. curves: (label, type, auc, fpr float[K], tpr float[K]).

    Both axes start at max(1e-4, 1 / n_nonmembers), the smallest resolvable nonzero FPR. Segments
    between ROC points are drawn as the straight lines of linear ROC space (randomized thresholds),
    sampled densely so they bend honestly on log axes. Label-only attacks solid, confidence dashed, white-box
    dash-dotted (`LINE_STYLES`).
    """
    fig = new_figure(figsize=(6.4, 5.4), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    low = max(1e-4, 1 / n_nonmembers)
    grid = np.logspace(math.log10(low), 0, 300)
    ax.plot([low, 1], [low, 1], color="0.55", lw=1, ls=":", label="chance")
    for i, (label, kind, auc, fpr, tpr) in enumerate(curves):
        on_grid = np.interp(grid, fpr, tpr)
        if len(fpr) > 10_000:  # pooled runs reach millions of points: keep the corners next to each grid point
            index = np.searchsorted(fpr, grid)
            index = np.unique(np.clip(np.r_[0, index - 1, index, len(fpr) - 1], 0, len(fpr) - 1))
            fpr, tpr = fpr[index], tpr[index]
        x, y = np.r_[fpr, grid], np.r_[tpr, on_grid]
        order = np.lexsort((y, x))
        x, y = x[order], y[order]
        keep = (x > 0) & (y > 0)  # zero rates lie at -inf on log axes
        ax.plot(x[keep], y[keep], color=f"C{i % 10}", lw=1.6, ls=LINE_STYLES[kind],
                label=f"{label} (AUC {auc:.3f})")
    ax.set(xscale="log", yscale="log", xlim=(low, 1), ylim=(low, 1), xlabel="false positive rate",
           ylabel="true positive rate",
           title="ROC pooled over targets (solid: label-only, dashed: confidence, dash-dot: white-box)")
    ax.title.set_fontsize(9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return png_bytes(fig)


def roc_curves(run: RunDir, rows: Sequence[dict]) -> list:
    """The curves of `roc_png` for `summary_rows` (each attack's pooled ROC, from its scores.parquet)."""
    curves = []
    for r in rows:
        rel = attack_scores(r["attack"])
        if not run.is_file(rel):
            raise RunError(f"{run.path(rel)}: not found; rerun `shadowfarm attack` for {r['attack']}")
        table = read_scores(run, r["attack"], columns=["member", "score"])
        fpr, tpr, _ = roc_curve(table["score"].to_numpy(), table["member"].to_numpy(zero_copy_only=False))
        curves.append((r["attack"], r["type"], r["auc"], fpr, tpr))
    return curves


def model_stats(run: RunDir) -> dict[str, np.ndarray]:
    """Per-model figures from models/*/metrics.json: train/test accuracy, gap (train - test), losses, seconds."""
    records = [run.read_json(f"models/{d}/metrics.json") for d in run.listdir("models")
               if run.is_file(f"models/{d}/metrics.json")]
    keys = ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "seconds")
    stats = {k: np.array([rec[k] for rec in records if rec.get(k) is not None], dtype=float) for k in keys}
    paired = [rec for rec in records if rec.get("train_accuracy") is not None and rec.get("test_accuracy") is not None]
    stats["gap"] = np.array([rec["train_accuracy"] - rec["test_accuracy"] for rec in paired], dtype=float)
    return stats
