"""The quickstart (`make demo`): train 64 MLPs on digits, attack model 0 with every attack, write the report.

    python -m jobs.quickstart [--out runs/quickstart]

Re-running resumes: finished models are not trained again.
"""

from __future__ import annotations

import argparse
import sys

from jobs import attack, train
from jobs.common import job_main, job_parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/quickstart")


def quickstart(args: argparse.Namespace) -> int:
    """The train job, then the attack job, on --out: what a user types for the demo."""
    code = train.main(["--config", "quickstart", "--out", args.out])
    return code or attack.main(["--run", args.out])


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.quickstart", __doc__, add_arguments), run=quickstart)


if __name__ == "__main__":
    sys.exit(main())
