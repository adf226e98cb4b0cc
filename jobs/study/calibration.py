"""Attack quality against the number of shadows: re-runs the shadow-calibrated attacks with the first k shadows.

    python -m jobs.study.calibration --run runs/quickstart [--shadows 1,2,4,8,16,32,64] [--smoke-test]
    shadowfarm study calibration runs/quickstart --shadows 1,2,4,8,16,32,64

For each target and each k; writes studies/calibration.parquet and adds the curve (TPR at 1% FPR and AUC vs
shadows, log-2 axis) to the report.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from jobs.common import add_run_argument, job_main, job_parser, writes_run
from jobs.smoke import smoke_farm

HELP = "re-run the shadow-calibrated attacks with the first k shadows"


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    add_run_argument(parser, positional=positional)
    parser.add_argument("--shadows", type=_ints, default=(1, 2, 4, 8, 16, 32, 64),
                        help="shadow counts, comma-separated (default 1,2,4,8,16,32,64; capped at the run's)")
    parser.add_argument("--targets", type=_ints, default=None, help="target model ids (default: the run's)")
    parser.add_argument("--pseudo-targets", type=int, default=4, help="shadows playing the target for thresholds")


@writes_run
def run(args: argparse.Namespace) -> int:
    import numpy as np

    from attacks.report.page import write_report
    from attacks.studies.calibration import calibration_study
    from farm.storage import RunDir

    rows = calibration_study(args.run, shadow_counts=args.shadows, targets=args.targets,
                             n_pseudo=args.pseudo_targets)
    ks = sorted({r["n_shadows"] for r in rows})
    names = list(dict.fromkeys(r["attack"] for r in rows))
    print("TPR@1%FPR / AUC with the first k shadows (mean over targets)")
    print(f"{'attack':20s}" + "".join(f"{k:>15d}" for k in ks))
    for name in names:
        cells = []
        for k in ks:
            sel = [r for r in rows if r["attack"] == name and r["n_shadows"] == k]
            tpr, auc = np.mean([r["tpr@1%fpr"] for r in sel]), np.mean([r["auc"] for r in sel])
            cells.append(f"{100 * tpr:6.1f}% / {auc:.3f}")
        print(f"{name:20s}" + "".join(f"{c:>15s}" for c in cells))
    store = RunDir(args.run)
    print(f"wrote {store.path('studies/calibration.parquet')}")
    if store.listdir("attacks"):
        print(f"report: {write_report(store)}")
    return 0


def smoke(args: argparse.Namespace) -> None:
    """--smoke-test: the smoke farm (`jobs.smoke`) in --run, with shadow counts 1, 2 and 4."""
    args.run = smoke_farm(args.run)
    args.shadows = (1, 2, 4)


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.study.calibration", __doc__, partial(add_arguments, positional=False),
                        smoke_help="a fresh smoke farm, shadows 1,2,4")
    return job_main(argv, parser, run=run, smoke=smoke, needs_run=True)


if __name__ == "__main__":
    sys.exit(main())
