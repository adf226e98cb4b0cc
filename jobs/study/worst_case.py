"""Worst case: every attack on the population's outliers beside the whole population.

    python -m jobs.study.worst_case --run runs/quickstart [--rule knn --k 10 --fraction 0.1] [--smoke-test]
    shadowfarm study worst-case runs/quickstart

Needs the attack stage's results (`shadowfarm attack RUN`). Marks outliers by a stated rule on the inputs
(default: the 10% of examples with the fewest same-class examples among their 10 nearest neighbours),
reports AUC and TPR at 0.1%/1% FPR on the outliers and on the population with the counts behind each, and
the realized FPR/TPR on the outliers at thresholds chosen on shadows (on the shadows' population, and on
the shadows' outliers). Writes studies/worst_case.parquet and studies/outliers.parquet, then the report.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from jobs.common import add_run_argument, csv_list, job_main, job_parser, smoke_out, writes_run
from jobs.smoke import attacked_smoke_farm

HELP = "attack results on the population's outliers beside the whole population"


def add_arguments(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    add_run_argument(parser, positional=positional,
                     help="run directory with attack results (a path or s3://, gs:// URI)")
    parser.add_argument("--attacks", type=csv_list, default=None, help="comma-separated attacks (default: every attack "
                                                                   "with a result)")
    parser.add_argument("--rule", default="knn", help="outlier rule: knn (fewest same-class neighbours among the k "
                                                      "nearest) or centroid (farthest from the class centroid)")
    parser.add_argument("--k", type=int, default=10, help="neighbours of the knn rule (default 10)")
    parser.add_argument("--fraction", type=float, default=0.1, help="share of the population marked outlier "
                                                                    "(default 0.1)")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite the HTML report")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@writes_run
def run(args: argparse.Namespace) -> int:
    from attacks.artifacts import WORST_CASE
    from attacks.report.page import write_report
    from attacks.report.worst_case import format_worst_case
    from attacks.studies.worst_case import OutlierRule, describe, worst_case_study
    from farm.storage import RunDir

    rule = OutlierRule(rule=args.rule, k=args.k, fraction=args.fraction)
    rows = worst_case_study(args.run, rule=rule, attacks=args.attacks, progress=not args.quiet)
    store = RunDir(args.run)
    print(describe(rule))
    print(format_worst_case(rows))
    print(f"study: {store.path(WORST_CASE)}")
    if not args.no_report:
        print(f"report: {write_report(store)}")
    return 0


def smoke(args: argparse.Namespace) -> None:
    """--smoke-test: the smoke farm with its cheap attacks (`jobs.smoke`) in --run."""
    args.run = attacked_smoke_farm(args.run or smoke_out("worst-case-smoke"))


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.study.worst_case", __doc__, partial(add_arguments, positional=False),
                        smoke_help="train the smoke farm and run its cheap attacks (as python -m jobs.attack "
                                   "--smoke-test does) then run the study on it")
    return job_main(argv, parser, run=run, smoke=smoke, needs_run=True)


if __name__ == "__main__":
    sys.exit(main())
