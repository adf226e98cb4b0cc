"""`shadowfarm`: the command line of the farm and the attack stage."""

from __future__ import annotations

import argparse
import sys

from jobs import attack as attack_job
from jobs import audit as audit_job
from jobs import defenses as defenses_job
from jobs import mlserver as mlserver_job
from jobs import serve as serve_job
from jobs import study as study_job
from jobs import study_ood, study_worst_case
from jobs import train as train_job
from jobs import tune as tune_job
from jobs.common import job_main, job_parser

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
  shadowfarm study defenses quickstart         # one farm per defense x every attack -> runs/quickstart-defenses
  shadowfarm report runs/quickstart            # runs/quickstart/report/index.html
  shadowfarm serve runs/quickstart --model-id 0 --port 8000   # label-only HTTP API of model 0
  shadowfarm audit runs/quickstart --target http://127.0.0.1:8000/predict --members members.txt
  shadowfarm export-mlserver runs/quickstart --model-id 0 mlserver-0   # then: mlserver start mlserver-0
"""


def verify(args: argparse.Namespace) -> int:
    """One line per problem on stdout, each naming its file; exit 1 when there is any."""
    from farm.plan import load_plan
    from farm.verify import verify_plan

    problems = verify_plan(load_plan(args.run))
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in {args.run}; re-running the `shadowfarm train` command that made it "
              "(same config and --out) trains the bad or missing models again and keeps the valid ones",
              file=sys.stderr)
        return 1
    print(f"{args.run}: ok")
    return 0


def report(args: argparse.Namespace) -> int:
    from attacks.report.core import format_table, summary_rows
    from attacks.report.page import write_report
    from farm.storage import RunDir

    run = RunDir(args.run)
    path = write_report(run)
    print(format_table(summary_rows(run)))
    print(f"report: {path}")
    return 0


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Every COMMAND (and STUDY) with its job's options; each sets `func`, the job's function to run."""
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", help="train the shadow-model farm of a config (resumable)",
                       description=train_job.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    train_job.add_arguments(p, positional=True)
    p.set_defaults(func=train_job.train)
    p = sub.add_parser("verify", help="check a run's shards: schemas, row counts, membership, _SUCCESS hashes")
    p.add_argument("run", help="run directory")
    p.set_defaults(func=verify)
    p = sub.add_parser("attack", help="run label-only attacks and confidence baselines on a trained run",
                       description=attack_job.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    attack_job.add_arguments(p, positional=True)
    p.set_defaults(func=attack_job.attack)
    p = sub.add_parser("tune", help="search an attack's settings with Ray Tune on a shadow-only game",
                       description=tune_job.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tune_job.add_arguments(p, positional=True)
    p.set_defaults(func=tune_job.tune)
    p = sub.add_parser("study", help="studies: calibration (vs number of shadows), worst-case, ood, defenses (matrix)")
    studies = p.add_subparsers(dest="study", required=True, metavar="STUDY")
    q = studies.add_parser("calibration", help="re-run the shadow-calibrated attacks with the first k shadows",
                           description=study_job.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    study_job.add_calibration_arguments(q, positional=True)
    q.set_defaults(func=study_job.calibration)
    for name, job in (("worst-case", study_worst_case), ("ood", study_ood), ("defenses", defenses_job)):
        q = studies.add_parser(name, help=job.HELP, description=job.__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        job.add_arguments(q, positional=True)
        q.set_defaults(func=job.run)
    for name, job in (("serve", serve_job), ("audit", audit_job)):
        p = sub.add_parser(name, help=job.HELP, description=job.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        job.add_arguments(p)
        p.set_defaults(func=getattr(job, name))
    p = sub.add_parser("export-mlserver", help=mlserver_job.HELP, description=mlserver_job.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    mlserver_job.add_arguments(p)
    p.set_defaults(func=mlserver_job.export)
    p = sub.add_parser("report", help="write the HTML report of a run's attack results and print the table")
    p.add_argument("run", help="run directory")
    p.set_defaults(func=report)


def build_parser() -> argparse.ArgumentParser:
    return job_parser("shadowfarm", "Label-only membership inference audits with a Ray farm of shadow models.",
                      add_commands, epilog=EPILOG)


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, build_parser(), run=lambda args: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
