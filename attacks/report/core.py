"""The human-readable result of a run (DESIGN §8): a terminal table, `report/roc.png`, `report/index.html`.

Reads only files of the run directory, through `RunDir` so that s3:// runs work: `run.json`,
`models/*/metrics.json`, `attacks/<attack>/metrics.json` and `attacks/<attack>/scores.parquet`.
An attack counts as a result when its metrics.json exists (the attack stage writes it after the scores).

Decisions: the HTML is a single file with inline CSS, no scripts and no network assets; it shows
the ROC plot through the sibling file `roc.png`, so `report/` is the unit to copy or sync. Plots
are drawn on a `matplotlib.figure.Figure` with the Agg canvas, never through pyplot, so making a
report changes no global matplotlib state (backend, open figures) and is safe inside Ray workers.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Sequence

import numpy as np

from attacks.stats.metrics import roc_curve
from farm.errors import RunError
from farm.storage import RunDir

ATTACKS_DIR = "attacks"
REPORT_HTML = "report/index.html"
REPORT_ROC = "report/roc.png"
FPR_LEVELS = (("0.01", "1%"), ("0.001", "0.1%"))  # (metrics.json key, label): the report's TPR@FPR columns
_REQUIRED = ("auc", "label_only", "tpr_at_fpr", "n_members", "n_nonmembers")


def attack_names(run: RunDir) -> list[str]:
    """Names of the attacks with a result (attacks/<name>/metrics.json), alphabetically."""
    return [name for name in run.listdir(ATTACKS_DIR)
            if not name.startswith(".") and run.is_file(f"{ATTACKS_DIR}/{name}/metrics.json")]


def summary_rows(run: RunDir) -> list[dict]:
    """One flat dict per attack result, label-only attacks first, then baselines; each by AUC descending.

    Keys: attack (its folder name under attacks/), label_only, description, settings, target_model_ids,
    seconds; auc, auc_ci ((low, high) or None); for key in "0.01", "0.001": f"tpr_at_fpr_{key}", f"tpr_at_fpr_{key}_ci",
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
        m = run.read_json(f"{ATTACKS_DIR}/{name}/metrics.json")
        missing = [key for key in _REQUIRED if key not in m]
        if missing:
            raise RunError(f"{run.path(f'{ATTACKS_DIR}/{name}/metrics.json')}: missing {', '.join(missing)}; "
                           "rerun the attack")
        requested = m.get("requested_fpr")
        at_shadow = (m.get("at_shadow_thresholds") or {}).get(f"{requested:g}" if requested is not None else "", {})
        row = {"attack": name, "label_only": bool(m["label_only"]),
               "description": m.get("description", ""), "settings": m.get("settings", {}),
               "target_model_ids": m.get("target_model_ids", []), "seconds": m.get("seconds"),
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


def _pair(value) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _zero_fp(row: dict, key: str) -> bool:
    return row[f"false_positives_allowed_{key}"] == 0


def format_table(rows: Sequence[dict]) -> str:
    """Plain-text table of `summary_rows` for a terminal (< 100 columns for attack names up to 24 chars).

    TPR figures that rest on zero allowed false positives carry a `*` and a footnote.
    """
    headers = ("attack", "type", "AUC", "TPR@1%FPR", "TPR@0.1%FPR", "bal. acc", "non-members")
    body = []
    for r in rows:
        tprs = [_pct(r[f"tpr_at_fpr_{key}"]) + ("*" if _zero_fp(r, key) else " ") for key, _ in FPR_LEVELS]
        body.append((r["attack"], "label-only" if r["label_only"] else "confidence", f"{r['auc']:.3f}", *tprs,
                     _pct(r["balanced_accuracy"]), f"{r['n_nonmembers']:,}"))
    widths = [max(len(line[i]) for line in (headers, *body)) for i in range(len(headers))]

    def line(cells) -> str:
        # Text columns (attack, type) align left, numbers right.
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    out = [line(headers), "  ".join("-" * w for w in widths), *(line(cells) for cells in body)]
    if any(_zero_fp(r, key) for r in rows for key, _ in FPR_LEVELS):
        out.append("* rests on zero allowed false positives (FPR x non-members < 1)")
    out.append("bal. acc at the threshold chosen on shadow models; AUC and TPR@FPR pooled over targets")
    return "\n".join(out)


# ---------------------------------------------------------------- ROC plot


def roc_png(curves: Sequence[tuple[str, bool, float, np.ndarray, np.ndarray]], *, n_nonmembers: int) -> bytes:
    """Log-log ROC plot as PNG bytes. curves: (label, label_only, auc, fpr float[K], tpr float[K]).

    Both axes start at max(1e-4, 1 / n_nonmembers), the smallest resolvable nonzero FPR. Segments
    between ROC points are drawn as the straight lines of linear ROC space (randomized thresholds),
    sampled densely so they bend honestly on log axes. Label-only attacks solid, baselines dashed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.4), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    low = max(1e-4, 1 / n_nonmembers)
    grid = np.logspace(math.log10(low), 0, 300)
    ax.plot([low, 1], [low, 1], color="0.55", lw=1, ls=":", label="chance")
    for i, (label, label_only, auc, fpr, tpr) in enumerate(curves):
        on_grid = np.interp(grid, fpr, tpr)
        if len(fpr) > 10_000:  # pooled runs reach millions of points: keep the corners next to each grid point
            index = np.searchsorted(fpr, grid)
            index = np.unique(np.clip(np.r_[0, index - 1, index, len(fpr) - 1], 0, len(fpr) - 1))
            fpr, tpr = fpr[index], tpr[index]
        x, y = np.r_[fpr, grid], np.r_[tpr, on_grid]
        order = np.lexsort((y, x))
        x, y = x[order], y[order]
        keep = (x > 0) & (y > 0)  # zero rates lie at -inf on log axes
        ax.plot(x[keep], y[keep], color=f"C{i % 10}", lw=1.6, ls="-" if label_only else "--",
                label=f"{label} (AUC {auc:.3f})")
    ax.set(xscale="log", yscale="log", xlim=(low, 1), ylim=(low, 1), xlabel="false positive rate",
           ylabel="true positive rate", title="ROC pooled over targets (solid: label-only, dashed: confidence)")
    ax.title.set_fontsize(9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _curves(run: RunDir, rows: Sequence[dict]) -> list:
    curves = []
    for r in rows:
        rel = f"{ATTACKS_DIR}/{r['attack']}/scores.parquet"
        if not run.is_file(rel):
            raise RunError(f"{run.path(rel)}: not found; rerun `shadowfarm attack` for {r['attack']}")
        table = run.read_table(rel, columns=["member", "score"])
        fpr, tpr, _ = roc_curve(table["score"].to_numpy(), table["member"].to_numpy(zero_copy_only=False))
        curves.append((r["attack"], r["label_only"], r["auc"], fpr, tpr))
    return curves


# ---------------------------------------------------------------- HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;margin:0;background:#f6f7f9}
main{max-width:1160px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:32px 0 8px;border-bottom:1px solid #dde1e7;padding-bottom:4px}
.meta{color:#5a6474;margin:0 0 12px}table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{padding:5px 9px;border-bottom:1px solid #e5e8ec;vertical-align:baseline;text-align:left}
th{background:#eef1f5;font-weight:600;font-size:13px}th.group{text-align:center;border-left:2px solid #fff}
td.num,th.num{text-align:right}tbody tr:nth-child(even){background:#fafbfc}
.sub{display:block;color:#6b7585;font-size:12px;white-space:nowrap}
.tag{font-size:12px;padding:1px 6px;border-radius:8px}
.lo{background:#e3f1e6;color:#1f6b33}.conf{background:#f3e9dc;color:#8a4b0f}.warn{color:#b3261e;font-weight:600}
.note{color:#5a6474;font-size:13px}img{max-width:100%;border:1px solid #e5e8ec}
pre{background:#f3f5f8;padding:10px;overflow:auto;font-size:12px}code{font-size:12px}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _ci(pair, fmt) -> str:
    return "" if pair is None else f'<span class="sub">{fmt(pair[0])}–{fmt(pair[1])}</span>'


def _type_tag(row: dict) -> str:
    return '<span class="tag lo">label-only</span>' if row["label_only"] else '<span class="tag conf">confidence</span>'


def _results_html(rows: Sequence[dict]) -> str:
    n_targets = max(len(r["target_model_ids"]) for r in rows)
    head = ('<tr><th rowspan="2">attack</th>'
            f'<th class="group" colspan="4">on the target ROC, pooled over {n_targets} target(s); 95% CI below</th>'
            '<th class="group" colspan="4">at thresholds chosen on shadow models</th>'
            '<th class="group" colspan="2">examples</th></tr><tr>'
            + "".join(f'<th class="num">{h}</th>' for h in (
                "AUC", "TPR @ 1% FPR", "TPR @ 0.1% FPR", "oracle bal.&nbsp;acc", "bal.&nbsp;acc", "advantage",
                "FPR requested → realized", "realized TPR", "members", "non-members")) + "</tr>")
    body, zero_fp = [], False
    for r in rows:
        cells = [f'<td><b>{_e(r["attack"])}</b><span class="sub">{_type_tag(r)}</span></td>',
                 f'<td class="num">{r["auc"]:.3f}{_ci(r["auc_ci"], lambda v: f"{v:.3f}")}</td>']
        for key, _ in FPR_LEVELS:
            mark = "†" if _zero_fp(r, key) else ""
            zero_fp |= bool(mark)
            allowed = r[f"false_positives_allowed_{key}"]
            backing = f"≤&nbsp;{allowed:,} FP of " if allowed is not None else ""
            cells.append(f'<td class="num">{_pct(r[f"tpr_at_fpr_{key}"], 2)}{mark}'
                         f'{_ci(r[f"tpr_at_fpr_{key}_ci"], lambda v: _pct(v, 2))}'
                         f'<span class="sub">{backing}{r["n_nonmembers"]:,}</span></td>')
        over = (r["realized_fpr"] is not None and r["requested_fpr"] is not None
                and r["realized_fpr"] > r["requested_fpr"])
        cells += [f'<td class="num">{_pct(r["oracle_balanced_accuracy"])}</td>',
                  f'<td class="num">{_pct(r["balanced_accuracy"])}</td>',
                  f'<td class="num">{_num(r["advantage"], 3)}</td>',
                  f'<td class="num">{_pct(r["requested_fpr"], 2)} → '
                  f'<span class="{"warn" if over else ""}">{_pct(r["realized_fpr"], 2)}</span></td>',
                  f'<td class="num">{_pct(r["realized_tpr"], 2)}</td>',
                  f'<td class="num">{r["n_members"]:,}</td>', f'<td class="num">{r["n_nonmembers"]:,}</td>']
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = ["TPR @ FPR: the largest TPR whose FPR on the target stays within the level; below it, its 95% "
             "bootstrap interval and “≤ k FP of n”: the false positives the level allows among the n "
             "non-members it is measured on.",
             "Oracle balanced accuracy picks its threshold with the target's own membership: an upper bound, "
             'not an attack. A realized FPR in <span class="warn">red</span> exceeds the requested FPR: the '
             "threshold chosen on shadows did not transfer exactly to the target."]
    if zero_fp:
        notes.append("† rests on zero allowed false positives (FPR × non-members &lt; 1): the figure counts the "
                     "members scored above every non-member.")
    return (f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
            + "".join(f'<p class="note">{n}</p>' for n in notes))


def _attacks_html(rows: Sequence[dict]) -> str:
    body = "".join(
        f"<tr><td><b>{_e(r['attack'])}</b><span class=\"sub\">{_type_tag(r)}</span></td>"
        f"<td>{_e(r['description'])}</td><td><code>{_e(json.dumps(r['settings'], sort_keys=True))}</code></td>"
        f"<td>{_e(', '.join(map(str, r['target_model_ids'])))}</td>"
        f'<td class="num">{_num(r["seconds"], 1)}</td></tr>' for r in rows)
    return ("<table><thead><tr><th>attack</th><th>method</th><th>settings</th><th>target models</th>"
            f'<th class="num">seconds</th></tr></thead><tbody>{body}</tbody></table>')


def model_stats(run: RunDir) -> dict[str, np.ndarray]:
    """Per-model figures from models/*/metrics.json: train/test accuracy, gap (train - test), losses, seconds."""
    records = [run.read_json(f"models/{d}/metrics.json") for d in run.listdir("models")
               if run.is_file(f"models/{d}/metrics.json")]
    keys = ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "seconds")
    stats = {k: np.array([rec[k] for rec in records if rec.get(k) is not None], dtype=float) for k in keys}
    paired = [rec for rec in records if rec.get("train_accuracy") is not None and rec.get("test_accuracy") is not None]
    stats["gap"] = np.array([rec["train_accuracy"] - rec["test_accuracy"] for rec in paired], dtype=float)
    return stats


def _models_html(stats: dict[str, np.ndarray]) -> str:
    labels = (("train_accuracy", "train accuracy", True), ("test_accuracy", "test accuracy", True),
              ("gap", "train − test gap", True), ("train_loss", "train loss", False),
              ("test_loss", "test loss", False), ("seconds", "training seconds", False))
    body = []
    for key, label, pct in labels:
        v = stats[key]
        if not len(v):
            continue
        f = (lambda x: _pct(x, 2)) if pct else (lambda x: f"{x:.3f}")
        std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        body.append(f'<tr><td>{label}</td><td class="num">{f(v.mean())} ± {f(std)}</td>'
                    f'<td class="num">{f(v.min())}</td><td class="num">{f(v.max())}</td>'
                    f'<td class="num">{len(v)}</td></tr>')
    if not body:
        return '<p class="note">No model metrics found under models/.</p>'
    return ('<table><thead><tr><th></th><th class="num">mean ± std</th><th class="num">min</th>'
            f'<th class="num">max</th><th class="num">models</th></tr></thead><tbody>{"".join(body)}</tbody></table>'
            '<p class="note">Standard deviation over models (ddof = 1). The gap is per model, then averaged.</p>')


def _provenance_html(info: dict, uri: str) -> str:
    items = [("run", uri), ("config hash", info.get("config_hash")), ("git sha", info.get("git_sha") or "not recorded"),
             ("created", info.get("created")), ("queries", info.get("n_queries"))]
    items += [(name, version) for name, version in sorted((info.get("versions") or {}).items())]
    body = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in items)
    config = json.dumps(info.get("config", {}), indent=2, sort_keys=True)
    return f"<table><tbody>{body}</tbody></table><h3>Resolved config</h3><pre>{_e(config)}</pre>"


def write_report(run: RunDir, *, extra_sections: Sequence[tuple[str, str]] = ()) -> str:
    """Write report/roc.png and report/index.html of `run`; returns the path of index.html.

    extra_sections: (title, html) pairs placed before Provenance; the title is escaped, the html is
    inserted as given (callers escape their own text). RunError without run.json or attack results.
    """
    if not run.is_file("run.json"):
        raise RunError(f"{run.path('run.json')}: not found; is {run.uri!r} a shadowfarm run?")
    info = run.read_json("run.json")
    rows = summary_rows(run)
    run.write_bytes(REPORT_ROC, roc_png(_curves(run, rows), n_nonmembers=max(r["n_nonmembers"] for r in rows)))
    name = run.root.rsplit("/", 1)[-1]
    config, dataset = info.get("config", {}), info.get("dataset", {})
    membership, model = config.get("membership", {}), config.get("model", {})
    shape = "×".join(map(str, dataset.get("shape", [])))
    meta = (f"dataset <b>{_e(dataset.get('name', '?'))}</b> ({_e(dataset.get('kind', ''))} {_e(shape)}, "
            f"{_e(dataset.get('n_examples', '?'))} examples, {_e(dataset.get('num_classes', '?'))} classes) · "
            f"model <b>{_e(model.get('name', '?'))}</b> · {_e(membership.get('n_models', '?'))} models, "
            f"{_e(membership.get('mode', '?'))} membership, p_in {_e(membership.get('p_in', '?'))} · "
            f"{_e(info.get('n_queries', '?'))} label-only queries per example")
    sections = [("Results", _results_html(rows)),
                ("ROC curves", '<img src="roc.png" alt="log-log ROC curves of every attack" width="768">'),
                ("Attacks", _attacks_html(rows)), ("Models", _models_html(model_stats(run))),
                *((_e(title), body) for title, body in extra_sections),
                ("Provenance", _provenance_html(info, run.uri))]
    page = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>shadowfarm report: {_e(name)} ({_e(dataset.get('name', '?'))})</title>"
            f"<style>{CSS}</style></head><body><main>"
            f"<h1>Membership inference audit: {_e(name)}</h1><p class=\"meta\">{meta}</p>"
            + "".join(f"<h2>{title}</h2>\n{body}\n" for title, body in sections)
            + "</main></body></html>\n")
    run.write_text(REPORT_HTML, page)
    return run.path(REPORT_HTML)
