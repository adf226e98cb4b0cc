"""The defense matrix for people: a terminal table, `defenses.png` and an HTML section for the report.

`defense_section(matrix, png_name)` returns the (title, html) pair that `attacks.report.core.write_report` takes in
`extra_sections`; the PNG is written next to the report's index.html by `write_study_report`. Plots are
drawn on a `matplotlib.figure.Figure` with the Agg canvas, never through pyplot (as in attacks.report.core).

The figure: AUC of every attack against weight-decay strength (undefended farm at 0), test and train
accuracy against the same axis, and a heat map of AUC for every (training + output defense, attack).
"""

from __future__ import annotations

import html
import io
import math

import numpy as np
import pandas as pd
import pyarrow as pa

from farm.storage import RunDir

PNG = "defenses.png"
TREND = "weight_decay"  # the training defense whose strengths the trend panels sweep
_SHORT = {"augmentation": "augment", "calibrated": "calib", "transfer": "transfer",
          "confidence_classifier": "conf_clf", "lira_confidence": "lira_conf"}


def _frame(matrix: pa.Table | pd.DataFrame) -> pd.DataFrame:
    return matrix.to_pandas() if isinstance(matrix, pa.Table) else matrix


def attack_order(frame: pd.DataFrame) -> list[str]:
    """Label-only attacks first, then the confidence baselines; each in order of first appearance."""
    seen = dict.fromkeys(frame["attack"])
    only = set(frame.loc[frame["label_only"], "attack"])
    return [a for a in seen if a in only] + [a for a in seen if a not in only]


def defense_order(frame: pd.DataFrame) -> list[str]:
    """Training settings in study order, each followed by its output defenses."""
    return list(dict.fromkeys(frame["defense"]))


def _pivot(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    return frame.pivot_table(index="defense", columns="attack", values=column, aggfunc="first", sort=False) \
        .reindex(index=defense_order(frame), columns=attack_order(frame))


def _per_defense(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.groupby("defense", sort=False)[["test_accuracy", "train_accuracy", "epsilon"]].first() \
        .reindex(defense_order(frame))


def format_matrix(matrix) -> str:
    """Plain-text AUC matrix: one line per defense, test accuracy, ε, then AUC of every attack."""
    frame = _frame(matrix)
    auc, per = _pivot(frame, "auc"), _per_defense(frame)
    attacks = list(auc.columns)
    headers = ["defense", "test acc", "ε", *(_SHORT.get(a, a) for a in attacks)]
    body = []
    for defense in auc.index:
        eps, accuracy = per.loc[defense, "epsilon"], per.loc[defense, "test_accuracy"]
        body.append([defense, f"{100 * accuracy:.1f}%", "-" if math.isnan(eps) else f"{eps:.2f}",
                     *("-" if math.isnan(v) else f"{v:.3f}" for v in auc.loc[defense])])
    widths = [max(len(line[i]) for line in (headers, *body)) for i in range(len(headers))]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    only = [a for a in attacks if frame.loc[frame["attack"] == a, "label_only"].iloc[0]]
    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, body),
                      f"AUC on the target(s); label-only: {', '.join(only)}; the rest read confidences. "
                      "Test accuracy: mean over the farm's models."])


def _trend(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the weight-decay sweep (with the undefended farm at strength 0), output defense none."""
    rows = frame[(frame["output_defense"] == "none") & frame["training_defense"].isin([TREND, "none"])].copy()
    rows["strength"] = rows["strength"].fillna(0.0)
    return rows.sort_values("strength")


def matrix_png(matrix) -> bytes:
    """PNG: AUC and accuracy against weight decay (top), AUC heat map of the whole matrix (bottom)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frame = _frame(matrix)
    auc = _pivot(frame, "auc")
    fig = Figure(figsize=(11, 5.2 + 0.28 * len(auc)), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 2, height_ratios=[4.2, 1.2 + 0.28 * len(auc)])
    trend = _trend(frame)
    strengths = sorted(trend["strength"].unique())
    ax_auc, ax_acc = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    if len(strengths) > 1:
        positive = [s for s in strengths if s > 0]
        zero_at = min(positive) / 10  # the undefended farm, drawn one decade left of the weakest decay
        x_of = lambda s: zero_at if s == 0 else s  # noqa: E731
        ticks = [x_of(s) for s in strengths]
        for i, attack in enumerate(attack_order(frame)):
            rows = trend[trend["attack"] == attack]
            ax_auc.plot([x_of(s) for s in rows["strength"]], rows["auc"], marker="o", ms=4, color=f"C{i % 10}",
                        ls="-" if rows["label_only"].iloc[0] else "--", label=attack)
        per = trend.groupby("strength")[["test_accuracy", "train_accuracy"]].first()
        ax_acc.plot([x_of(s) for s in per.index], per["test_accuracy"], marker="o", color="k", label="test accuracy")
        ax_acc.plot([x_of(s) for s in per.index], per["train_accuracy"], marker="s", color="0.5", ls=":",
                    label="train accuracy")
        for ax in (ax_auc, ax_acc):
            ax.set_xscale("log")
            ax.set_xticks(ticks, ["0" if s == 0 else f"{s:g}" for s in strengths])
            ax.minorticks_off()
            ax.set_xlabel("weight decay (train.weight_decay)")
            ax.grid(True, alpha=0.3)
        ax_auc.axhline(0.5, color="0.6", lw=1, ls=":")
        ax_auc.set(ylabel="attack AUC", title="AUC vs weight decay (solid: label-only, dashed: confidence)")
        ax_acc.set(ylabel="accuracy (mean over models)", title="utility vs weight decay")
        ax_auc.legend(fontsize=7, loc="best")
        ax_acc.legend(fontsize=8, loc="best")
    else:
        for ax in (ax_auc, ax_acc):
            ax.text(0.5, 0.5, "no weight_decay sweep in this study", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
    for ax in (ax_auc, ax_acc):
        ax.title.set_fontsize(9)
    ax_map = fig.add_subplot(grid[1, :])
    values = auc.to_numpy(dtype=float)
    image = ax_map.imshow(values, cmap="Reds", vmin=0.5, vmax=max(0.6, np.nanmax(values)), aspect="auto")
    for (r, c), v in np.ndenumerate(values):
        if not math.isnan(v):
            ax_map.text(c, r, f"{v:.3f}", ha="center", va="center", fontsize=7)
    ax_map.set_xticks(range(len(auc.columns)), [_SHORT.get(a, a) for a in auc.columns], fontsize=8)
    ax_map.set_yticks(range(len(auc.index)), list(auc.index), fontsize=7)
    ax_map.set_title("AUC of every attack under every defense (training setting + output defense)", fontsize=9)
    fig.colorbar(image, ax=ax_map, shrink=0.8, label="AUC")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _e(value) -> str:
    return html.escape(str(value))


def defense_section(matrix, *, png: str = PNG) -> tuple[str, str]:
    """("Defenses", html): the matrix table (AUC, TPR@1%FPR, balanced accuracy per cell) and the figure `png`."""
    frame = _frame(matrix)
    attacks = attack_order(frame)
    per = _per_defense(frame)
    cells = {(r["defense"], r["attack"]): r for r in frame.to_dict("records")}
    only = set(frame.loc[frame["label_only"], "attack"])
    head = ('<tr><th>defense</th><th class="num">test acc</th><th class="num">ε</th>'
            + "".join(f'<th class="num">{_e(a)}<span class="sub">{"label-only" if a in only else "confidence"}'
                      "</span></th>" for a in attacks) + "</tr>")
    body = []
    for defense in defense_order(frame):
        eps = per.loc[defense, "epsilon"]
        row = [f"<td><b>{_e(defense)}</b></td>", f'<td class="num">{100 * per.loc[defense, "test_accuracy"]:.1f}%</td>',
               f'<td class="num">{"-" if math.isnan(eps) else f"{eps:.2f}"}</td>']
        for attack in attacks:
            r = cells.get((defense, attack))
            if r is None:
                row.append('<td class="num">-</td>')
                continue
            bal = "-" if math.isnan(r["balanced_accuracy"]) else f"{100 * r['balanced_accuracy']:.1f}%"
            same = "=" if r["output_defense"] != "none" and r["same_as_undefended"] else ""
            row.append(f'<td class="num">{r["auc"]:.3f}{same}<span class="sub">{100 * r["tpr_at_fpr_0.01"]:.1f}%'
                       f" · {bal}</span></td>")
        body.append("<tr>" + "".join(row) + "</tr>")
    notes = [
        "Each cell: AUC on the target(s); below it TPR at 1% FPR · balanced accuracy at the threshold chosen on "
        "shadow models. Test accuracy: mean over the farm's models, each on its own non-members; ε: the spent "
        "privacy budget (DP-SGD farms).",
        "Rows “X + memguard/top1/round” apply an output-side defense to the logits of farm X: only the confidence "
        "baselines see it. “=” marks label-only attacks whose inputs are bit-identical to the undefended farm's "
        "(masking keeps the arg-max), so their scores are the same by construction.",
        f"Runs: one directory per training setting ({_e(', '.join(dict.fromkeys(frame['run'])))}); each has its "
        "own report.",
    ]
    n_members, n_nonmembers = int(frame["n_members"].min()), int(frame["n_nonmembers"].min())
    if n_members and n_nonmembers:
        # standard error of the AUC of an attack that knows nothing (Hanley & McNeil at AUC 0.5)
        null = 1.96 * math.sqrt((n_members + n_nonmembers + 1) / (12 * n_members * n_nonmembers))
        notes.append(f"Noise: with {n_members:,} members and {n_nonmembers:,} non-members, an attack that knows "
                     f"nothing lands within 0.5 ± {null:.3f} (95%); smaller differences between cells are noise. "
                     "Pool more targets (--targets) to narrow it.")
    table = f'<table style="font-size:12px"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'
    figure = f'<img src="{_e(png)}" alt="attack AUC and accuracy against weight decay; AUC matrix" width="960">'
    return "Defenses", table + "".join(f'<p class="note">{n}</p>' for n in notes) + figure


def report_sections(run: RunDir) -> list[tuple[str, str]]:
    """[("Defenses", html)] when the run holds studies/defenses.parquet (writing report/defenses.png), else []:
    for `attacks.report.core.write_report(run, extra_sections=...)`."""
    from attacks.studies.defenses import MATRIX, read_matrix

    if not run.is_file(MATRIX):
        return []
    matrix = read_matrix(run)
    run.write_bytes(f"report/{PNG}", matrix_png(matrix))
    return [defense_section(matrix)]


def write_study_report(study: RunDir, matrix, *, baseline: RunDir | None = None) -> str:
    """Write <study>/report/{index.html, defenses.png}; with `baseline` (the undefended farm), also its
    report with the Defenses section (attacks.report.core.write_report). Returns the study page's path."""
    from attacks.report.core import CSS, write_report

    png = matrix_png(matrix)
    title, section = defense_section(matrix)
    study.write_bytes(f"report/{PNG}", png)
    name = _e(study.root.rsplit("/", 1)[-1])
    study.write_text("report/index.html", (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>shadowfarm defenses: {name}</title>'
        f"<style>{CSS}</style></head><body><main><h1>Defense × attack matrix: {name}</h1>"
        f"<h2>{title}</h2>\n{section}\n</main></body></html>\n"))
    if baseline is not None:
        baseline.write_bytes(f"report/{PNG}", png)
        write_report(baseline, extra_sections=[(title, section)])
    return study.path("report/index.html")
