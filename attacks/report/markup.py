"""What every part of the report shares: the page's CSS, escaping, figures formatted as text, the type tag,
plain-text tables for the terminal, and the section of a study file (or a note to rerun its study).

All text from a run is escaped here (`escape`) before it reaches the HTML; the CSS classes named by the
sections (`num`, `sub`, `tag lo`, `tag conf`, `tag wb`, `warn`, `note`, `group`) are defined in `CSS`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence

import pandas as pd
import pyarrow as pa

from attacks.artifacts import study_meta
from attacks.registry import attack_type
from farm.content import recorded_problem
from farm.storage import RunDir

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
.lo{background:#e3f1e6;color:#1f6b33}.conf{background:#f3e9dc;color:#8a4b0f}.wb{background:#e6e9f7;color:#2b3a8a}.warn{color:#b3261e;font-weight:600}
.note{color:#5a6474;font-size:13px}img{max-width:100%;border:1px solid #e5e8ec}
pre{background:#f3f5f8;padding:10px;overflow:auto;font-size:12px}code{font-size:12px}
"""

Section = tuple[str, str]  # (title, html): the title is escaped by the page, the html is inserted as given


def escape(value) -> str:
    return html.escape(str(value))


def pct(value: float | None, digits: int = 1) -> str:
    """A rate as a percentage; "-" for a missing figure (None or NaN)."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.{digits}f}%"


def num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


_TAG_CLASS = {"label-only": "lo", "confidence": "conf", "white-box": "wb"}
TYPE_ORDER = tuple(_TAG_CLASS)  # how sections order the attack types


def type_tag(label_only: bool, attack: str | None = None) -> str:
    """The type tag of a result: label-only, confidence or (a registered white-box `attack`) white-box."""
    kind = attack_type(attack, label_only) if attack is not None else "label-only" if label_only else "confidence"
    return f'<span class="tag {_TAG_CLASS[kind]}">{kind}</span>'


def label_only_first(frame: pd.DataFrame) -> list[str]:
    """The attacks of a study's rows (columns attack, label_only): label-only first, then the confidence
    baselines, then the white-box ones; each alphabetically."""
    first = frame.drop_duplicates("attack")
    return [r.attack for r in sorted(first.itertuples(),
                                     key=lambda r: (TYPE_ORDER.index(attack_type(r.attack, r.label_only)), r.attack))]


def notes_html(notes: Sequence[str]) -> str:
    return "".join(f'<p class="note">{n}</p>' for n in notes)


def text_table(headers: Sequence[str], body: Sequence[Sequence[str]], *, left: int = 2) -> list[str]:
    """Lines of a plain-text table: the first `left` columns (text) align left, the others (numbers) right."""
    widths = [max(len(line[i]) for line in (headers, *body)) for i in range(len(headers))]

    def line(cells) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in pairs)

    return [line(headers), "  ".join("-" * w for w in widths), *(line(cells) for cells in body)]


def study_section(run: RunDir, *, title: str, rel: str, schema: pa.Schema, command: str,
                  render: Callable[[pd.DataFrame, dict], str]) -> Section | None:
    """(title, render(frame, metadata)) of the study file `rel`; None when the study did not run. A file of
    another schema (an older version), or one changed after it was written (its sha256 record), gets a section that
    says which command rewrites it, not a failed report."""
    if not run.is_file(rel):
        return None
    if problem := recorded_problem(run, rel):
        return title, f'<p class="warn">{escape(problem)}: rerun <code>shadowfarm study {command} RUN</code>.</p>'
    if run.read_schema(rel).names != schema.names:
        return title, (f'<p class="warn">{escape(run.path(rel))} was written by another version of '
                       f'shadowfarm: rerun <code>shadowfarm study {command} RUN</code>.</p>')
    return title, render(run.read_table(rel).to_pandas(), study_meta(run, rel))
