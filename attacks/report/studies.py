"""Report sections of the studies: HTML for `attacks.report.core.write_report(run, extra_sections=...)`.

`study_sections(run)` reads `studies/worst_case.parquet` and `studies/ood.parquet` when they exist and
returns their (title, html) sections (none for a missing study), so any command that writes the report can
pass them on. All text is escaped here; the CSS classes are the report's own.
"""

from __future__ import annotations

import html
import json
import math

import pandas as pd

from attacks.studies.ood.study import OOD, OOD_SCHEMA, POPULATION
from attacks.studies.worst_case import WORST_CASE, WORST_CASE_SCHEMA
from farm.storage import RunDir

WORST_CASE_TITLE = "Worst case: outliers"
OOD_TITLE = "Out-of-distribution non-members"


def _e(value) -> str:
    return html.escape(str(value))


def _pct(value, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.{digits}f}%"


def _tag(label_only: bool) -> str:
    return '<span class="tag lo">label-only</span>' if label_only else '<span class="tag conf">confidence</span>'


def _meta(run: RunDir, rel: str) -> dict:
    return json.loads((run.read_schema(rel).metadata or {}).get(b"shadowfarm.study", b"{}"))


def _sorted(frame: pd.DataFrame) -> list[str]:
    first = frame.drop_duplicates("attack")
    return [r.attack for r in sorted(first.itertuples(), key=lambda r: (not r.label_only, r.attack))]


def worst_case_html(frame: pd.DataFrame, meta: dict) -> str:
    """The outlier table: one row per attack, population beside outliers, with the counts behind each figure."""
    by = {(r["attack"], r["subset"]): r for r in frame.to_dict("records")}
    requested = ", ".join(sorted({_pct(v, 1) for v in frame["requested_fpr"]}))
    head = ('<tr><th rowspan="2">attack</th><th class="group" colspan="4">whole population</th>'
            '<th class="group" colspan="4">outliers</th>'
            f'<th class="group" colspan="2">outliers, FPR / TPR at the shadows\' threshold for {requested} FPR</th>'
            '</tr><tr>' + "".join(f'<th class="num">{h}</th>' for h in (
                "AUC", "TPR @ 1% FPR", "TPR @ 0.1% FPR", "mem.&nbsp;/ non-mem.",
                "AUC", "TPR @ 1% FPR", "TPR @ 0.1% FPR", "mem.&nbsp;/ non-mem.",
                "chosen on all shadow rows", "chosen on shadow outliers")) + "</tr>")
    body = []
    for attack in _sorted(frame):
        label_only = by[(attack, "population")]["label_only"]
        cells = [f'<td><b>{_e(attack)}</b><span class="sub">{_tag(label_only)}</span></td>']
        for subset in ("population", "outliers"):
            r = by[(attack, subset)]
            cells.append(f'<td class="num">{"-" if math.isnan(r["auc"]) else format(r["auc"], ".3f")}</td>')
            for key in ("0.01", "0.001"):
                allowed = r[f"false_positives_allowed_{key}"]
                mark = "†" if allowed == 0 else ""
                cells.append(f'<td class="num">{_pct(r[f"tpr_at_fpr_{key}"])}{mark}'
                             f'<span class="sub">≤&nbsp;{allowed:,} FP of {r["n_nonmembers"]:,}</span></td>')
            cells.append(f'<td class="num">{r["n_members"]:,}&nbsp;/&nbsp;{r["n_nonmembers"]:,}</td>')
        r, whole = by[(attack, "outliers")], by[(attack, "population")]
        cells.append(f'<td class="num">{_pct(r["population_threshold_fpr"])} / {_pct(r["population_threshold_tpr"])}'
                     f'<span class="sub">on {whole["n_shadow_nonmembers"]:,} non-members</span></td>')
        cells.append(f'<td class="num">{_pct(r["subset_threshold_fpr"])} / {_pct(r["subset_threshold_tpr"])}'
                     f'<span class="sub">on {r["n_shadow_nonmembers"]:,} non-members</span></td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = [
        _e(meta.get("description", "")) + f" {meta.get('n_outliers', '?'):,} of {meta.get('n_examples', '?'):,} "
        "examples are outliers.",
        "AUC and TPR @ FPR are read off the target's ROC on each subset, pooled over the attack's targets; below "
        "each TPR, the false positives its level allows among the non-members it is measured on († : zero, so "
        "the figure counts the members scored above every non-member).",
        "Last two columns: realized FPR / TPR on the target's outliers at the attack's requested FPR, with the "
        "threshold chosen on the pseudo-targets' whole population (the attack stage's threshold) and on their "
        "outliers only; below, the shadow non-members each threshold was chosen on. Neither reads the target's "
        "membership.",
    ]
    return (f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
            + "".join(f'<p class="note">{n}</p>' for n in notes))


def _ood_table(frame: pd.DataFrame, threshold: str, families: list[str]) -> str:
    rows = frame[frame["threshold"] == threshold]
    by = {(r["attack"], r["family"]): r for r in rows.to_dict("records")}
    head = ('<tr><th>attack</th><th>scoring</th><th class="num">TPR on population members</th>'
            '<th class="num">population non-members</th>'
            + "".join(f'<th class="num">{_e(f)}</th>' for f in families) + "</tr>")
    body = []
    for attack in _sorted(rows):
        first = by[(attack, POPULATION)]
        none = math.isinf(first["threshold_value"]) and first["threshold_value"] > 0
        behind = "threshold +∞: no member" if none else f"of {first['n_members']:,}"
        cells = [f'<td><b>{_e(attack)}</b><span class="sub">{_tag(first["label_only"])}</span></td>',
                 f'<td>{_e(first["scoring"])}</td>',
                 f'<td class="num">{_pct(first["population_tpr"], 1)}<span class="sub">{behind}</span></td>']
        for family in [POPULATION, *families]:
            r = by.get((attack, family))
            cells.append('<td class="num">-</td>' if r is None else
                         f'<td class="num">{_pct(r["fpr"], 1)}<span class="sub">{r["false_positives"]:,} / '
                         f'{r["n_inputs"]:,}</span></td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def ood_html(frame: pd.DataFrame, meta: dict) -> str:
    """Two FPR tables (threshold for 1% FPR, best-balanced-accuracy threshold, both chosen on shadows)."""
    families = list(meta.get("families") or sorted(set(frame["family"]) - {POPULATION}))
    described = "; ".join(f"<b>{_e(f)}</b>: {_e(d)} ({meta.get('n_inputs', {}).get(f, '?'):,} inputs)"
                          for f, d in (meta.get("families") or {}).items())
    skipped = "".join(f"<li>family <b>{_e(f)}</b>: {_e(why)}</li>" for f, why in
                      (meta.get("skipped_families") or {}).items())
    skipped += "".join(f"<li>attack <b>{_e(a)}</b>: {_e(why)}</li>" for a, why in
                       (meta.get("skipped_attacks") or {}).items())
    notes = [
        "Each cell: the share of inputs the attack calls members, and the false positives / inputs behind it "
        f"(pooled over the attack's targets: {_e(', '.join(map(str, meta.get('targets', []))))}). Every input "
        f"is a non-member. Population non-members: the realized FPR on the targets' own non-members at the "
        "same threshold.",
        f"Families: {described}.",
        f"Label of an OOD input, for every attack: {_e(meta.get('label_rule', '?'))}. The attacker has no "
        "ground truth for such inputs; with the target's label the gap attack calls every OOD input a member "
        "whenever its threshold admits correct answers, the perturbation attacks measure the stability of the "
        "target's label, and the confidence baselines the target's confidence in its own top class.",
        "Scoring “as run”: the attack exactly as fit on the shadows of the population, applied to the target's "
        "answers on the OOD inputs. “offline”: per-example calibration needs shadows trained on the input; "
        "none trained on an OOD input, so the LiRA offline test (OUT shadows' answers on the same input) is "
        "used, with thresholds from the offline variant's shadow game.",
    ]
    if meta.get("scoring", {}).get("boundary"):
        notes.append(f"boundary: HopSkipJump on the first {meta.get('boundary_inputs')} inputs of each family.")
    return ("<h3>At the threshold chosen on shadows for 1% FPR</h3>" + _ood_table(frame, "0.01", families)
            + "<h3>At the threshold chosen on shadows for best balanced accuracy</h3>"
            + _ood_table(frame, "balanced_accuracy", families)
            + "".join(f'<p class="note">{n}</p>' for n in notes)
            + (f'<p class="note">Not evaluated:</p><ul class="note">{skipped}</ul>' if skipped else ""))


def study_sections(run: RunDir) -> list[tuple[str, str]]:
    """[(title, html)] for the studies present in `run` (empty when none ran). A study file of another schema
    (an older version) gets a section that says which command rewrites it, not a failed report."""
    sections = []
    for title, rel, schema, render, command in (
            (WORST_CASE_TITLE, WORST_CASE, WORST_CASE_SCHEMA, worst_case_html, "worst-case"),
            (OOD_TITLE, OOD, OOD_SCHEMA, ood_html, "ood")):
        if not run.is_file(rel):
            continue
        if run.read_schema(rel).names != schema.names:
            sections.append((title, f'<p class="warn">{_e(run.path(rel))} was written by another version of '
                                    f'shadowfarm: rerun <code>shadowfarm study {command} RUN</code>.</p>'))
            continue
        sections.append((title, render(run.read_table(rel).to_pandas(), _meta(run, rel))))
    return sections


def _text_table(headers: tuple[str, ...], body: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(line[i]) for line in (headers, *body)) for i in range(len(headers))]

    def line(cells) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs)

    return [line(headers), "  ".join("-" * w for w in widths), *(line(cells) for cells in body)]


def format_worst_case(rows: list[dict]) -> str:
    """Plain-text outlier table for a terminal: population beside outliers, counts in the last columns."""
    by = {(r["attack"], r["subset"]): r for r in rows}
    body = []
    for attack in _sorted(pd.DataFrame(rows)):
        cells = [attack, "label-only" if by[(attack, "population")]["label_only"] else "confidence"]
        for subset in ("population", "outliers"):
            r = by[(attack, subset)]
            cells += ["-" if math.isnan(r["auc"]) else f"{r['auc']:.3f}", _pct(r["tpr_at_fpr_0.01"], 1),
                      _pct(r["tpr_at_fpr_0.001"], 1), f"{r['n_members']}/{r['n_nonmembers']}"]
        body.append(tuple(cells))
    headers = ("attack", "type", "AUC", "TPR@1%", "TPR@0.1%", "mem/non", "out AUC", "out TPR@1%", "out TPR@0.1%",
               "out mem/non")
    return "\n".join(_text_table(headers, body) + ["TPR@FPR read off the target's ROC on each subset; mem/non: "
                                                   "members/non-members behind each figure"])


def format_ood(rows: list[dict], *, threshold: str = "0.01") -> str:
    """Plain-text OOD table at one threshold key: FPR (false positives/inputs) per family."""
    frame = pd.DataFrame(rows)
    frame = frame[frame["threshold"] == threshold]
    families = list(dict.fromkeys(f for f in frame["family"] if f != POPULATION))
    by = {(r["attack"], r["family"]): r for r in frame.to_dict("records")}
    body = []
    for attack in _sorted(frame):
        first = by[(attack, POPULATION)]
        cells = [attack, first["scoring"], _pct(first["population_tpr"], 1)]
        for family in [POPULATION, *families]:
            r = by[(attack, family)]
            cells.append(f"{_pct(r['fpr'], 1)} ({r['false_positives']}/{r['n_inputs']})")
        body.append(tuple(cells))
    headers = ("attack", "scoring", "pop. TPR", "pop. FPR", *families)
    label = "best balanced accuracy" if threshold == "balanced_accuracy" else f"{100 * float(threshold):g}% FPR"
    return "\n".join([f"OOD false positives at the threshold chosen on shadows for {label}:"]
                     + _text_table(headers, body))
