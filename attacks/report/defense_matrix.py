"""The defense matrix (studies/defenses.parquet of `attacks.studies.defenses`) in the report: its figure
`defenses.png`, its HTML section, and the pivots the terminal table (`attacks.report.defenses`) shares.

`defenses_section(run)` is the registered section (`attacks.report.sections`): the run holds a copy of the
matrix when it is the undefended farm of a study. The figure has two parts, each drawn by its own function:
AUC of every attack and test/train accuracy against weight-decay strength (undefended farm at 0, top row),
and a heat map of AUC for every (training + output defense, attack) (bottom).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa

from attacks.artifacts import MATRIX, read_matrix
from attacks.registry import ATTACKS, attack_type
from attacks.report.figure import new_figure, png_bytes
from attacks.report.markup import Section, escape, notes_html
from farm.storage import RunDir

TITLE = "Defenses"
PNG = "defenses.png"
TREND = "weight_decay"  # the training defense whose strengths the trend panels sweep
SHORT = {name: spec.short for name, spec in ATTACKS.items() if spec.short}  # column names in narrow places


def as_frame(matrix: pa.Table | pd.DataFrame) -> pd.DataFrame:
    return matrix.to_pandas() if isinstance(matrix, pa.Table) else matrix


def attack_order(frame: pd.DataFrame) -> list[str]:
    """Label-only attacks first, then the confidence baselines; each in order of first appearance."""
    seen = dict.fromkeys(frame["attack"])
    only = set(frame.loc[frame["label_only"], "attack"])
    return [a for a in seen if a in only] + [a for a in seen if a not in only]


def defense_order(frame: pd.DataFrame) -> list[str]:
    """Training settings in study order, each followed by its output defenses."""
    return list(dict.fromkeys(frame["defense"]))


def pivot(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """`column` as a defense × attack table, in `defense_order` × `attack_order`."""
    return frame.pivot_table(index="defense", columns="attack", values=column, aggfunc="first", sort=False) \
        .reindex(index=defense_order(frame), columns=attack_order(frame))


def per_defense(frame: pd.DataFrame) -> pd.DataFrame:
    """test_accuracy, train_accuracy and epsilon of each defense (one value per row of the matrix)."""
    return frame.groupby("defense", sort=False)[["test_accuracy", "train_accuracy", "epsilon"]].first() \
        .reindex(defense_order(frame))


def defenses_section(run: RunDir) -> Section | None:
    """The Defenses section when the run holds studies/defenses.parquet (writing report/defenses.png), else None."""
    if not run.is_file(MATRIX):
        return None
    matrix = read_matrix(run)
    run.write_bytes(f"report/{PNG}", matrix_png(matrix))
    return defense_section(matrix)


# ---------------------------------------------------------------- figure


def matrix_png(matrix) -> bytes:
    """PNG: AUC and accuracy against weight decay (top), AUC heat map of the whole matrix (bottom)."""
    frame = as_frame(matrix)
    auc = pivot(frame, "auc")
    fig = new_figure(figsize=(11, 5.2 + 0.28 * len(auc)), dpi=120, layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[4.2, 1.2 + 0.28 * len(auc)])
    trend_panels(fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), frame)
    heat_map(fig, fig.add_subplot(grid[1, :]), auc)
    return png_bytes(fig)


def _trend(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the weight-decay sweep (with the undefended farm at strength 0), output defense none."""
    rows = frame[(frame["output_defense"] == "none") & frame["training_defense"].isin([TREND, "none"])].copy()
    rows["strength"] = rows["strength"].fillna(0.0)
    return rows.sort_values("strength")


def trend_panels(ax_auc, ax_acc, frame: pd.DataFrame) -> None:
    """Top row: AUC of every attack (left) and test/train accuracy (right) against weight-decay strength;
    a note instead when the study swept no weight decay."""
    trend = _trend(frame)
    strengths = sorted(trend["strength"].unique())
    if len(strengths) > 1:
        _plot_trend(ax_auc, ax_acc, trend, strengths, attacks=attack_order(frame))
    else:
        for ax in (ax_auc, ax_acc):
            ax.text(0.5, 0.5, "no weight_decay sweep in this study", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
    for ax in (ax_auc, ax_acc):
        ax.title.set_fontsize(9)


def _plot_trend(ax_auc, ax_acc, trend: pd.DataFrame, strengths: list[float], *, attacks: list[str]) -> None:
    positive = [s for s in strengths if s > 0]
    zero_at = min(positive) / 10  # the undefended farm, drawn one decade left of the weakest decay
    x_of = lambda s: zero_at if s == 0 else s  # noqa: E731
    ticks = [x_of(s) for s in strengths]
    for i, attack in enumerate(attacks):
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


def heat_map(fig, ax, auc: pd.DataFrame) -> None:
    """Bottom: AUC of every (defense, attack) cell, with its value written in, and the colour bar."""
    values = auc.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="Reds", vmin=0.5, vmax=max(0.6, np.nanmax(values)), aspect="auto")
    for (r, c), v in np.ndenumerate(values):
        if not math.isnan(v):
            ax.text(c, r, f"{v:.3f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(auc.columns)), [SHORT.get(a, a) for a in auc.columns], fontsize=8)
    ax.set_yticks(range(len(auc.index)), list(auc.index), fontsize=7)
    ax.set_title("AUC of every attack under every defense (training setting + output defense)", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8, label="AUC")


# ---------------------------------------------------------------- HTML


def _row(defense: str, attacks: list[str], per: pd.DataFrame, cells: dict) -> str:
    eps = per.loc[defense, "epsilon"]
    row = [f"<td><b>{escape(defense)}</b></td>", f'<td class="num">{100 * per.loc[defense, "test_accuracy"]:.1f}%</td>',
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
    return "<tr>" + "".join(row) + "</tr>"


def _notes(frame: pd.DataFrame) -> list[str]:
    notes = [
        "Each cell: AUC on the target(s); below it TPR at 1% FPR · balanced accuracy at the threshold chosen on "
        "shadow models. Test accuracy: mean over the farm's models, each on its own non-members; ε: the spent "
        "privacy budget (DP-SGD farms).",
        "Rows “X + memguard/flatten/top1/round” apply an output defense to farm X's logits: only the confidence "
        "baselines see it. “=” marks label-only attacks whose inputs are bit-identical to the undefended farm's "
        "(masking keeps the arg-max), so their scores are the same by construction.",
        f"Runs: one directory per training setting ({escape(', '.join(dict.fromkeys(frame['run'])))}); each has its "
        "own report.",
    ]
    n_members, n_nonmembers = int(frame["n_members"].min()), int(frame["n_nonmembers"].min())
    if n_members and n_nonmembers:
        # standard error of the AUC of an attack that knows nothing (Hanley & McNeil at AUC 0.5)
        null = 1.96 * math.sqrt((n_members + n_nonmembers + 1) / (12 * n_members * n_nonmembers))
        notes.append(f"Noise: with {n_members:,} members and {n_nonmembers:,} non-members, an attack that knows "
                     f"nothing lands within 0.5 ± {null:.3f} (95%); smaller differences between cells are noise. "
                     "Pool more targets (--targets) to narrow it.")
    return notes


def defense_section(matrix, *, png: str = PNG) -> Section:
    """("Defenses", html): the matrix table (AUC, TPR@1%FPR, balanced accuracy per cell) and the figure `png`."""
    frame = as_frame(matrix)
    attacks = attack_order(frame)
    per = per_defense(frame)
    cells = {(r["defense"], r["attack"]): r for r in frame.to_dict("records")}
    only = set(frame.loc[frame["label_only"], "attack"])
    head = ('<tr><th>defense</th><th class="num">test acc</th><th class="num">ε</th>'
            + "".join(f'<th class="num">{escape(a)}<span class="sub">{attack_type(a, a in only)}'
                      "</span></th>" for a in attacks) + "</tr>")
    body = "".join(_row(defense, attacks, per, cells) for defense in defense_order(frame))
    table = f'<table style="font-size:12px"><thead>{head}</thead><tbody>{body}</tbody></table>'
    figure = f'<img src="{escape(png)}" alt="attack AUC and accuracy against weight decay; AUC matrix" width="960">'
    return TITLE, table + notes_html(_notes(frame)) + figure
