"""The audit's terminal table (`shadowfarm audit`, the results of `attacks.audit.audit_run`): AUC, TPR at low
FPR and balanced accuracy when the ground truth is known, each attack's shadow threshold and flagged count
always, then the attacks skipped and why."""

from __future__ import annotations

from attacks.report.core import fallback_line
from attacks.report.markup import text_table
from attacks.stats.fidelity import summary_line
from attacks.stats.nonmembers import known_nonmember_lines


def format_audit(results: list[dict], fpr: float) -> str:
    """The audit's table: metrics when the ground truth is known, flagged counts always."""
    truth = any(r.get("ground_truth") for r in results)
    head = ("attack", "AUC", "TPR@1%FPR", "TPR@0.1%FPR", "bal. acc") if truth else ("attack",)
    head += (f"threshold@{fpr:g}", "flagged")
    rows = []
    for r in results:
        if "skipped" in r:
            continue
        threshold = r["shadow_thresholds"][f"{fpr:g}"]
        cells = (r["attack"],)
        if truth:
            cells += (f"{r['auc']:.3f}", f"{100 * r['tpr_at_fpr']['0.01']:.1f}%",
                      f"{100 * r['tpr_at_fpr']['0.001']:.1f}%", f"{100 * r['balanced_accuracy']:.1f}%")
        cells += (f"{threshold:.4g}", f"{r['n_flagged']}/{r['n_examples']}")
        rows.append(cells)
    lines = text_table(head, rows, left=1)
    on_known = any(r.get("tuned_threshold") == "known non-members" for r in results)
    lines.append(f"thresholds chosen on {'the known non-members' if on_known else 'shadow models only'}; bal. acc at "
                 "the best-balanced-accuracy shadow threshold")
    lines += [fallback_line(r["attack"], r["calibration_fallback"]) for r in results if r.get("calibration_fallback")]
    lines += known_nonmember_lines([r for r in results if "skipped" not in r], fpr)
    fidelity = next((r["fidelity"] for r in results if r.get("fidelity")), None)
    if fidelity and summary_line(fidelity):
        lines.append(summary_line(fidelity))
    lines += [f"skipped {r['attack']}: {r['skipped']}" for r in results if "skipped" in r]
    return "\n".join(lines)
