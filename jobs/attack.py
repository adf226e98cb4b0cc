"""Attack a trained run: `python -m jobs.attack --run runs/quickstart [--attacks gap,noise] [--targets 0,1]`.

Every threshold, attack classifier and calibration is fit on the run's shadow models only; the
targets' membership is read only to score the result. Writes attacks/<name>/scores.parquet and
metrics.json, then the HTML report, and prints the summary table.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from farm.errors import ConfigError
from farm.overrides import parse_override
from jobs.common import add_run_argument, csv_list, job_main, job_parser, model_ids, writes_run
from jobs.smoke import smoke_farm

HELP = "run label-only attacks and confidence baselines on a trained run"

def add_arguments(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    add_run_argument(parser, positional=positional, help="run directory (a path or s3://, gs:// URI)")
    parser.add_argument("--attacks", type=csv_list, default=None,
                        help="comma-separated attacks (default: every attack the run supports); "
                             "gap, augmentation, noise, calibrated, transfer, loss, confidence_classifier, "
                             "lira_confidence, gradient_norm, whitebox_classifier, stolen_memories")
    parser.add_argument("--targets", type=model_ids, default=None,
                        help="comma-separated target model ids (default: the run's membership.target_ids)")
    parser.add_argument("--setting", dest="settings", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                        help="an attack setting, e.g. --setting calibrated.variant=offline (repeatable)")
    parser.add_argument("--fpr", type=float, default=0.01,
                        help="requested FPR: report the realized FPR/TPR on the target at the threshold "
                             "chosen on shadows for it (default 0.01)")
    parser.add_argument("--pseudo-targets", type=int, default=4,
                        help="shadows that play the target to choose thresholds (default 4)")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates for intervals (0: none)")
    parser.add_argument("--tuned", action="store_true",
                        help="use the setting, query set and threshold chosen by `shadowfarm tune` "
                             "(tune/<attack>/best.json; tuned with the same --targets)")
    parser.add_argument("--calibrate", choices=("shadows", "nonmembers"), default="shadows",
                        help="where the FPR thresholds come from: the shadow game (default) or the target's scores "
                             "of the run's reference pool (membership.reference: examples no target trains on); "
                             "with a pool, the FPR the shadow thresholds realize on it is reported either way")
    parser.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_settings(texts: list[str]) -> dict:
    """--setting ATTACK.KEY=VALUE texts -> {attack: {key: value}}."""
    settings: dict = {}
    for text in texts:
        keys, value = parse_override(text, flag="--setting", example="calibrated.variant=offline")
        if len(keys) != 2:
            raise ConfigError(f"--setting {text!r}: expected ATTACK.KEY=VALUE, e.g. calibrated.variant=offline")
        settings.setdefault(keys[0], {})[keys[1]] = value
    return settings


def options_from(args: argparse.Namespace):
    from attacks.stage import AttackOptions

    settings = parse_settings(args.settings)
    if not 0 < args.fpr < 1:
        raise ConfigError(f"--fpr: expected a value in (0, 1), got {args.fpr}")
    if args.targets is not None and not args.targets:
        raise ConfigError("--targets: expected at least one model id")
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap: expected >= 0 (0: no intervals), got {args.bootstrap}")
    if args.pseudo_targets < 1:
        raise ConfigError(f"--pseudo-targets: expected at least 1, got {args.pseudo_targets}")
    return AttackOptions(attacks=args.attacks, targets=args.targets, settings=settings, fpr=args.fpr,
                         n_pseudo=args.pseudo_targets, bootstrap=args.bootstrap, tuned=args.tuned,
                         calibrate=args.calibrate)


@writes_run
def run(args: argparse.Namespace) -> int:
    from attacks.report.core import format_table, summary_rows
    from attacks.report.page import write_report
    from attacks.stage import attack_run
    from farm.storage import RunDir

    results = attack_run(args.run, options_from(args), progress=not args.quiet)
    store = RunDir(args.run)
    print(format_table(summary_rows(store)))
    for row in results:
        if "skipped" in row:
            print(f"skipped {row['attack']}: {row['skipped']}")
    if not args.no_report:
        print(f"report: {write_report(store)}")
    return 0


def smoke(args: argparse.Namespace) -> None:
    """--smoke-test: the smoke farm (`jobs.smoke`) in --run, attacked with fewer bootstrap replicates and
    pseudo-targets."""
    args.run = smoke_farm(args.run)
    args.bootstrap = min(args.bootstrap, 20)
    args.pseudo_targets = min(args.pseudo_targets, 2)


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.attack", __doc__, partial(add_arguments, positional=False),
                        smoke_help="train the smoke farm (python -m jobs.train --smoke-test) if needed, then attack it")
    return job_main(argv, parser, run=run, smoke=smoke, needs_run=True)


if __name__ == "__main__":
    sys.exit(main())
