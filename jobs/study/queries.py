"""Query budget: every label-only attack at several query budgets, AUC and TPR at 1% / 0.1% FPR against the
queries per example the target is sent, and the best attack at each budget.

    python -m jobs.study.queries --run runs/quickstart [--attacks gap,noise,...] [--copies 1,2,4,8] [--smoke-test]
    shadowfarm study queries runs/quickstart [--attacks boundary,...]

Points per attack (attacks/budgets.py): noise and calibrated on the first 1, 2, 4, ..., 64 of the run's noise
copies (capped at what the run has; a run with none is re-queried); yoqo at 1, 2, 4, 8 crafted queries and oslo at
1, 2, 4, 8 tau levels (each crafted once, the smaller points a subset), each scored by the fraction answered right
and by the shadows' margins, their 8-query points also with 8 and 22 of the run's noise copies added (16 and 30
queries); fixed_direction at K = 5, 10, 20, 30 steps; gap, transfer and augmentation on the run's query set;
boundary (HopSkipJump at max_iter 1, 2, 4: costly) only when named in --attacks. Each point is the attack's game
replayed with its settings: the attack stage's targets (pooled), shadows and pseudo-targets, thresholds from the
shadow game only; an attack with a result (`shadowfarm attack`) keeps its settings but the budget's, the others get
their defaults. Best attack at budget B: the highest TPR at 1% FPR among the settings sending at most B queries per
example (ties: higher AUC, then fewer queries); each point with 95% bootstrap intervals of AUC and TPR
(--bootstrap). Writes studies/queries.parquet (keeping the rows of attacks not asked for this time; a note when the
rows come from different targets), then the report (report/queries.png). Crafted queries, walks, re-queries and
HopSkipJump distances are cached in the run: a re-run reads them back.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from jobs.common import add_run_argument, csv_list, job_main, job_parser, smoke_out, writes_run
from jobs.smoke import attacked_smoke_farm

HELP = "the query-budget frontier: every label-only attack at several budgets, and the best one at each"


def _copies(text: str) -> list[int]:
    try:
        return [int(v) for v in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    add_run_argument(parser, positional=positional, help="trained run directory (a path or s3://, gs:// URI)")
    parser.add_argument("--attacks", type=csv_list, default=None,
                        help="comma-separated label-only attacks (default: every one the run supports but boundary, "
                             "which runs HopSkipJump at each point: name it to include it)")
    parser.add_argument("--copies", type=_copies, default=None,
                        help="noise copies per example to subset to (default 1,2,4,8,16,32,64; capped at the run's)")
    parser.add_argument("--bootstrap", type=int, default=200,
                        help="bootstrap replicates for the 95%% intervals of AUC and TPR (default 200; 0: none)")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite the HTML report")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@writes_run
def run(args: argparse.Namespace) -> int:
    from attacks.artifacts import QUERIES, attack_names
    from attacks.budgets import COPY_BUDGETS
    from attacks.report.page import write_report
    from attacks.report.queries import format_queries
    from attacks.studies.queries import queries_study
    from farm.storage import RunDir

    rows = queries_study(args.run, attacks=args.attacks, copies=args.copies or COPY_BUDGETS, progress=not args.quiet,
                         bootstrap=args.bootstrap)
    store = RunDir(args.run)
    print(format_queries(rows))
    print(f"study: {store.path(QUERIES)}")
    if not args.no_report and not attack_names(store):
        print("report: not written (the report needs attack results: run `shadowfarm attack RUN`)")
    elif not args.no_report:
        print(f"report: {write_report(store)}")
    return 0


def smoke(args: argparse.Namespace) -> None:
    """--smoke-test: the smoke farm with its cheap attacks (`jobs.smoke`) in --run, the study on those of them that
    have a query budget, at a few copies."""
    from attacks.registry import get_attack, smoke_attacks

    args.run = attacked_smoke_farm(args.run or smoke_out("queries-smoke"))
    args.attacks = args.attacks or [n for n in smoke_attacks("study") if get_attack(n).budgets is not None]
    args.copies = args.copies or [1, 2, 4]
    args.bootstrap = min(args.bootstrap, 20)


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.study.queries", __doc__, partial(add_arguments, positional=False),
                        smoke_help="train the smoke farm and run its cheap attacks (as python -m jobs.attack "
                                   "--smoke-test does) then the study on those of them that "
                                   "have a query budget, at 1, 2, 4 copies")
    return job_main(argv, parser, run=run, smoke=smoke, needs_run=True)


if __name__ == "__main__":
    sys.exit(main())
