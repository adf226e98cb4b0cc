"""The quickstart (`make demo`): train 64 MLPs on digits, attack model 0 with every attack, write the report.

    python -m jobs.quickstart [--out runs/quickstart]

Re-running resumes: finished models are not trained again.
"""

from __future__ import annotations

import argparse
import sys

from jobs import attack, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.quickstart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/quickstart")
    args = parser.parse_args(argv)
    code = train.main(["--config", "quickstart", "--out", args.out])
    return code or attack.main(["--run", args.out])


if __name__ == "__main__":
    sys.exit(main())
