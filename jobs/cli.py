"""`shadowfarm`: the command line of the farm and the attack stage."""

from __future__ import annotations

import argparse
import sys

from jobs import train as train_job
from jobs.common import run_cli

EPILOG = """examples:
  shadowfarm train quickstart                  # 64 MLPs on digits into runs/quickstart
  shadowfarm train my.yaml --set train.epochs=5 --out runs/exp1
  shadowfarm verify runs/quickstart
"""


def verify(args: argparse.Namespace) -> int:
    from farm.driver import load_plan, verify_plan

    problems = verify_plan(load_plan(args.run))
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in {args.run}", file=sys.stderr)
        return 1
    print(f"{args.run}: ok")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shadowfarm", description="Label-only membership inference audits with a Ray farm of shadow models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", help="train the shadow-model farm of a config (resumable)",
                       description=train_job.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    train_job.add_arguments(p, positional=True)
    p.set_defaults(func=train_job.train)
    p = sub.add_parser("verify", help="check a run's shards: schemas, row counts, membership, _SUCCESS hashes")
    p.add_argument("run", help="run directory")
    p.set_defaults(func=verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
