"""The report section and terminal tables of the query-budget study (`attacks.studies.queries`,
studies/queries.parquet): AUC and TPR at 1% / 0.1% FPR against the queries per example each setting sends, one
line per attack on a log-x plot (`report/queries.png`), and the best attack at each budget."""

from __future__ import annotations

import json

import pandas as pd

from attacks.artifacts import QUERIES, QUERIES_SCHEMA
from attacks.report.figure import new_figure, png_bytes
from attacks.report.markup import Section, escape, notes_html, pct, study_section, text_table
from attacks.studies.queries import RULE, best_at_budgets
from farm.storage import RunDir

TITLE = "Query budget: the frontier"
PNG = "queries.png"
NOTES = (
    "Queries per example: what the setting sends the target (noise copies kept; the attack's own crafted or walk "
    "queries; HopSkipJump's mean; the run's queries of the kinds the attack reads). AUC and TPR @ FPR are read off "
    "the pooled targets' ROC, each setting's game replayed as the attack stage plays it (thresholds from the "
    "shadow game only). 95% CI: percentile bootstrap of TPR at 1% FPR over the pooled examples (members and "
    "non-members resampled apart); intervals that overlap do not rank two settings.",
)


def _setting(row: dict) -> str:
    setting = json.loads(row["setting"])
    return ", ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in setting.items()) or "as run"


def _interval(row: dict) -> str:
    """The 95% bootstrap interval of TPR at 1% FPR, "-" when the study ran without --bootstrap."""
    low, high = row.get("tpr_at_fpr_ci_low_0.01"), row.get("tpr_at_fpr_ci_high_0.01")
    missing = low is None or high is None or low != low or high != high  # None, or NaN from a parquet null
    return "-" if missing else f"{pct(low, 1)}-{pct(high, 1)}"


def _cells(row: dict) -> tuple[str, ...]:
    return (row["attack"], _setting(row), f"{row['queries_per_example']:g}", f"{row['auc']:.3f}",
            pct(row["tpr_at_fpr_0.01"], 1), _interval(row), pct(row["tpr_at_fpr_0.001"], 1),
            f"{row['n_members']}/{row['n_nonmembers']}")


HEADERS = ("attack", "setting", "queries", "AUC", "TPR@1%", "(95% CI)", "TPR@0.1%", "mem/non")
BEST_HEADERS = ("budget", "best attack", "setting", "queries", "AUC", "TPR@1%", "(95% CI)", "TPR@0.1%")


def _best_cells(entry: dict) -> tuple[str, ...]:
    row = entry["row"]
    if row is None:
        return (f"≤ {entry['budget']}", *["-"] * 7)
    return (f"≤ {entry['budget']}", *_cells(row)[:7])


def _ordered(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r["attack"], r["queries_per_example"]))


def format_queries(rows: list[dict]) -> str:
    """The frontier and the best attack at each budget, as plain-text tables for a terminal."""
    frontier = text_table(HEADERS, [_cells(r) for r in _ordered(rows)])
    best = text_table(BEST_HEADERS, [_best_cells(e) for e in best_at_budgets(rows)])
    return "\n".join([*frontier, "TPR@FPR read off the pooled targets' ROC; (95% CI): bootstrap interval of TPR@1%; "
                      "mem/non: members/non-members", "", *best, RULE])


def frontier_png(rows: list[dict]) -> bytes:
    """Queries per example (log x) against TPR at 1% FPR and AUC, one line per attack."""
    fig = new_figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for name in sorted({r["attack"] for r in rows}):
        points = sorted((r for r in rows if r["attack"] == name), key=lambda r: r["queries_per_example"])
        xs = [r["queries_per_example"] for r in points]
        for ax, key in zip(axes, ("tpr_at_fpr_0.01", "auc"), strict=True):
            ax.plot(xs, [r[key] for r in points], marker="o", label=name)
    for ax, title in zip(axes, ("TPR at 1% FPR", "AUC"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("queries per example sent to the target")
        ax.set_title(f"{title} vs queries per example")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig, dpi=110)


def _table_html(headers: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    rows = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>" for cells in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def queries_html(run: RunDir, frame: pd.DataFrame, meta: dict) -> str:
    rows = frame.to_dict("records")
    run.write_bytes(f"report/{PNG}", frontier_png(rows))
    return (_table_html(BEST_HEADERS, [_best_cells(e) for e in best_at_budgets(rows)])
            + notes_html([escape(RULE) + "."])
            + f'<p><img src="{PNG}" alt="query-budget frontier" style="max-width:100%"></p>'
            + _table_html(HEADERS, [_cells(r) for r in _ordered(rows)]) + notes_html(NOTES))


def queries_section(run: RunDir) -> Section | None:
    return study_section(run, title=TITLE, rel=QUERIES, schema=QUERIES_SCHEMA, command="queries",
                         render=lambda frame, meta: queries_html(run, frame, meta))
