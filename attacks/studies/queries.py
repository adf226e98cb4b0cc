"""The query-budget frontier (issue 26): every label-only attack at several query budgets, AUC and TPR at 1% and
0.1% FPR against the queries per example the target is sent.

Each attack's points come from its spec (`AttackSpec.budgets`, `attacks.budgets`):
- "copies": the run's noise copies subsetted to the first k (k = 1, 2, 4, ... capped at what the run's query set
  has, and that count itself when the largest budget asked for is above it): the attack then reads exactly the
  answers a run whose query set holds those k copies would have recorded (a query's noise is a function of the run
  seed and its query id). A run with no copies is re-queried once (`attacks.compute.requery`, cached in the run);
- "crafted": the attack's own crafted queries, crafted once at its largest point, the smaller points reading a
  subset of them (YOQO: the checkpoints of one descent; OSLO: a subset of the tau levels), each scored both by the
  fraction answered right and by the calibrating shadows' margins (score "margins"; not for variant "global");
- "settings": each point prepared with its settings by the attack stage's `prepare_statistics` (the walk's K,
  HopSkipJump's iterations), cached in the run by the attack's own cache;
- "run": the attack on the run's query set as it is (gap, transfer, augmentation; calibrated on every non-clean
  query), sending the queries of the kinds it reads.
Queries per example are what the setting sends the target: k copies; `AttackSpec.queries` of its settings (plus
the run's noise copies it adds, `noise_copies`); HopSkipJump's measured mean over the targets' examples; the run's
queries of the kinds the attack reads.

Every point is the attack's game (`attacks.studies.game`) replayed with the point's settings: the attack stage's
targets (pooled), shadows and pseudo-targets, thresholds chosen on the shadow game only. AUC and TPR at FPR are
read off the pooled targets' ROC (as in the results table); the shadow_threshold_* columns are the rates the
shadow-chosen threshold for that FPR realizes on the targets. No target's membership is read but to score.

Best attack at each budget B (1, 2, 4, ...): the row with the highest TPR at 1% FPR among the rows that send at
most B queries per example; ties go to the higher AUC, then to the fewer queries (`best_at_budgets`).
Re-running is cheap: crafted queries, walks, re-queries and HopSkipJump distances are read from the run's caches;
the rows of attacks not asked for this time are kept (`--attacks boundary` adds boundary to the frontier).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from attacks.artifacts import QUERIES, QUERIES_SCHEMA, jsonable, study_meta, with_study_metadata, write_study
from attacks.budgets import COPY_BUDGETS, MAX_COPIES
from attacks.compute.requery import requery_responses
from attacks.compute.statistics import prepare_statistics
from attacks.loader import load_responses
from attacks.registry import ATTACKS, applicable, get_attack, own_queries
from attacks.responses import Responses
from attacks.spec import load
from attacks.stats.correctness import NOISE_KINDS, query_indices, with_copies
from attacks.stats.lira import collect_fallbacks
from attacks.stats.metrics import DEFAULT_FPRS, auc, bootstrap_intervals, evaluate, fpr_column, fpr_key, tpr_at_fpr
from attacks.studies.game import AttackGame, replay, study_games
from farm.config import QuerySpec
from farm.content import note
from farm.errors import ConfigError
from farm.plan import Plan, load_plan

MAX_BOOTSTRAP = 10_000  # replicates of the intervals, at most
RULE = ("best attack at budget B: the highest TPR at 1% FPR among the settings sending at most B queries per "
        "example; ties: the higher AUC, then fewer queries")


@dataclass(frozen=True)
class Point:
    """One point of an attack's frontier: the settings it changes, how it is scored, the copies kept ("copies")."""

    attack: str
    overrides: dict
    how: str
    copies: int | None = None


def check_copies(copies: Sequence[int]) -> tuple[int, ...]:
    """The copy budgets, sorted; ConfigError unless they are integers in [1, MAX_COPIES]."""
    bad = [c for c in copies if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_COPIES]
    if bad or not copies:
        raise ConfigError(f"--copies: expected integers in [1, {MAX_COPIES}], got {', '.join(map(str, bad)) or 'none'}")
    return tuple(sorted(set(copies)))


def copy_budgets(have: int, copies: Sequence[int]) -> list[int]:
    """The copy budgets a query set of `have` copies supports: those up to `have`, and `have` itself when a larger
    one was asked for."""
    kept = [k for k in copies if k <= have]
    return kept + [have] if have and max(copies) > have and have not in kept else kept


def study_attacks(names: Sequence[str] | None, responses: Responses) -> list[str]:
    """The attacks of the study: `names` (each label-only, with budgets, able to run on the run), or every such
    attack but those whose budgets are explicit-only (HopSkipJump)."""
    def reason(name: str) -> str | None:
        spec = get_attack(name)
        if not spec.label_only or spec.budgets is None:
            return "it has no query budget (label-only attacks only)"
        why = applicable(name, responses)
        return None if why is None or (spec.budgets.copies and spec.budgets.copy_queries) else why

    if names is None:
        return [n for n, s in ATTACKS.items() if not reason(n) and not s.budgets.explicit_only]
    for name in names:
        if why := reason(name):
            raise ConfigError(f"--attacks: attack {name!r} is not in the query-budget study: {why}")
    return list(names)


def points_of(name: str, responses: Responses, copies: Sequence[int]) -> list[Point]:
    """The frontier points of attack `name` on `responses` (`AttackSpec.budgets`)."""
    budgets = get_attack(name).budgets
    have = len(query_indices(responses, kinds=budgets.copies)) or (max(copies) if budgets.copy_queries else 0)
    kinds = tuple(k for k in budgets.copies if k in responses.query_kinds) or budgets.copies
    points = [Point(name, budgets.copy_settings(kinds), "copies", k) for k in copy_budgets(have, copies)]
    how = "crafted" if budgets.prepare else "settings"
    points += [Point(name, dict(overrides), how) for overrides in budgets.points]
    read = len(query_indices(responses, kinds=budgets.reads))
    if not budgets.points and read and (not points or read > max(p.copies for p in points)):
        points.append(Point(name, {}, "run"))
    return points


def copies_view(plan: Plan, responses: Responses, name: str, copies: Sequence[int], progress: bool) -> Responses:
    """`responses` itself when it holds copies of the attack's copy kinds, else re-queried with max(copies) of them
    (`Budgets.copy_queries`)."""
    budgets = get_attack(name).budgets
    if not budgets.copies or len(query_indices(responses, kinds=budgets.copies)):
        return responses
    specs = [QuerySpec("clean"), *budgets.copy_queries(max(copies), plan.dataset.info)]
    return requery_responses(plan, responses, specs, progress=progress)


def queries_sent(plan: Plan, game: AttackGame, responses: Responses, point: Point) -> float:
    """Queries per example the point sends the target (see the module's docstring)."""
    spec, settings = get_attack(game.name), {**game.settings, **point.overrides}
    if point.how == "copies":
        return float(point.copies)
    if spec.budgets.sent is not None:
        return float(load(spec.budgets.sent)(plan, settings, targets=game.targets, seed=game.seed))
    own = own_queries(game.name, settings)
    if own is not None:  # and the run's noise copies a crafted attack adds to its own queries (`noise_copies`)
        return float(own + settings.get("noise_copies", 0))
    return float(len(query_indices(responses, kinds=spec.budgets.reads)))


def point_views(plan: Plan, game: AttackGame, responses: Responses, points: Sequence[Point], *,
                progress: bool) -> list[Responses]:
    """The responses each point is scored on, its statistics prepared (crafted points: at once)."""
    spec = get_attack(game.name)
    scored = sorted(set(game.targets) | set(game.pseudo_targets.tolist()))
    everyone = game.shadows.tolist()
    crafted = [{**game.settings, **p.overrides} for p in points if p.how == "crafted"]
    prepared = (load(spec.budgets.prepare)(plan, responses, crafted, scored=scored, everyone=everyone, seed=game.seed,
                                           progress=progress) if crafted else [])
    views = []
    for point in points:
        if point.how == "crafted":
            views.append(prepared.pop(0))
        elif point.how == "copies":
            views.append(with_copies(responses, spec.budgets.copies, point.copies))
        else:
            views.append(prepare_statistics(plan, responses, {game.name: {**game.settings, **point.overrides}},
                                            scored=scored, everyone=everyone, seed=game.seed, progress=progress))
    return views


def _tpr(scores: np.ndarray, member: np.ndarray, *, fpr: float) -> float:
    return tpr_at_fpr(scores, member, fpr=fpr).tpr


def point_row(game: AttackGame, point: Point, queries: float, scores: np.ndarray, member: np.ndarray,
              thresholds: dict, bootstrap: int = 0) -> dict:
    """One row of QUERIES_SCHEMA: the point's figures on the pooled targets (`evaluate`, as the attack stage), with
    95% bootstrap intervals of AUC and the TPRs over `bootstrap` replicates (0: none)."""
    metrics = evaluate(scores, member, thresholds=thresholds, fprs=DEFAULT_FPRS)
    row = {"attack": game.name, "label_only": game.label_only, "how": point.how,
           "setting": json.dumps(jsonable(point.overrides | ({"copies": point.copies} if point.copies else {})),
                                 sort_keys=True),
           "queries_per_example": queries, "auc": metrics["auc"], "n_members": metrics["n_members"],
           "n_nonmembers": metrics["n_nonmembers"], "n_targets": len(game.targets), "n_pseudo_targets": game.n_pseudo}
    for f in DEFAULT_FPRS:
        row[fpr_column("tpr_at_fpr", f)] = metrics["tpr_at_fpr"][fpr_key(f)]
        row[fpr_column("false_positives_allowed", f)] = metrics["false_positives_allowed"][fpr_key(f)]
        at = metrics["at_shadow_thresholds"][fpr_key(f)]
        row[fpr_column("shadow_threshold_fpr", f)], row[fpr_column("shadow_threshold_tpr", f)] = at["fpr"], at["tpr"]
    wanted = {"auc": (auc, "auc_ci_low", "auc_ci_high")}
    for f in DEFAULT_FPRS:
        wanted[fpr_key(f)] = (partial(_tpr, fpr=f), fpr_column("tpr_at_fpr_ci_low", f),
                              fpr_column("tpr_at_fpr_ci_high", f))
    intervals = bootstrap_intervals(scores, member, metrics={k: fn for k, (fn, _, _) in wanted.items()},
                                    n=bootstrap, seed=game.seed) if bootstrap else {}
    for key, (_, low, high) in wanted.items():
        row[low], row[high] = intervals.get(key, (None, None))
    return row


def fits(game: AttackGame, point: Point, responses: Responses) -> bool:
    """Whether the point can be played: "margins" and added noise copies calibrate per example (no "global"
    variant), and noise copies must be in the run's query set."""
    per_example = game.settings.get("variant") != "global"
    copies = point.overrides.get("noise_copies", 0)
    return ((point.overrides.get("score") != "margins" and not copies or per_example)
            and copies <= len(query_indices(responses, kinds=NOISE_KINDS)))


def frontier_rows(plan: Plan, game: AttackGame, responses: Responses, *, copies: Sequence[int],
                  progress: bool = False, bar=None, bootstrap: int = 0) -> list[dict]:
    """The rows of one attack's frontier (one per point; `bootstrap` replicates for the intervals, 0: none)."""
    responses = copies_view(plan, responses, game.name, copies, progress)
    points = [p for p in points_of(game.name, responses, copies) if fits(game, p, responses)]
    rows = []
    for point, view in zip(points, point_views(plan, game, responses, points, progress=progress), strict=True):
        with collect_fallbacks():  # per-example calibration's fallbacks: the attack stage records them, not here
            result = replay(game, view, fprs=DEFAULT_FPRS, settings=point.overrides)
        rows.append(point_row(game, point, queries_sent(plan, game, view, point), result.scores, result.member,
                              result.thresholds, bootstrap=bootstrap))
        if bar is not None:
            bar.update(1)
    return rows


def best_at_budgets(rows: Sequence[dict], budgets: Sequence[int] | None = None) -> list[dict]:
    """For each budget B (None: 1, 2, 4, ... up to the first power of two covering every row): {"budget", "row"},
    row the best of `rows` sending at most B queries per example by `RULE` (None when no row fits)."""
    if budgets is None:
        top = max((r["queries_per_example"] for r in rows), default=1)
        budgets = [2 ** i for i in range(int(np.ceil(np.log2(max(top, 1)))) + 1)]
    out = []
    for budget in budgets:
        fits = [r for r in rows if r["queries_per_example"] <= budget]
        best = max(fits, key=lambda r: (r[fpr_column("tpr_at_fpr", 0.01)], r["auc"], -r["queries_per_example"]),
                   default=None)
        out.append({"budget": budget, "row": best})
    return out


def queries_study(run_uri: str, *, attacks: Sequence[str] | None = None, copies: Sequence[int] = COPY_BUDGETS,
                  progress: bool = False, bootstrap: int = 0) -> list[dict]:
    """Every point of every study attack's frontier; writes QUERIES (rows of `point_row`, with 95% intervals from
    `bootstrap` replicates; metadata "shadowfarm.study": the copy budgets, the targets, the rule, the replicates)
    and returns its rows."""
    copies = check_copies(copies)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or not 0 <= bootstrap <= MAX_BOOTSTRAP:
        raise ConfigError(f"--bootstrap: expected an integer in [0, {MAX_BOOTSTRAP}] (0: no intervals), "
                          f"got {bootstrap}")
    plan = load_plan(run_uri)
    responses = load_responses(plan.run, logits=False)
    names = study_attacks(attacks, responses)
    games = study_games(plan, names)
    kept, kept_targets = kept_rows(plan, names)
    played = {**kept_targets, **{g.name: sorted(int(t) for t in g.targets) for g in games}}
    note_mixed_targets(played)
    total = sum(len([p for p in points_of(g.name, responses, copies) if fits(g, p, responses)]) for g in games)
    bar = tqdm(total=total, desc="frontier", unit="point", disable=not progress)
    rows = [row for game in games for row in frontier_rows(plan, game, responses, copies=copies, progress=progress,
                                                           bar=bar, bootstrap=bootstrap)]
    bar.close()
    rows = kept + rows
    meta = {"copies": list(copies), "rule": RULE, "n_examples": responses.n_examples, "bootstrap": bootstrap,
            "targets": sorted({t for ts in played.values() for t in ts}), "attack_targets": played}
    write_study(plan.run, QUERIES, pa.Table.from_pylist(rows, schema=with_study_metadata(QUERIES_SCHEMA, meta)))
    return rows


def note_mixed_targets(played: dict[str, Sequence[int]]) -> None:
    """A note when the attacks' rows ({attack: its targets}, those kept from an earlier study included) come from
    different targets (`shadowfarm attack --targets` for some of them only): their rows, and the best attack at a
    budget, then compare different examples."""
    by_targets: dict[tuple, list[str]] = {}
    for name, targets in played.items():
        by_targets.setdefault(tuple(sorted(targets)), []).append(name)
    if len(by_targets) > 1:
        note("the attacks' results were played on different targets (" + "; ".join(
            f"{', '.join(names)}: targets {','.join(map(str, t))}" for t, names in by_targets.items()) + "), so their "
            "rows pool different examples (see mem/non); `shadowfarm attack RUN --targets ...` for every attack "
            "lines them up")


def kept_rows(plan: Plan, names: Sequence[str]) -> tuple[list[dict], dict[str, list[int]]]:
    """(rows, {attack: its targets}) of an earlier study of the run for the attacks not in `names` (so `--attacks
    boundary` adds boundary to the frontier); none when there is no earlier study or it has another schema."""
    if not plan.run.is_file(QUERIES) or plan.run.read_schema(QUERIES).names != QUERIES_SCHEMA.names:
        return [], {}
    rows = [r for r in plan.run.read_table(QUERIES).to_pylist() if r["attack"] not in names]
    meta = study_meta(plan.run, QUERIES)
    targets = meta.get("attack_targets", {})  # a study before per-attack targets: its targets, pooled
    return rows, {r["attack"]: targets.get(r["attack"], meta.get("targets", [])) for r in rows}
