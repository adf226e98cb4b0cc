"""The report page of a run (DESIGN §8): `write_report(run)` writes `report/index.html` and `report/roc.png`.

Sections, in order: Results, ROC curves, Attacks, Models (the attack stage's results, `attacks.report.results`),
then every section of `attacks.report.sections.SECTIONS` that has something to show (the studies: calibration,
worst case, OOD, defenses), then Provenance. Every command that writes the report calls `write_report(run)`
alone, so no command can drop a study's section.

Decisions: the HTML is a single file with inline CSS, no scripts and no network assets; it shows the figures
through sibling files (`roc.png`, a study's PNG), so `report/` is the unit to copy or sync.
"""

from __future__ import annotations

from attacks.report.core import REPORT_HTML, REPORT_ROC, model_stats, roc_curves, roc_png, summary_rows
from attacks.report.markup import CSS, Section, escape
from attacks.report.results import attacks_html, models_html, provenance_html, results_html
from attacks.report.sections import study_sections
from farm.errors import RunError
from farm.storage import RunDir

ROC_IMG = '<img src="roc.png" alt="log-log ROC curves of every attack" width="768">'


def write_report(run: RunDir) -> str:
    """Write report/roc.png and report/index.html of `run` with every section; returns the path of index.html.

    RunError without run.json or attack results.
    """
    if not run.is_file("run.json"):
        raise RunError(f"{run.path('run.json')}: not found; is {run.uri!r} a shadowfarm run?")
    info = run.read_json("run.json")
    rows = summary_rows(run)
    run.write_bytes(REPORT_ROC, roc_png(roc_curves(run, rows), n_nonmembers=max(r["n_nonmembers"] for r in rows)))
    sections = [("Results", results_html(rows)), ("ROC curves", ROC_IMG), ("Attacks", attacks_html(rows)),
                ("Models", models_html(model_stats(run))), *study_sections(run),
                ("Provenance", provenance_html(info, run.uri))]
    run.write_text(REPORT_HTML, page_html(run.root.rsplit("/", 1)[-1], info, sections))
    return run.path(REPORT_HTML)


def page_html(name: str, info: dict, sections: list[Section]) -> str:
    """The whole page: a header from run.json (`info`), then each section under its escaped title."""
    dataset = info.get("dataset", {})
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>shadowfarm report: {escape(name)} ({escape(dataset.get('name', '?'))})</title>"
            f"<style>{CSS}</style></head><body><main>"
            f"<h1>Membership inference audit: {escape(name)}</h1><p class=\"meta\">{_meta(info)}</p>"
            + "".join(f"<h2>{escape(title)}</h2>\n{body}\n" for title, body in sections)
            + "</main></body></html>\n")


def _meta(info: dict) -> str:
    config, dataset = info.get("config", {}), info.get("dataset", {})
    membership, model = config.get("membership", {}), config.get("model", {})
    shape = "×".join(map(str, dataset.get("shape", [])))
    return (f"dataset <b>{escape(dataset.get('name', '?'))}</b> ({escape(dataset.get('kind', ''))} {escape(shape)}, "
            f"{escape(dataset.get('n_examples', '?'))} examples, {escape(dataset.get('num_classes', '?'))} classes) · "
            f"model <b>{escape(model.get('name', '?'))}</b> · {escape(membership.get('n_models', '?'))} models, "
            f"{escape(membership.get('mode', '?'))} membership, p_in {escape(membership.get('p_in', '?'))} · "
            f"{escape(info.get('n_queries', '?'))} label-only queries per example")
