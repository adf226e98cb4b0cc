"""Benchmark: the query-budget goal of issue 26 on more targets than a run's own.

    python -m jobs.bench.frontier [--config paper_digits] [--out RUN]
        [--target-sets 0-3,4-7,8-11] [--copies 50] [--noise-copies 22] [--bootstrap 1000] [--smoke-test]

`shadowfarm study queries` reads its figures off the run's targets: four on the paper configs, where 1% FPR
allows 4 false positives on digits, so neighbouring points trade places by one member. This trains the config's
farm (or resumes it) and plays the frontier's key points on several sets of targets of that one run, each set
with every other model as a shadow, as `shadowfarm attack RUN --targets SET` plays it: the same settings (the
run's results' where an attack has one, else the defaults), pseudo-targets, thresholds and crafting from that
set's shadows only. The points: `gap` (1 query); `yoqo` at 8 crafted queries and `oslo` at 8 tau levels
(`attacks.budgets.EIGHT_LEVELS`, as `study queries` plays it), each alone and + NOISE_COPIES of the run's noise
copies; and `calibrated` on COPIES noise copies (the baseline: the issue's "calibrated at 51" is these
50 copies and the clean query; reading the clean query too moves the paper configs' targets 0-3 by at most one
member).

Printed: the setup and machine; per point, TPR at 1% FPR on each set; pooled over the sets, AUC and TPR at 1%
and 0.1% FPR with 95% bootstrap intervals (stratified, `attacks.stats.metrics.bootstrap_intervals`); and the
paired difference in TPR at 1% FPR from the baseline's (the same resample for both: its 95% interval and the
share of resamples where the point is at least level). No target's membership is read but to score.

`--smoke-test`: the smoke farm (8 models, 200 digits, 2 epochs), target sets 0,1 and 2,3, 4 and 2 copies, 20
replicates: the plumbing in seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np

from attacks.budgets import EIGHT_LEVELS
from attacks.loader import load_responses
from attacks.stats.correctness import NOISE_KINDS, query_indices, with_copies
from attacks.stats.lira import collect_fallbacks
from attacks.stats.metrics import auc, bootstrap_intervals, stratified_resamples, tpr_at_fpr
from attacks.studies.game import prepare_game_statistics, study_games, target_scores
from farm.config import load_config
from farm.driver import train_farm
from farm.errors import ConfigError
from farm.plan import load_plan, plan_run
from jobs.bench.farm import load, machine
from jobs.common import job_main, job_parser, resolve_config, train_summary
from jobs.smoke import smoke_farm

N_QUERIES = 8  # yoqo's crafted queries and oslo's tau levels at every point (the "at most 8")
CRAFTED = {"yoqo": ({"n_queries": N_QUERIES}, f"yoqo ({N_QUERIES})"),
           "oslo": ({"levels": EIGHT_LEVELS}, f"oslo ({len(EIGHT_LEVELS)} levels)")}
SMOKE = {"target_sets": "0,1;2,3", "copies": 4, "noise_copies": 2, "bootstrap": 20}


def target_sets(text: str, n_models: int) -> list[tuple[int, ...]]:
    """`0-3,4-7` or `0,1;2,3` -> [(0, 1, 2, 3), (4, 5, 6, 7)]: disjoint sets of model ids, each leaving shadows."""
    sets = []
    for part in text.split(";" if ";" in text else ","):
        try:
            low, dash, high = part.partition("-")
            ids = tuple(range(int(low), int(high) + 1)) if dash else tuple(int(i) for i in part.split(","))
        except ValueError:
            raise ConfigError(f"--target-sets: expected sets like 0-3,4-7 or 0,1;2,3, got {text!r}") from None
        if not ids or min(ids) < 0 or max(ids) >= n_models:
            raise ConfigError(f"--target-sets: {part.strip()!r} must name model ids in [0, {n_models - 1}]")
        sets.append(ids)
    flat = [i for s in sets for i in s]
    if len(set(flat)) != len(flat):
        raise ConfigError(f"--target-sets: the sets must be disjoint (pooled, a target would count twice): {text!r}")
    if n_models - max(len(s) for s in sets) < 4:
        raise ConfigError(f"--target-sets: every set must leave at least 4 of the {n_models} models as shadows")
    return sets


def points(copies: int, noise_copies: int) -> list[tuple[str, str, dict, int]]:
    """(label, attack, settings over the game's, queries per example) of each point; the baseline last."""
    crafted = [point for name, (_, label) in CRAFTED.items()
               for point in [(label, name, {}, N_QUERIES),
                             (f"{label} + {noise_copies} copies", name, {"noise_copies": noise_copies},
                              N_QUERIES + noise_copies)]]
    return [("gap", "gap", {}, 1), *crafted, (f"calibrated ({copies} copies)", "calibrated", {}, copies)]


def set_scores(plan, responses, targets: tuple[int, ...], copies: int, noise_copies: int, kinds: tuple[str, ...],
               progress: bool) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({label: float64[T*N] the point's scores on `targets`, pooled}, member bool[T*N]): every game replayed with
    `targets` as its targets and every other model as a shadow."""
    shadows = np.array([m for m in range(responses.n_models) if m not in targets], dtype=np.intp)
    games = {g.name: replace(g, targets=targets, shadows=shadows)
             for g in study_games(plan, ["gap", *CRAFTED, "calibrated"])}
    for name, (settings, _) in CRAFTED.items():
        games[name] = replace(games[name], settings={**games[name].settings, **settings})
    view = prepare_game_statistics(plan, responses, [games[name] for name in CRAFTED], progress=progress)
    noisy = with_copies(view, kinds, copies)
    out = {}
    with collect_fallbacks():
        for label, name, settings, _ in points(copies, noise_copies):
            data, extra = (noisy, {"kinds": list(kinds)}) if name == "calibrated" else (view, {})
            out[label] = np.concatenate([target_scores(games[name], data, t, settings={**settings, **extra})
                                         for t in targets])
    return out, np.concatenate([responses.member[t] for t in targets])


def paired(point: np.ndarray, base: np.ndarray, member: np.ndarray, n: int) -> tuple[float, float, float]:
    """(low, high, share): the 95% interval of TPR@1%FPR(point) - TPR@1%FPR(base) over stratified resamples (the
    same resample for both), and the share of resamples where the point is at least level."""
    diff = np.array([tpr_at_fpr(point[index], member[index], fpr=0.01)[0]
                     - tpr_at_fpr(base[index], member[index], fpr=0.01)[0]
                     for index in stratified_resamples(member, n=n)])
    low, high = np.percentile(diff, [2.5, 97.5])
    return float(low), float(high), float(np.mean(diff >= 0))


def table(per_set: list[dict[str, np.ndarray]], members: list[np.ndarray], copies: int, noise_copies: int,
          n_boot: int) -> str:
    """The markdown table of every point: per set, pooled, and against the baseline."""
    member = np.concatenate(members)
    base_label = points(copies, noise_copies)[-1][0]
    lines = ["| point | queries | TPR@1%FPR per set | pooled AUC (95% CI) | pooled TPR@1%FPR (95% CI) | pooled "
             f"TPR@0.1%FPR | minus {base_label}: TPR@1%FPR (95% CI), at least level |", "|" + "---|" * 7]
    metrics = {"auc": auc, **{f: (lambda s, m, f=f: tpr_at_fpr(s, m, fpr=f)[0]) for f in (0.01, 0.001)}}
    pooled = {label: np.concatenate([s[label] for s in per_set]) for label in per_set[0]}
    for label, _, _, queries in points(copies, noise_copies):
        scores = pooled[label]
        each = " / ".join(f"{100 * tpr_at_fpr(s[label], m, fpr=0.01)[0]:.1f}%"
                          for s, m in zip(per_set, members, strict=True))
        ci = bootstrap_intervals(scores, member, metrics=metrics, n=n_boot)
        versus = "-"
        if label != base_label:
            low, high, share = paired(scores, pooled[base_label], member, n_boot)
            versus = f"{100 * low:+.1f} to {100 * high:+.1f} points, {share:.0%}"
        lines.append(f"| {label} | {queries} | {each} | {auc(scores, member):.3f} ({ci['auc'][0]:.3f}-"
                     f"{ci['auc'][1]:.3f}) | {100 * metrics[0.01](scores, member):.1f}% ({100 * ci[0.01][0]:.1f}-"
                     f"{100 * ci[0.01][1]:.1f}%) | {100 * metrics[0.001](scores, member):.1f}% | {versus} |")
    return "\n".join(lines)


def bench(args: argparse.Namespace) -> int:
    if args.smoke_test:
        args.out = smoke_farm(args.out)
        args.target_sets, args.copies = SMOKE["target_sets"], SMOKE["copies"]
        args.noise_copies, args.bootstrap = SMOKE["noise_copies"], SMOKE["bootstrap"]
    if not 1 <= args.bootstrap <= 10_000:
        raise ConfigError(f"--bootstrap: expected an integer in [1, 10000], got {args.bootstrap}")
    if not args.smoke_test:
        config = resolve_config(args.config)
        cfg = load_config(config, list(args.overrides))
        target_sets(args.target_sets, cfg.membership.n_models)  # bad sets fail before any training
        args.out = args.out or f"runs/bench_frontier/{config.stem}"
        plan = plan_run(cfg, args.out)
        print(train_summary(plan, train_farm(plan, progress=not args.quiet)))
    plan = load_plan(args.out)
    responses = load_responses(plan.run, logits=False)
    sets = target_sets(args.target_sets, responses.n_models)
    kinds = tuple(k for k in NOISE_KINDS if k in responses.query_kinds)
    have = len(query_indices(responses, kinds=kinds)) if kinds else 0
    if not 1 <= args.noise_copies < args.copies <= have:
        raise ConfigError(f"--copies/--noise-copies: need 1 <= noise copies < copies <= the run's {have} noise "
                          f"copies, got {args.noise_copies} and {args.copies}")
    print(f"setup: {plan.run.uri} | {responses.n_models} models, {responses.n_examples} examples | target sets "
          f"{'; '.join(','.join(map(str, s)) for s in sets)}, every other model a shadow | yoqo {N_QUERIES} "
          f"queries, oslo {N_QUERIES} levels, each + {args.noise_copies} copies; calibrated on {args.copies} "
          f"copies | {args.bootstrap} replicates | {time.strftime('%Y-%m-%d')}")
    print(f"machine: {machine()} | {load()}")
    start, per_set, members = time.perf_counter(), [], []
    for targets in sets:
        scores, member = set_scores(plan, responses, targets, args.copies, args.noise_copies, kinds,
                                    progress=not args.quiet)
        per_set.append(scores)
        members.append(member)
    member = np.concatenate(members)
    print(f"\npooled: {int(member.sum())} members / {int((~member).sum())} non-members over {len(sets)} sets; 1% "
          f"FPR allows {int(0.01 * (~member).sum())} false positives")
    print(table(per_set, members, args.copies, args.noise_copies, args.bootstrap))
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="paper_digits", help="a bundled config or a YAML file (default "
                        "paper_digits)")
    parser.add_argument("--out", help="the run, trained or resumed here (default runs/bench_frontier/<config>; "
                        "with --smoke-test the smoke farm's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the config (repeatable)")
    parser.add_argument("--target-sets", default="0-3,4-7,8-11",
                        help="disjoint sets of targets, as 0-3,4-7 or 0,1;2,3 (default 0-3,4-7,8-11)")
    parser.add_argument("--copies", type=int, default=50, help="noise copies of the baseline, calibrated (50)")
    parser.add_argument("--noise-copies", type=int, default=22, help="noise copies added to yoqo's and oslo's 8 "
                        "(22)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="replicates of every interval (1000)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--smoke-test", action="store_true", help="the smoke farm, tiny sets: the plumbing")


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.bench.frontier", __doc__, add_arguments), run=bench)


if __name__ == "__main__":
    sys.exit(main())
