"""`python -m jobs.study STUDY [options]`: the study's own entry point, `python -m jobs.study.<module>`, by
the name `shadowfarm study STUDY` gives it (calibration, worst-case, ood, defenses)."""

from __future__ import annotations

import sys

from jobs.cli import STUDIES
from jobs.common import ArgumentParser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in STUDIES:
        return STUDIES[argv[0]].main(argv[1:])
    parser = ArgumentParser(prog="python -m jobs.study", description=__doc__)
    studies = parser.add_subparsers(dest="study", required=True, metavar="STUDY")
    for name, job in STUDIES.items():
        studies.add_parser(name, help=job.HELP)
    parser.parse_args(argv)  # --help, or the one-line error naming the studies
    return 2


if __name__ == "__main__":
    sys.exit(main())
