"""Write a run's HTML report: `python -m jobs.report --run RUN` (or `shadowfarm report RUN`).

Reads the attack stage's and the studies' files of RUN, writes RUN/report/index.html and prints the
summary table of the attacks.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from jobs.common import add_run_argument, job_main, job_parser, smoke_out, writes_run
from jobs.smoke import attacked_smoke_farm

HELP = "write the HTML report of a run's attack results and print the table"


def add_arguments(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    add_run_argument(parser, positional=positional)


@writes_run
def run(args: argparse.Namespace) -> int:
    from attacks.report.core import format_table, summary_rows
    from attacks.report.page import write_report
    from farm.storage import RunDir

    store = RunDir(args.run)
    path = write_report(store)
    print(format_table(summary_rows(store)))
    print(f"report: {path}")
    return 0


def smoke(args: argparse.Namespace) -> None:
    """--smoke-test: the smoke farm with its cheap attacks (`jobs.smoke`) in --run."""
    args.run = attacked_smoke_farm(args.run or smoke_out("report-smoke"))


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.report", __doc__, partial(add_arguments, positional=False),
                        smoke_help="train the smoke farm and run its cheap attacks, then write its report")
    return job_main(argv, parser, run=run, smoke=smoke, needs_run=True)


if __name__ == "__main__":
    sys.exit(main())
