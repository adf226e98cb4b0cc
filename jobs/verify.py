"""Check a run's shards: `python -m jobs.verify --run RUN` (or `shadowfarm verify RUN`).

Each file's sha256 and size against its `_SUCCESS` record (`--quick`: sizes only), schemas, row counts,
membership and the config hash of every model, and every recorded output of the attack stage (caches under
requery/, boundary/, whitebox/, crafted/; attacks/, audit/, tune/, studies/) against its record: one line per
problem on stdout, each naming its file, and exit code 1 when there is any; `RUN: ok` otherwise.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from jobs.common import add_run_argument, job_main, job_parser
from jobs.smoke import smoke_farm

HELP = "check a run's shards: content hashes, schemas, row counts, membership, config hashes"


def add_arguments(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    add_run_argument(parser, positional=positional)
    parser.add_argument("--quick", action="store_true",
                        help="check the files' sizes against their _SUCCESS records, not their sha256")


def run(args: argparse.Namespace) -> int:
    """One line per problem on stdout, each naming its file; exit 1 when there is any."""
    from farm.cluster import nodes_line
    from farm.plan import load_plan
    from farm.verify import verify_plan

    plan = load_plan(args.run)
    problems = verify_plan(plan, quick=args.quick)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in {args.run}; re-running the `shadowfarm train` command that made it "
              "(same config and --out) trains the bad or missing models again and keeps the valid ones; the command "
              "that wrote an attack-stage output computes a changed one again", file=sys.stderr)
        return 1
    print(f"{args.run}: ok")
    if line := nodes_line(plan.run, plan.cfg.membership.n_models):
        print(line)
    return 0


def smoke(args: argparse.Namespace) -> None:
    """--smoke-test: the smoke farm (`jobs.smoke`) in --run."""
    args.run = smoke_farm(args.run)


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.verify", __doc__, partial(add_arguments, positional=False),
                        smoke_help="train the smoke farm (python -m jobs.train --smoke-test) if needed, then verify it")
    return job_main(argv, parser, run=run, smoke=smoke, needs_run=True)


if __name__ == "__main__":
    sys.exit(main())
