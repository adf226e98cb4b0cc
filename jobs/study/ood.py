"""Out-of-distribution non-members: each attack's false positives on inputs the target never saw and that do
not come from its population (Hintersdorf et al.).

    python -m jobs.study.ood --run runs/quickstart [--n-inputs 1000] [--other-data npz:PATH] [--smoke-test]
    shadowfarm study ood runs/quickstart

Needs the attack stage's results (`shadowfarm attack RUN`). Families: uniform and Gaussian noise, permuted
features/pixels, scaled inputs (x3 and x0.3), and another data set of the same input shape (the `synthetic`
data set for tabular runs; for images, one given with --other-data). Every model answers the run's own
query set on them through a label oracle, as Ray tasks; each input is labelled with the target's own clean
prediction. Reports, per attack and family, the share called members at the thresholds chosen on shadows
(for 0.1% and 1% FPR, and for best balanced accuracy), with counts. Writes studies/ood.parquet, then the report.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from farm.errors import ConfigError
from jobs.common import add_run_argument, csv_list, job_main, job_parser, smoke_out, writes_run
from jobs.smoke import attacked_smoke_farm

HELP = "false positives of every attack on out-of-distribution inputs (noise, permuted, scaled, other data)"


def add_arguments(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    add_run_argument(parser, positional=positional,
                     help="run directory with attack results (a path or s3://, gs:// URI)")
    parser.add_argument("--attacks", type=csv_list, default=None,
                        help="comma-separated attacks (default: every attack with a result)")
    parser.add_argument("--families", type=csv_list, default=None,
                        help="comma-separated OOD families (default: all that apply): uniform, gaussian, permuted, "
                             "scaled_up, scaled_down, other")
    parser.add_argument("--n-inputs", type=int, default=1000, help="inputs per family (default 1000)")
    parser.add_argument("--boundary-inputs", type=int, default=200,
                        help="inputs per family for the boundary attack's HopSkipJump (default 200)")
    parser.add_argument("--other-data", default=None, metavar="NAME[:PATH]",
                        help="a registered data set of the run's input shape for the 'other' family, e.g. "
                             "npz:faces.npz (default: synthetic of the same width for tabular runs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the OOD inputs (default 0)")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite the HTML report")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@writes_run
def run(args: argparse.Namespace) -> int:
    from attacks.artifacts import OOD
    from attacks.report.ood import format_ood
    from attacks.report.page import write_report
    from attacks.studies.ood.study import OodOptions, ood_study
    from farm.storage import RunDir

    if args.boundary_inputs < 1:
        raise ConfigError(f"--boundary-inputs: expected at least 1, got {args.boundary_inputs}")
    options = OodOptions(n_inputs=args.n_inputs, families=args.families, other_data=args.other_data,
                         boundary_inputs=args.boundary_inputs, attacks=args.attacks, seed=args.seed)
    rows = ood_study(args.run, options, progress=not args.quiet)
    store = RunDir(args.run)
    print(format_ood(rows, threshold="0.01"))
    print(format_ood(rows, threshold="balanced_accuracy"))
    print("every OOD input is labelled with the target's own clean prediction; pop. TPR: members called members")
    print(f"study: {store.path(OOD)}")
    if not args.no_report:
        print(f"report: {write_report(store)}")
    return 0


def smoke(args: argparse.Namespace) -> None:
    """--smoke-test: the smoke farm with its cheap attacks (`jobs.smoke`) in --run, 50 inputs per family."""
    args.run = attacked_smoke_farm(args.run or smoke_out("ood-smoke"))
    args.n_inputs = min(args.n_inputs, 50)
    args.boundary_inputs = min(args.boundary_inputs, 10)


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.study.ood", __doc__, partial(add_arguments, positional=False),
                        smoke_help="train the smoke farm and run its cheap attacks (as python -m jobs.attack "
                                   "--smoke-test does) then run the study on it with 50 inputs per family")
    return job_main(argv, parser, run=run, smoke=smoke, needs_run=True)


if __name__ == "__main__":
    sys.exit(main())
