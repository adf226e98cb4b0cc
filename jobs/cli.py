"""`shadowfarm`: the command line of the farm and the attack stage."""

from __future__ import annotations

import argparse
import sys

from jobs import attack, audit, export_mlserver, report, serve, train, tune, verify
from jobs.common import job_main, job_parser
from jobs.study import calibration, defenses, ood, queries, worst_case

# COMMAND (and STUDY) -> its job module: HELP, the description (__doc__), add_arguments and run(args).
STUDIES = {"calibration": calibration, "worst-case": worst_case, "ood": ood, "defenses": defenses,
           "queries": queries}
STUDY_HELP = ("studies: calibration (vs number of shadows), worst-case, ood, defenses (matrix), queries (query-budget "
              "frontier)")

EPILOG = """examples:
  shadowfarm train quickstart                  # 64 MLPs on digits into runs/quickstart
  shadowfarm train my.yaml --set train.epochs=5 --out runs/exp1
  shadowfarm verify runs/quickstart
  shadowfarm attack runs/quickstart            # every applicable attack, thresholds from shadows
  shadowfarm attack runs/quickstart --attacks gap,calibrated --setting calibrated.variant=offline
  shadowfarm tune runs/quickstart --attack noise --num-samples 16 --metric auc
  shadowfarm attack runs/quickstart --tuned    # with the tuned settings and thresholds
  shadowfarm study calibration runs/quickstart --shadows 1,2,4,8,16,32,64
  shadowfarm study worst-case runs/quickstart  # outliers beside the whole population
  shadowfarm study ood runs/quickstart         # false positives on out-of-distribution inputs
  shadowfarm study queries runs/quickstart     # every label-only attack at several query budgets
  shadowfarm study defenses quickstart         # one farm per defense x every attack -> runs/quickstart-defenses
  shadowfarm report runs/quickstart            # runs/quickstart/report/index.html
  shadowfarm serve runs/quickstart --model-id 0 --port 8000   # label-only HTTP API of model 0
  shadowfarm audit runs/quickstart --target http://127.0.0.1:8000/predict --members members.txt
  shadowfarm export-mlserver runs/quickstart --model-id 0 mlserver-0   # then: mlserver start mlserver-0
"""


def _add(commands, name: str, job, **kwargs) -> None:
    """COMMAND `name` of `job`: its help line, its docstring as description, its options; `func` runs it."""
    p = commands.add_parser(name, help=job.HELP, description=job.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    job.add_arguments(p, **kwargs)
    p.set_defaults(func=job.run)


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Every COMMAND (and STUDY) with its job's options; each sets `func`, the job's function to run."""
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, job in (("train", train), ("verify", verify), ("attack", attack), ("tune", tune)):
        _add(sub, name, job, positional=True)
    studies = sub.add_parser("study", help=STUDY_HELP).add_subparsers(dest="study", required=True, metavar="STUDY")
    for name, job in STUDIES.items():
        _add(studies, name, job, positional=True)
    for name, job in (("serve", serve), ("audit", audit), ("export-mlserver", export_mlserver)):
        _add(sub, name, job)  # the same arguments as their own entry points
    _add(sub, "report", report, positional=True)


def build_parser() -> argparse.ArgumentParser:
    return job_parser("shadowfarm", "Label-only membership inference audits with a Ray farm of shadow models.",
                      add_commands, epilog=EPILOG)


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, build_parser(), run=lambda args: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
