"""Benchmark: the label-only paper's overfit regimes (Choquette-Choo et al. 2007.14321), our figures beside theirs.

    python -m jobs.bench.paper [--configs paper_adult,paper_digits,paper_synthetic] [--out-root runs/bench_paper]
        [--attacks gap,noise,...] [--set KEY=VALUE] [--bootstrap 100] [--smoke-test]

Trains each config's farm (jobs/configs/paper_*.yaml) through the library (`farm.plan.plan_run`,
`farm.driver.train_farm`) into OUT_ROOT/<config>, runs the attacks on it (`attacks.stage.attack_run`), and prints
the setup, the machine, each config's mean train/test accuracy and gap over its models, and one table: per config
and attack, our MI accuracy and AUC beside the paper's MI accuracy. Re-running resumes: finished models are not
trained again and finished attacks (same settings) are read back.

What is reported. MI accuracy = `balanced_accuracy` of the attack's metrics.json: the balanced accuracy on the
targets (4 per config, pooled; every example of the population, as member or non-member of each target) at the
threshold chosen on the shadows' pseudo-targets, never on the targets' membership; AUC pooled over the same
targets. The paper reports MI accuracy on a balanced member/non-member set with the threshold (or attack model)
fit on a source model; its Adult figures (10k training points): gap 58.7%, confidence-vector 59.9%, noise 58.7%.
Our `confidence_classifier` (an attack model on sorted confidence vectors, fit on shadows) stands for its
confidence-vector attack. The paper has no digits or synthetic figures (its other data sets do not ship offline).

`--smoke-test`: every config shrunk (`SMOKE_OVERRIDES`: 6 models, 200 examples, 2 epochs) into
OUT_ROOT-smoke, 2 pseudo-targets, no bootstrap, 5 boosting rounds for `confidence_classifier`: the plumbing
end to end in seconds.
"""

from __future__ import annotations

import argparse
import sys
import time

from attacks.loader import load_responses
from attacks.registry import applicable, get_attack
from attacks.report.core import model_stats
from attacks.stage import AttackOptions, attack_run
from farm.config import load_config
from farm.driver import train_farm
from farm.plan import plan_run
from farm.storage import RunDir
from jobs.bench.farm import machine
from jobs.common import csv_list, job_main, job_parser, resolve_config

CONFIGS = ("paper_adult", "paper_digits", "paper_synthetic")
# The paper's attacks and ours beside them: label-only first, then the confidence baselines.
ATTACKS = ("gap", "noise", "augmentation", "calibrated", "transfer", "confidence_classifier", "loss",
           "lira_confidence")
# Choquette-Choo et al. (arXiv 2007.14321), MI accuracy (%), by data set and our attack name.
PAPER_MI_ACCURACY = {"adult": {"gap": 58.7, "confidence_classifier": 59.9, "noise": 58.7}}
PAPER_NAMES = {"confidence_classifier": "confidence-vector", "noise": "noise robustness", "gap": "gap",
               "augmentation": "data augmentation"}
SMOKE_OVERRIDES = ["membership.n_models=6", "membership.target_ids=[0]", "data.subsample=200", "train.epochs=2",
                   "model.hidden=[16]", "farm.group_size=6", "farm.num_actors=1"]
# The smoke test's attack model: a few boosting rounds (sklearn's OpenMP threads are slow on a loaded machine).
SMOKE_SETTINGS = {"confidence_classifier": {"max_iter": 5}}
HEADERS = ("config", "attack", "type", "MI acc (ours)", "AUC (ours)", "MI acc (paper)", "paper's attack")


def bench_config(name: str, args: argparse.Namespace) -> tuple[list[tuple], dict]:
    """Train and attack one config; prints its setup and accuracy; returns (table rows, timings and gap)."""
    overrides = (SMOKE_OVERRIDES if args.smoke_test else []) + list(args.overrides)
    cfg = load_config(resolve_config(name), overrides)
    out = f"{args.out_root}{'-smoke' if args.smoke_test else ''}/{name}"
    plan = plan_run(cfg, out)
    m, t = cfg.membership, cfg.train
    print(f"{name}: {plan.dataset.info.name} N={len(plan.dataset)} (~{int(m.p_in * len(plan.dataset)):,} training "
          f"rows per model) | {cfg.model.name} {list(cfg.model.hidden)} | {t.epochs} epochs, batch {t.batch_size}, "
          f"{t.optimizer} lr {t.lr:g}, weight decay {t.weight_decay:g} | {m.n_models} models: targets "
          f"{list(m.target_ids)}, {m.n_models - len(m.target_ids)} shadows | {len(plan.queries)} queries | {out}")
    start = time.perf_counter()
    trained = train_farm(plan, progress=False)
    train_s = time.perf_counter() - start
    stats = model_stats(RunDir(out))
    gap = 100 * stats["gap"].mean()
    print(f"  models: train accuracy {100 * stats['train_accuracy'].mean():.1f}%, test accuracy "
          f"{100 * stats['test_accuracy'].mean():.1f}%, gap {gap:.1f} points (means over {len(stats['gap'])} models; "
          f"gap range {100 * stats['gap'].min():.1f}-{100 * stats['gap'].max():.1f}) | trained now "
          f"{len(trained)} in {train_s:.0f} s")
    responses = load_responses(plan.run)
    wanted = [a for a in args.attacks if applicable(a, responses) is None]
    for a in sorted(set(args.attacks) - set(wanted)):
        print(f"  skipped {a}: {applicable(a, responses)}")
    start = time.perf_counter()
    options = AttackOptions(attacks=tuple(wanted), n_pseudo=2 if args.smoke_test else args.n_pseudo,
                            bootstrap=0 if args.smoke_test else args.bootstrap, seed=args.seed,
                            settings={a: SMOKE_SETTINGS[a] for a in wanted if a in SMOKE_SETTINGS and args.smoke_test})
    results = attack_run(out, options, progress=False)
    attack_s = time.perf_counter() - start
    print(f"  attacks: {len(wanted)} in {attack_s:.0f} s (finished ones are read back)")
    paper = PAPER_MI_ACCURACY.get(plan.dataset.info.name, {})
    rows = []
    for r in results:
        if "skipped" in r:
            continue
        ours = r.get("balanced_accuracy")
        rows.append((name, r["attack"], "label-only" if r["label_only"] else "confidence",
                     "-" if ours is None else f"{100 * ours:.1f}%", _auc(r),
                     f"{paper[r['attack']]:.1f}%" if r["attack"] in paper else "-",
                     PAPER_NAMES.get(r["attack"], "-") if r["attack"] in paper else "-"))
    return rows, {"config": name, "gap": gap, "train_s": train_s, "attack_s": attack_s, "results": results}


def _auc(r: dict) -> str:
    ci = r.get("auc_ci")
    return f"{r['auc']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def ordering(summary: dict) -> str:
    """One line: the best label-only and the best confidence attack by MI accuracy, and their difference."""
    scored = [r for r in summary["results"] if r.get("balanced_accuracy") is not None]
    best = {}
    for label_only in (True, False):
        group = [r for r in scored if r["label_only"] == label_only]
        if group:
            best[label_only] = max(group, key=lambda r: r["balanced_accuracy"])
    if len(best) < 2:
        return f"{summary['config']}: ordering not checked (needs a label-only and a confidence attack)"
    lo, conf = best[True], best[False]
    diff = 100 * (lo["balanced_accuracy"] - conf["balanced_accuracy"])
    return (f"{summary['config']}: best label-only {lo['attack']} {100 * lo['balanced_accuracy']:.1f}% vs best "
            f"confidence {conf['attack']} {100 * conf['balanced_accuracy']:.1f}%: {diff:+.1f} points")


def markdown_table(rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def bench(args: argparse.Namespace) -> int:
    args.attacks = csv_list(args.attacks)
    for name in args.attacks:
        get_attack(name)  # an unknown name fails before any training
    configs = csv_list(args.configs)
    size = "smoke test: " + " ".join(SMOKE_OVERRIDES) if args.smoke_test else f"{args.n_pseudo} pseudo-targets"
    print(f"setup: {', '.join(configs)} | attacks {', '.join(args.attacks)} | {size} | bootstrap "
          f"{0 if args.smoke_test else args.bootstrap} | seed {args.seed} | {time.strftime('%Y-%m-%d')}")
    print(f"machine: {machine()}")
    start, rows, summaries = time.perf_counter(), [], []
    for name in configs:
        config_rows, summary = bench_config(name, args)
        rows += config_rows
        summaries.append(summary)
    print("\nMI acc = balanced accuracy on the pooled targets at the threshold chosen on shadows; AUC [95% bootstrap "
          "interval] pooled over the targets")
    print(markdown_table(rows))
    print("\nlabel-only vs confidence (the paper: within a few points):")
    for summary in summaries:
        print("  " + ordering(summary))
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated (default: {','.join(CONFIGS)})")
    parser.add_argument("--out-root", default="runs/bench_paper", help="runs go to OUT_ROOT/<config>")
    parser.add_argument("--attacks", default=",".join(ATTACKS),
                        help="comma-separated; those a config's queries cannot serve are skipped")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of every config (repeatable)")
    parser.add_argument("--n-pseudo", type=int, default=4, help="shadows that play the target (default 4)")
    parser.add_argument("--bootstrap", type=int, default=100, help="bootstrap replicates of the AUC interval")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke-test", action="store_true")


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.bench.paper", __doc__, add_arguments), run=bench)


if __name__ == "__main__":
    sys.exit(main())
