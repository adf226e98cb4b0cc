"""What the defense study's job shows people: the matrix as a terminal table, and the study's own page.

`write_study_report(study, matrix, baseline=...)` writes <study>/report/{index.html, defenses.png} and, with
the undefended farm as `baseline`, rewrites that run's report, whose registered Defenses section
(`attacks.report.defense_matrix`) reads the run's copy of the matrix.
"""

from __future__ import annotations

import math

from attacks.report.defense_matrix import PNG, SHORT, as_frame, defense_section, matrix_png, per_defense, pivot
from attacks.report.markup import CSS, escape, text_table
from attacks.report.page import write_report
from farm.storage import RunDir


def format_matrix(matrix) -> str:
    """Plain-text AUC matrix: one line per defense, test accuracy, ε, then AUC of every attack."""
    frame = as_frame(matrix)
    auc, per = pivot(frame, "auc"), per_defense(frame)
    attacks = list(auc.columns)
    headers = ["defense", "test acc", "ε", *(SHORT.get(a, a) for a in attacks)]
    body = []
    for defense in auc.index:
        eps, accuracy = per.loc[defense, "epsilon"], per.loc[defense, "test_accuracy"]
        body.append([defense, f"{100 * accuracy:.1f}%", "-" if math.isnan(eps) else f"{eps:.2f}",
                     *("-" if math.isnan(v) else f"{v:.3f}" for v in auc.loc[defense])])
    only = [a for a in attacks if frame.loc[frame["attack"] == a, "label_only"].iloc[0]]
    return "\n".join([*text_table(headers, body, left=1),
                      f"AUC on the target(s); label-only: {', '.join(only)}; the rest read confidences. "
                      "Test accuracy: mean over the farm's models."])


def write_study_report(study: RunDir, matrix, *, baseline: RunDir | None = None) -> str:
    """Write <study>/report/{index.html, defenses.png}; with `baseline` (the undefended farm, holding its copy of
    studies/defenses.parquet), also its report with every section. Returns the study page's path."""
    title, section = defense_section(matrix)
    study.write_bytes(f"report/{PNG}", matrix_png(matrix))
    name = escape(study.root.rsplit("/", 1)[-1])
    study.write_text("report/index.html", (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>shadowfarm defenses: {name}</title>'
        f"<style>{CSS}</style></head><body><main><h1>Defense × attack matrix: {name}</h1>"
        f"<h2>{title}</h2>\n{section}\n</main></body></html>\n"))
    if baseline is not None:
        write_report(baseline)
    return study.path("report/index.html")
