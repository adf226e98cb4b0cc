"""The report section of the calibration study (`attacks.studies.calibration`, studies/calibration.parquet):
TPR at 1% FPR / AUC against the number of shadows, as a table and as `report/calibration.png`."""

from __future__ import annotations

import numpy as np

from attacks.artifacts import CALIBRATION
from attacks.registry import ATTACKS
from attacks.report.figure import new_figure, png_bytes
from attacks.report.markup import Section, escape
from farm.storage import RunDir

TITLE = "Calibration study"
PNG = "calibration.png"


def _mean(rows: list[dict], key: str, *, attack: str, k: int) -> float:
    return np.mean([r[key] for r in rows if r["attack"] == attack and r["n_shadows"] == k])


def curve_png(rows: list[dict]) -> bytes:
    """AUC and TPR@1%FPR against the number of shadows (log-2 axis), one line per attack, pooled over targets."""
    fig = new_figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for name in dict.fromkeys(r["attack"] for r in rows):
        ks = sorted({r["n_shadows"] for r in rows if r["attack"] == name})
        for ax, key in zip(axes, ("auc", "tpr@1%fpr"), strict=True):
            ys = [_mean(rows, key, attack=name, k=k) for k in ks]
            confidence = name in ATTACKS and not ATTACKS[name].label_only  # dashed: a confidence attack
            ax.plot(ks, ys, marker="o", label=name, linestyle="--" if confidence else "-")
    for ax, title in zip(axes, ("AUC", "TPR at 1% FPR"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("shadow models")
        ax.set_title(f"{title} vs number of shadows")
        ax.grid(alpha=0.3)
    axes[1].legend()
    fig.tight_layout()
    return png_bytes(fig, dpi=110)


def calibration_section(run: RunDir) -> Section | None:
    """The section when the run has a calibration study (writing report/calibration.png), else None."""
    if not run.is_file(CALIBRATION):
        return None
    rows = run.read_table(CALIBRATION).to_pylist()
    run.write_bytes(f"report/{PNG}", curve_png(rows))
    ks = sorted({r["n_shadows"] for r in rows})
    head = "".join(f"<th>{k}</th>" for k in ks)
    body = ""
    for name in dict.fromkeys(r["attack"] for r in rows):
        cells = "".join(f"<td>{100 * _mean(rows, 'tpr@1%fpr', attack=name, k=k):.1f}%"
                        f" / {_mean(rows, 'auc', attack=name, k=k):.3f}</td>" for k in ks)
        body += f"<tr><td>{escape(name)}</td>{cells}</tr>"
    text = (f"<p>TPR at 1% FPR / AUC on the target(s) with the first k shadows (pooled mean over targets). "
            f"<code>global-threshold</code> is the same label-only statistic as <code>calibrated</code> "
            f"without per-example calibration.</p><table><tr><th>attack \\ shadows</th>{head}</tr>{body}</table>"
            f'<p><img src="{PNG}" alt="calibration curve" style="max-width:100%"></p>')
    return TITLE, text
