"""The HTML of the run's own report sections: results, attacks, models and provenance.

Each function takes what `attacks.report.core` read from the run (`summary_rows`, `model_stats`, run.json)
and returns the html of one section for `attacks.report.page.write_report`. All text is escaped here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from attacks.report.core import FPR_LEVELS, fallback_line, format_table, precision_line, zero_fp
from attacks.report.markup import escape, notes_html, num, pct, type_tag


def _ci(pair, fmt) -> str:
    return "" if pair is None else f'<span class="sub">{fmt(pair[0])}–{fmt(pair[1])}</span>'


def results_html(rows: Sequence[dict]) -> str:
    n_targets = max(len(r["target_model_ids"]) for r in rows)
    head = ('<tr><th rowspan="2">attack</th>'
            f'<th class="group" colspan="4">on the target ROC, pooled over {n_targets} target(s); 95% CI below</th>'
            '<th class="group" colspan="4">at thresholds chosen on shadow models</th>'
            '<th class="group" colspan="2">examples</th></tr><tr>'
            + "".join(f'<th class="num">{h}</th>' for h in (
                "AUC", "TPR @ 1% FPR", "TPR @ 0.1% FPR", "oracle bal.&nbsp;acc", "bal.&nbsp;acc", "advantage",
                "FPR requested → realized", "realized TPR", "members", "non-members")) + "</tr>")
    body, any_zero_fp = [], False
    for r in rows:
        tag = type_tag(r["label_only"], r["attack"])
        cells = [f'<td><b>{escape(r["attack"])}</b><span class="sub">{tag}</span></td>',
                 f'<td class="num">{r["auc"]:.3f}{_ci(r["auc_ci"], lambda v: f"{v:.3f}")}</td>']
        for key, _ in FPR_LEVELS:
            mark = "†" if zero_fp(r, key) else ""
            any_zero_fp |= bool(mark)
            allowed = r[f"false_positives_allowed_{key}"]
            backing = f"≤&nbsp;{allowed:,} FP of " if allowed is not None else ""
            cells.append(f'<td class="num">{pct(r[f"tpr_at_fpr_{key}"], 2)}{mark}'
                         f'{_ci(r[f"tpr_at_fpr_{key}_ci"], lambda v: pct(v, 2))}'
                         f'<span class="sub">{backing}{r["n_nonmembers"]:,}</span></td>')
        over = (r["realized_fpr"] is not None and r["requested_fpr"] is not None
                and r["realized_fpr"] > r["requested_fpr"])
        cells += [f'<td class="num">{pct(r["oracle_balanced_accuracy"])}</td>',
                  f'<td class="num">{pct(r["balanced_accuracy"])}</td>',
                  f'<td class="num">{num(r["advantage"], 3)}</td>',
                  f'<td class="num">{pct(r["requested_fpr"], 2)} → '
                  f'<span class="{"warn" if over else ""}">{pct(r["realized_fpr"], 2)}</span></td>',
                  f'<td class="num">{pct(r["realized_tpr"], 2)}</td>',
                  f'<td class="num">{r["n_members"]:,}</td>', f'<td class="num">{r["n_nonmembers"]:,}</td>']
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = ["TPR @ FPR: the largest TPR whose FPR on the target stays within the level; below it, its 95% "
             "bootstrap interval and “≤ k FP of n”: the false positives the level allows among the n "
             "non-members it is measured on.",
             "Oracle balanced accuracy picks its threshold with the target's own membership: an upper bound, "
             'not an attack. A realized FPR in <span class="warn">red</span> exceeds the requested FPR: the '
             "threshold chosen on shadows did not transfer exactly to the target."]
    notes.append(_mode_note(rows))
    notes += [escape(precision_line(r)) + " (promised: the flagged examples' mean calibrated P(member), fit on "
              "shadows; realized: the members' share of them on the target(s))"
              for r in rows if r.get("precision_check")]
    notes += [escape(line) for line in format_table(rows).splitlines()
              if line.startswith("fidelity:") or "known non-members" in line]
    notes += [escape(fallback_line(r["attack"], r["calibration_fallback"])) for r in rows
              if r.get("calibration_fallback")]
    if any_zero_fp:
        notes.append("† rests on zero allowed false positives (FPR × non-members &lt; 1): the figure counts the "
                     "members scored above every non-member.")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>" + notes_html(notes)


def _mode_note(rows: Sequence[dict]) -> str:
    """Which membership mode the figures come from and what the challenge set is."""
    modes = sorted({r["membership_mode"] for r in rows})
    if modes != ["disjoint"]:
        return ("Membership mode: <b>" + escape(", ".join(modes)) + "</b> (LiRA's design): every model trains on a "
                "random half of the population; the challenge set is the whole population, and thresholds and "
                "attack models come from the shadows' IN/OUT rows.")
    auto = sorted(r["attack"] for r in rows if r.get("auto_settings"))
    chosen = (f" Chosen for this mode: the offline variant of {escape(', '.join(auto))} (no shadow is IN on a "
              "challenge example, so the per-example test is one-sided against the OUT shadows).") if auto else ""
    pool = rows[0].get("n_shadow_pool_examples")
    return ("Membership mode: <b>disjoint</b> (Shokri et al.): the challenge set is the <b>target pool</b> "
            f"({rows[0]['n_members'] + rows[0]['n_nonmembers']:,} rows over the targets), the examples the targets "
            f"may train on; the shadows trained on the shadow pool ({pool if pool is not None else '?'} examples) "
            "only, and thresholds and attack models come from the shadow game on the shadow pool." + chosen)


def attacks_html(rows: Sequence[dict]) -> str:
    body = "".join(
        f"<tr><td><b>{escape(r['attack'])}</b><span class=\"sub\">{type_tag(r['label_only'], r['attack'])}</span></td>"
        f"<td>{escape(r['description'])}</td><td><code>{escape(json.dumps(r['settings'], sort_keys=True))}</code></td>"
        f"<td>{escape(', '.join(map(str, r['target_model_ids'])))}</td>"
        f'<td class="num">{_queries(r.get("queries_per_example"), r.get("run_queries_per_example"))}</td>'
        f'<td class="num">{num(r["seconds"], 1)}</td></tr>' for r in rows)
    return ("<table><thead><tr><th>attack</th><th>method</th><th>settings</th><th>target models</th>"
            '<th class="num">queries per example</th>'
            f'<th class="num">seconds</th></tr></thead><tbody>{body}</tbody></table>')


def _queries(count: int | None, run_count: int | None = None) -> str:
    """The queries an attack sends per example of its own, or that it reads the run's query set (and its size)."""
    if count is not None:
        return f"{count:,}"
    return "the run's query set" + ("" if run_count is None else f" ({run_count:,})")


def models_html(stats: dict[str, np.ndarray]) -> str:
    labels = (("train_accuracy", "train accuracy", True), ("test_accuracy", "test accuracy", True),
              ("gap", "train − test gap", True), ("train_loss", "train loss", False),
              ("test_loss", "test loss", False), ("seconds", "training seconds", False))
    body = []
    for key, label, is_rate in labels:
        v = stats[key]
        if not len(v):
            continue
        f = (lambda x: pct(x, 2)) if is_rate else (lambda x: f"{x:.3f}")
        std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        body.append(f'<tr><td>{label}</td><td class="num">{f(v.mean())} ± {f(std)}</td>'
                    f'<td class="num">{f(v.min())}</td><td class="num">{f(v.max())}</td>'
                    f'<td class="num">{len(v)}</td></tr>')
    if not body:
        return '<p class="note">No model metrics found under models/.</p>'
    return ('<table><thead><tr><th></th><th class="num">mean ± std</th><th class="num">min</th>'
            f'<th class="num">max</th><th class="num">models</th></tr></thead><tbody>{"".join(body)}</tbody></table>'
            '<p class="note">Standard deviation over models (ddof = 1). The gap is per model, then averaged.</p>')


def provenance_html(info: dict, uri: str) -> str:
    items = [("run", uri), ("config hash", info.get("config_hash")), ("git sha", info.get("git_sha") or "not recorded"),
             ("created", info.get("created")), ("queries", info.get("n_queries"))]
    items += [(name, version) for name, version in sorted((info.get("versions") or {}).items())]
    body = "".join(f"<tr><th>{escape(k)}</th><td><code>{escape(v)}</code></td></tr>" for k, v in items)
    config = json.dumps(info.get("config", {}), indent=2, sort_keys=True)
    return f"<table><tbody>{body}</tbody></table><h3>Resolved config</h3><pre>{escape(config)}</pre>"
