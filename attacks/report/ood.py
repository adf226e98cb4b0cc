"""The report section and terminal tables of the OOD study (`attacks.studies.ood.study`, studies/ood.parquet):
each attack's false positives on out-of-distribution non-members, per input family."""

from __future__ import annotations

import math

import pandas as pd

from attacks.artifacts import OOD, OOD_SCHEMA, POPULATION
from attacks.registry import ATTACKS
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

TITLE = "Out-of-distribution non-members"
LABEL_NOTE = (
    "The attacker has no ground truth for such inputs; with the target's label the gap attack calls every OOD "
    "input a member whenever its threshold admits correct answers, the perturbation attacks measure the "
    "stability of the target's label, and the confidence baselines the target's confidence in its own top class.")
SCORING_NOTE = (
    "Scoring “as run”: the attack exactly as fit on the shadows of the population, applied to the target's "
    "answers on the OOD inputs. “offline”: per-example calibration needs shadows trained on the input; none "
    "trained on an OOD input, so the LiRA offline test (OUT shadows' answers on the same input) is used, with "
    "thresholds from the offline variant's shadow game.")


def ood_section(run: RunDir) -> Section | None:
    return study_section(run, title=TITLE, rel=OOD, schema=OOD_SCHEMA, command="ood", render=ood_html)


def _ood_row(attack: str, by: dict, families: list[str]) -> str:
    first = by[(attack, POPULATION)]
    none = math.isinf(first["threshold_value"]) and first["threshold_value"] > 0
    behind = "threshold +∞: no member" if none else f"of {first['n_members']:,}"
    cells = [f'<td><b>{escape(attack)}</b><span class="sub">{type_tag(first["label_only"], attack)}</span></td>',
             f'<td>{escape(first["scoring"])}</td>',
             f'<td class="num">{pct(first["population_tpr"], 1)}<span class="sub">{behind}</span></td>']
    for family in [POPULATION, *families]:
        r = by.get((attack, family))
        cells.append('<td class="num">-</td>' if r is None else
                     f'<td class="num">{pct(r["fpr"], 1)}<span class="sub">{r["false_positives"]:,} / '
                     f'{r["n_inputs"]:,}</span></td>')
    return "<tr>" + "".join(cells) + "</tr>"


def _ood_table(frame: pd.DataFrame, threshold: str, families: list[str]) -> str:
    rows = frame[frame["threshold"] == threshold]
    by = {(r["attack"], r["family"]): r for r in rows.to_dict("records")}
    head = ('<tr><th>attack</th><th>scoring</th><th class="num">TPR on population members</th>'
            '<th class="num">population non-members</th>'
            + "".join(f'<th class="num">{escape(f)}</th>' for f in families) + "</tr>")
    body = "".join(_ood_row(attack, by, families) for attack in label_only_first(rows))
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def _notes(meta: dict) -> list[str]:
    described = "; ".join(f"<b>{escape(f)}</b>: {escape(d)} ({meta.get('n_inputs', {}).get(f, '?'):,} inputs)"
                          for f, d in (meta.get("families") or {}).items())
    notes = [
        "Each cell: the share of inputs the attack calls members, and the false positives / inputs behind it "
        f"(pooled over the attack's targets: {escape(', '.join(map(str, meta.get('targets', []))))}). Every input "
        f"is a non-member. Population non-members: the realized FPR on the targets' own non-members at the "
        "same threshold.",
        f"Families: {described}.",
        f"Label of an OOD input, for every attack: {escape(meta.get('label_rule', '?'))}. " + LABEL_NOTE,
        SCORING_NOTE,
    ]
    for name in meta.get("scoring", {}):
        ood = ATTACKS[name].ood if name in ATTACKS else None
        if meta["scoring"][name] and ood is not None and ood.limited:
            notes.append(f"{name}: {ood.limited} on the first {meta.get('boundary_inputs')} inputs of each family.")
    return notes


def _skipped(meta: dict) -> str:
    skipped = "".join(f"<li>family <b>{escape(f)}</b>: {escape(why)}</li>" for f, why in
                      (meta.get("skipped_families") or {}).items())
    skipped += "".join(f"<li>attack <b>{escape(a)}</b>: {escape(why)}</li>" for a, why in
                       (meta.get("skipped_attacks") or {}).items())
    return f'<p class="note">Not evaluated:</p><ul class="note">{skipped}</ul>' if skipped else ""


def ood_html(frame: pd.DataFrame, meta: dict) -> str:
    """Two FPR tables (threshold for 1% FPR, best-balanced-accuracy threshold, both chosen on shadows)."""
    families = list(meta.get("families") or sorted(set(frame["family"]) - {POPULATION}))
    return ("<h3>At the threshold chosen on shadows for 1% FPR</h3>" + _ood_table(frame, "0.01", families)
            + "<h3>At the threshold chosen on shadows for best balanced accuracy</h3>"
            + _ood_table(frame, "balanced_accuracy", families) + notes_html(_notes(meta)) + _skipped(meta))


def format_ood(rows: list[dict], *, threshold: str = "0.01") -> str:
    """Plain-text OOD table at one threshold key: FPR (false positives/inputs) per family."""
    frame = pd.DataFrame(rows)
    frame = frame[frame["threshold"] == threshold]
    families = list(dict.fromkeys(f for f in frame["family"] if f != POPULATION))
    by = {(r["attack"], r["family"]): r for r in frame.to_dict("records")}
    body = []
    for attack in label_only_first(frame):
        first = by[(attack, POPULATION)]
        cells = [attack, first["scoring"], pct(first["population_tpr"], 1)]
        for family in [POPULATION, *families]:
            r = by[(attack, family)]
            cells.append(f"{pct(r['fpr'], 1)} ({r['false_positives']}/{r['n_inputs']})")
        body.append(tuple(cells))
    headers = ("attack", "scoring", "pop. TPR", "pop. FPR", *families)
    label = "best balanced accuracy" if threshold == "balanced_accuracy" else f"{100 * float(threshold):g}% FPR"
    return "\n".join([f"OOD false positives at the threshold chosen on shadows for {label}:"]
                     + text_table(headers, body))
