"""The report section and terminal table of the worst-case study (`attacks.studies.worst_case`,
studies/worst_case.parquet): every attack on the population's outliers beside the whole population."""

from __future__ import annotations

import math

import pandas as pd

from attacks.artifacts import WORST_CASE, WORST_CASE_SCHEMA
from attacks.registry import attack_type
from attacks.report.markup import (
    Section,
    escape,
    label_only_first,
    notes_html,
    pct,
    study_section,
    text_table,
    type_tag,
)
from farm.storage import RunDir

TITLE = "Worst case: outliers"
NOTES = (
    "AUC and TPR @ FPR are read off the target's ROC on each subset, pooled over the attack's targets; below "
    "each TPR, the false positives its level allows among the non-members it is measured on († : zero, so "
    "the figure counts the members scored above every non-member).",
    "Last two columns: realized FPR / TPR on the target's outliers at the attack's requested FPR, with the "
    "threshold chosen on the pseudo-targets' whole population (the attack stage's threshold) and on their "
    "outliers only; below, the shadow non-members each threshold was chosen on. Neither reads the target's "
    "membership.",
)


def worst_case_section(run: RunDir) -> Section | None:
    return study_section(run, title=TITLE, rel=WORST_CASE, schema=WORST_CASE_SCHEMA, command="worst-case",
                         render=worst_case_html)


def _head(frame: pd.DataFrame) -> str:
    requested = ", ".join(sorted({pct(v, 1) for v in frame["requested_fpr"]}))
    return ('<tr><th rowspan="2">attack</th><th class="group" colspan="4">whole population</th>'
            '<th class="group" colspan="4">outliers</th>'
            f'<th class="group" colspan="2">outliers, FPR / TPR at the shadows\' threshold for {requested} FPR</th>'
            '</tr><tr>' + "".join(f'<th class="num">{h}</th>' for h in (
                "AUC", "TPR @ 1% FPR", "TPR @ 0.1% FPR", "mem.&nbsp;/ non-mem.",
                "AUC", "TPR @ 1% FPR", "TPR @ 0.1% FPR", "mem.&nbsp;/ non-mem.",
                "chosen on all shadow rows", "chosen on shadow outliers")) + "</tr>")


def _subset_cells(r: dict) -> list[str]:
    """AUC, TPR at 1% and 0.1% FPR (with the false positives allowed) and the counts of one subset."""
    cells = [f'<td class="num">{"-" if math.isnan(r["auc"]) else format(r["auc"], ".3f")}</td>']
    for key in ("0.01", "0.001"):
        allowed = r[f"false_positives_allowed_{key}"]
        mark = "†" if allowed == 0 else ""
        cells.append(f'<td class="num">{pct(r[f"tpr_at_fpr_{key}"], 2)}{mark}'
                     f'<span class="sub">≤&nbsp;{allowed:,} FP of {r["n_nonmembers"]:,}</span></td>')
    cells.append(f'<td class="num">{r["n_members"]:,}&nbsp;/&nbsp;{r["n_nonmembers"]:,}</td>')
    return cells


def _threshold_cells(r: dict, whole: dict) -> list[str]:
    """Realized FPR / TPR on the outliers at the population's and the outliers' shadow thresholds."""
    return [f'<td class="num">{pct(r["population_threshold_fpr"], 2)} / {pct(r["population_threshold_tpr"], 2)}'
            f'<span class="sub">on {whole["n_shadow_nonmembers"]:,} non-members</span></td>',
            f'<td class="num">{pct(r["subset_threshold_fpr"], 2)} / {pct(r["subset_threshold_tpr"], 2)}'
            f'<span class="sub">on {r["n_shadow_nonmembers"]:,} non-members</span></td>']


def worst_case_html(frame: pd.DataFrame, meta: dict) -> str:
    """The outlier table: one row per attack, population beside outliers, with the counts behind each figure."""
    by = {(r["attack"], r["subset"]): r for r in frame.to_dict("records")}
    body = []
    for attack in label_only_first(frame):
        whole, outliers = by[(attack, "population")], by[(attack, "outliers")]
        cells = [f'<td><b>{escape(attack)}</b><span class="sub">{type_tag(whole["label_only"], attack)}</span></td>',
                 *_subset_cells(whole), *_subset_cells(outliers), *_threshold_cells(outliers, whole)]
        body.append("<tr>" + "".join(cells) + "</tr>")
    counted = (escape(meta.get("description", "")) + f" {meta.get('n_outliers', '?'):,} of "
               f"{meta.get('n_examples', '?'):,} examples are outliers.")
    return (f"<table><thead>{_head(frame)}</thead><tbody>{''.join(body)}</tbody></table>"
            + notes_html([counted, *NOTES]))


def format_worst_case(rows: list[dict]) -> str:
    """Plain-text outlier table for a terminal: population beside outliers, counts in the last columns."""
    by = {(r["attack"], r["subset"]): r for r in rows}
    body = []
    for attack in label_only_first(pd.DataFrame(rows)):
        cells = [attack, attack_type(attack, by[(attack, "population")]["label_only"])]
        for subset in ("population", "outliers"):
            r = by[(attack, subset)]
            cells += ["-" if math.isnan(r["auc"]) else f"{r['auc']:.3f}", pct(r["tpr_at_fpr_0.01"], 1),
                      pct(r["tpr_at_fpr_0.001"], 1), f"{r['n_members']}/{r['n_nonmembers']}"]
        body.append(tuple(cells))
    headers = ("attack", "type", "AUC", "TPR@1%", "TPR@0.1%", "mem/non", "out AUC", "out TPR@1%", "out TPR@0.1%",
               "out mem/non")
    return "\n".join(text_table(headers, body) + ["TPR@FPR read off the target's ROC on each subset; mem/non: "
                                                  "members/non-members behind each figure"])
