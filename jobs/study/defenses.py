"""The defense × attack matrix: `python -m jobs.study.defenses --config quickstart [--defenses ...] [--attacks ...]`.

Trains one farm per training-time defense setting (each its own run directory under the study folder),
runs every attack on each, applies every output-side defense to each farm's logits, and writes
<out>/studies/defenses.parquet, <out>/report/index.html + defenses.png, and the undefended farm's report
with a Defenses section. Re-running resumes: finished models are not trained again.

Training-time defenses (`--defenses`, default: all, each at its default strengths):
  none, weight_decay (1e-3:1e-2:3e-2:1e-1), label_smoothing (0.2), dropout (0.5), mixup (alpha 1),
  early_stopping (patience 3), train_augmentation (shifts of 1 pixel), dp_sgd (ε 8; batch 256, lr 0.01)
  e.g. --defenses none,weight_decay=0.01:0.1,dp_sgd=1:8
Output-side defenses (`--output-defenses`, default: memguard,flatten,top1,round): confidence masking,
seen only by the confidence baselines.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial

from attacks.registry import smoke_attacks
from farm.errors import ConfigError
from jobs.common import add_config_argument, csv_list, job_main, job_parser, model_ids, resolve_config, smoke_out

HELP = "the defense x attack matrix: one farm per training-time defense, every attack on each"

SMOKE = ["membership.n_models=6", "train.epochs=2", "data.subsample=200", "farm.group_size=6", "farm.num_actors=1",
         "model.hidden=[16]"]
SMOKE_DEFENSES = ("none", "weight_decay=0.1", "dp_sgd=8")
SMOKE_SET_FOR = ("dp_sgd:train.dp_sgd.accountant=rdp",)  # RDP finds the noise multiplier faster than PRV
MATRIX_SMOKE_ATTACKS = smoke_attacks("matrix")  # AttackSpec.smoke


def add_arguments(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    add_config_argument(parser, positional=positional)
    parser.add_argument("--defenses", type=csv_list, default=None,
                        help="comma-separated training-time defenses, each NAME or NAME=V1:V2 (default: all)")
    parser.add_argument("--output-defenses", type=csv_list, default=None,
                        help="comma-separated output-side defenses: memguard, flatten, top1, round (default: all; "
                             "'none' for none)")
    parser.add_argument("--attacks", type=csv_list, default=None,
                        help="comma-separated attacks (default: every attack the runs support)")
    parser.add_argument("--targets", type=model_ids, default=None,
                        help="comma-separated target model ids (default: the config's membership.target_ids)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field of every farm, e.g. --set train.epochs=20 (repeatable)")
    parser.add_argument("--set-for", dest="set_for", action="append", default=[], metavar="DEFENSE:KEY=VALUE",
                        help="override a field of one defense's farms, e.g. --set-for dp_sgd:train.lr=0.02")
    parser.add_argument("--out", help="study folder (default: runs/defenses-<config name>)")
    parser.add_argument("--pseudo-targets", type=int, default=2,
                        help="shadows that play the target to choose thresholds (default 2: the matrix reads AUC "
                             "and TPR off the targets' ROC; thresholds only set its balanced accuracy)")
    parser.add_argument("--bootstrap", type=int, default=0,
                        help="bootstrap replicates for each farm's intervals (default 0: none)")
    parser.add_argument("--smoke-test", action="store_true",
                        help="tiny farms (6 models, 200 examples, 2 epochs): none, weight_decay, dp_sgd; 5 attacks")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def options_from(args: argparse.Namespace):
    from attacks.oracles.output_defenses import OUTPUT_DEFENSES
    from attacks.stage import AttackOptions
    from attacks.studies.defenses import DEFAULT_DEFENSES, StudyOptions, parse_defenses

    config = resolve_config(args.config)
    outputs = tuple(OUTPUT_DEFENSES) if args.output_defenses is None else tuple(
        d for d in args.output_defenses if d != "none")
    if args.pseudo_targets < 1:
        raise ConfigError(f"--pseudo-targets: expected at least 1, got {args.pseudo_targets}")
    defenses = args.defenses or (SMOKE_DEFENSES if args.smoke_test else DEFAULT_DEFENSES)
    attacks = args.attacks or (MATRIX_SMOKE_ATTACKS if args.smoke_test else None)
    name = f"defenses-{config.stem}"
    out = args.out or (smoke_out(f"{name}-smoke") if args.smoke_test else f"runs/{name}")
    return StudyOptions(
        config=str(config), out=out, overrides=tuple((SMOKE if args.smoke_test else []) + args.overrides),
        defenses=tuple(parse_defenses(defenses, set_for=(*(SMOKE_SET_FOR if args.smoke_test else ()), *args.set_for))),
        output_defenses=outputs,
        attack=AttackOptions(attacks=attacks, targets=args.targets, n_pseudo=args.pseudo_targets,
                             bootstrap=args.bootstrap))


def run(args: argparse.Namespace) -> int:
    from attacks.artifacts import STUDY_JSON
    from attacks.report.defenses import format_matrix, write_study_report
    from attacks.studies.defenses import baseline_run, run_study
    from farm.storage import RunDir

    options = options_from(args)
    log = (lambda *a, **k: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    table = run_study(options, progress=not args.quiet, log=log)
    write_study_report(RunDir(options.out), table, baseline=baseline_run(options))
    print(format_matrix(table))
    seconds = RunDir(options.out).read_json(STUDY_JSON)["seconds"]
    print(json.dumps({"study": options.out, "farms": len(options.defenses), "rows": table.num_rows,
                      "seconds": {k: round(v, 1) for k, v in seconds.items()}}))
    print(f"report: {RunDir(options.out).path('report/index.html')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.study.defenses", __doc__, partial(add_arguments, positional=False))
    return job_main(argv, parser, run=run)


if __name__ == "__main__":
    sys.exit(main())
