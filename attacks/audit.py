"""Audit a model the attacker does not hold: its label-only answers, scored with the run's shadows.

The run is an ordinary farm: the attacker's own shadow models trained on the population of the run's
dataset. The target is any `LabelOracle` (`attacks.targets.open_target`): a deployed HTTP or gRPC API
(`HttpOracle`, `GrpcOracle`, journaled), an ONNX file (journaled), a TorchScript file, a model of the run
(`model:K`; demos and tests), or the journal of answers read back from exported queries (`attacks.offline`).
What the audit asks is resolved once (`attacks.audit_scope`), so an export asks the same inputs as the online
audit. The flow:

1. challenge examples: the run's population, or a seeded sample of `examples` of it;
2. the target's answers to the run's query set: each query perturbs the whole population (the same
   perturbed inputs every shadow saw, DESIGN §4) and the challenge rows go through the oracle;
3. `Responses` with the run's models plus one row for the target, whose membership is the ground truth
   when given and all False otherwise (attacks never read a target's membership: registry contract);
4. statistics needing model access (`attacks.compute.statistics.audit_statistics`): `transfer` (models
   trained on the target's clean labels) and `boundary` (HopSkipJump through the oracle for the target; Ray
   tasks for the shadows, cached as in `shadowfarm attack`: the same seed and example ids give the target
   and shadows the same random probes);
5. per attack, the shadow game of `shadowfarm attack` (`attacks.stats.shadow_game.play`): the target's
   scores, thresholds chosen on the shadows only (pseudo-targets drawn from the shadows), the decision
   `score >= threshold` at the requested FPR, and with ground truth the metrics of `shadowfarm attack`
   (attacks.stats.metrics.evaluate).

The shadows are the run's models minus its `membership.target_ids` (as in `shadowfarm attack`, so serving
the run's target model gives the scores `shadowfarm attack` gives it), or an explicit list; a `model:K` target
is dropped from them (one line on stderr). `tuned`: tune/<attack>/best.json's setting, query set (the target
answers it through its oracle) and threshold (`attacks.tune.tuned`). Label-only
attacks only: the target answers labels. Writes `<run>/audit/<target key>/` (key: a hash of the target's
URL or path): target.json, <attack>/scores.parquet (`attacks.artifacts.AUDIT_SCORES_SCHEMA`), <attack>/metrics.json,
and the journal/ of a journaled target (attacks.oracles.journal).
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial

import numpy as np
import pyarrow as pa

from attacks.artifacts import AUDIT_SCORES_SCHEMA, audit_metrics, audit_target, jsonable
from attacks.audit_checks import audit_fidelity, with_nonmembers
from attacks.audit_scope import AuditOptions, audit_scope
from attacks.compute.requery import requery_responses, target_pred
from attacks.compute.statistics import audit_statistics
from attacks.loader import load_responses
from attacks.modes import challenge_of
from attacks.registry import attack_with, get_attack, own_queries
from attacks.responses import Responses
from attacks.stats.lira import collect_fallbacks, fallback_summary
from attacks.stats.metrics import auc, bootstrap_ci, evaluate, fpr_key, reported_fprs
from attacks.stats.shadow_game import play, pseudo_targets
from attacks.targets import journal_dir, open_target, target_key
from attacks.tune.tuned import tuned_thresholds
from farm.content import write_recorded, write_with_success
from farm.errors import ConfigError
from farm.plan import Plan, load_plan
from farm.storage import RunDir, json_bytes, table_bytes

__all__ = ["AuditOptions", "audit_run", "journal_dir", "open_target", "target_key"]


def with_target(responses: Responses, pred: np.ndarray, examples: np.ndarray, member: np.ndarray) -> Responses:
    """The run's models on the challenge examples, plus the target as the last row (pred int16[K, Q])."""
    return Responses(member=np.vstack([responses.member[:, examples], member[None]]),
                     pred=np.concatenate([responses.pred[:, examples], pred[None]]),
                     labels=responses.labels[examples], query_kinds=responses.query_kinds,
                     query_params=responses.query_params, logits=None,
                     model_ids=np.append(np.arange(responses.n_models), -1).astype(np.int32))


def audit_run(run_uri: str, oracle, *, target: str, options: AuditOptions | None = None,
              provenance: dict | None = None, progress: bool = True) -> list[dict]:
    """Audit `oracle` (a LabelOracle named `target`) with the run's shadows; returns one dict per attack.

    Writes <run>/audit/<target_key(target)>/...; provenance (e.g. the HTTP settings) goes into target.json.
    """
    start, options = time.perf_counter(), options or AuditOptions()
    plan = load_plan(run_uri)
    mode, pool = plan.cfg.membership.mode, plan.target_pool
    responses = load_responses(plan.run, logits=False)
    scope = audit_scope(plan, responses, options, target=target)
    names, tuned, settings, shadows = scope.names, scope.tuned, scope.settings, scope.shadows
    examples, scored, member = scope.examples, scope.scored, scope.member
    responses, column_pool = with_target_answers(plan, responses, oracle, examples=scored, member=member,
                                                  progress=progress)
    pseudo = pseudo_targets(shadows, n_pseudo=options.n_pseudo, seed=options.seed).tolist()
    responses = audit_statistics(plan, responses, oracle, settings, examples=scored, pseudo=pseudo,
                                 shadows=shadows.tolist(), seed=options.seed, progress=progress)
    fidelity = audit_fidelity(responses, shadows=shadows, n_scored=len(scored))
    answer = partial(target_pred, oracle, info=plan.dataset.info, x=plan.dataset.x, examples=scored,
                     progress=progress)
    results = [_audit_attack(plan.run, name, tuned_responses(plan, responses, answer, tuned.get(name),
                                                              examples=scored, shadows=shadows, progress=progress),
                             settings[name],
                             target=target, examples=examples, shadows=shadows, n_pseudo_targets=len(pseudo),
                             options=options, ground_truth=member is not None, target_pool=column_pool,
                             tuned=tuned.get(name),
                             about={**challenge_of(mode, pool), "n_challenge_examples": len(examples),
                                    "auto_settings": scope.auto.get(name), "fidelity": fidelity})
               for name in names]
    write_recorded(plan.run, audit_target(target_key(target)), json_bytes(jsonable({
        "target": target, "target_key": target_key(target), **(provenance or {}),
        "budget": getattr(oracle, "budget", None), "queries_used": getattr(oracle, "queries_used", None),
        "journal_hits": getattr(oracle, "journal_hits", None), "n_examples": len(examples),
        "shadows": shadows.tolist(), "attacks": names, "skipped": scope.skipped, "ground_truth": member is not None,
        "n_known_nonmembers": len(scope.known), "calibrate": options.calibrate, "fidelity": fidelity,
        "seconds": time.perf_counter() - start})))
    return results + [{"attack": name, "skipped": reason} for name, reason in scope.skipped.items()]


def tuned_responses(plan: Plan, responses: Responses, answer, tuned: dict | None, *, examples: np.ndarray,
                     shadows: np.ndarray, progress: bool) -> Responses:
    """The audit's `responses` under the tuned query set (unchanged when there is none): the shadows' answers
    from the query engine, the target's through its oracle, answer(queries=...) -> int16[K, Q]."""
    if not (tuned or {}).get("queries"):
        return responses
    if plan.cfg.membership.mode != "lira":
        raise ConfigError("--tuned: tuned query sets are audited on lira-mode runs only (membership.mode)")
    return requery_responses(plan, responses, tuned["queries"], models=shadows.tolist(), answer=answer,
                             examples=examples, progress=progress)


def with_target_answers(plan: Plan, responses: Responses, oracle, *, examples: np.ndarray,
                         member: np.ndarray | None, progress: bool) -> tuple[Responses, np.ndarray | None]:
    """(responses, target_pool): the run's models on the challenge examples plus the oracle's answers as the
    last row; target_pool None. A disjoint run's responses add the shadow-pool examples after the challenge
    ones (its shadow game and attack classifiers use them), where the target is not queried (pred -1, never
    read: `play` keeps the target's scores on the challenge columns, target_pool bool[K + P] marks them)."""
    pred = target_pred(oracle, queries=plan.queries, info=plan.dataset.info, x=plan.dataset.x, examples=examples,
                       progress=progress)
    truth = np.zeros(len(examples), bool) if member is None else member[examples]
    if plan.cfg.membership.mode == "lira":
        return with_target(responses, pred, examples, truth), None
    shadow_pool = np.flatnonzero(~plan.target_pool)
    columns = np.concatenate([examples, shadow_pool])
    pred = np.concatenate([pred, np.full((len(shadow_pool), pred.shape[1]), -1, pred.dtype)])
    column_pool = np.arange(len(columns)) < len(examples)
    return with_target(responses, pred, columns, np.concatenate([truth, np.zeros(len(shadow_pool), bool)])), column_pool


def _audit_attack(run: RunDir, name: str, responses: Responses, settings: dict, *, target: str,
                  examples: np.ndarray, shadows: np.ndarray, n_pseudo_targets: int, options: AuditOptions,
                  ground_truth: bool, target_pool: np.ndarray | None = None, about: dict | None = None,
                  tuned: dict | None = None) -> dict:
    """One attack on the target (the last row of `responses`, on the challenge `examples`): its result, with
    its files written."""
    fprs = reported_fprs(options.fpr)
    with collect_fallbacks() as fallbacks:
        game = play(attack_with(name, settings), responses, targets=[responses.n_models - 1], shadows=shadows,
                    n_pseudo=options.n_pseudo, seed=options.seed, fprs=fprs, target_pool=target_pool)
    thresholds, threshold_source = tuned_thresholds(game.thresholds, tuned, fpr=options.fpr, shadows=shadows)
    n = len(examples)  # the challenge examples' scores, then the known non-members'
    thresholds, known = with_nonmembers(thresholds, game.scores[n:], requested=options.fpr, fprs=fprs,
                                        calibrate=options.calibrate)
    threshold_source = "known non-members" if known and options.calibrate == "nonmembers" else threshold_source
    game = replace(game, thresholds=thresholds, scores=game.scores[:n], member=game.member[:n])
    flagged = game.scores >= game.thresholds[fpr_key(options.fpr)]
    result = {"attack": name, "description": get_attack(name).description, "settings": settings,
              "target": target, "requested_fpr": options.fpr, "shadow_thresholds": game.thresholds,
              "n_examples": len(examples), "n_flagged": int(flagged.sum()), "n_shadows": len(shadows),
              "n_pseudo_targets": n_pseudo_targets, "seed": options.seed, "ground_truth": ground_truth,
              "tuned": tuned, "queries": (tuned or {}).get("queries"), "tuned_threshold": threshold_source,
              "queries_per_example": own_queries(name, settings),
              "calibration_fallback": fallback_summary(fallbacks), "known_nonmembers": known,
              **(about or {})}
    if ground_truth:
        result.update(evaluate(game.scores, game.member, thresholds=game.thresholds, fprs=fprs))
        if options.bootstrap:
            result["auc_ci"] = bootstrap_ci(game.scores, game.member, metric_fn=auc, n=options.bootstrap,
                                            seed=options.seed)
    key = target_key(target)
    scores = pa.table({
        "example_id": examples.astype(np.int32), "score": game.scores, "flagged": flagged,
        "member": pa.array(game.member if ground_truth else [None] * len(examples), pa.bool_()),
    }, schema=AUDIT_SCORES_SCHEMA)
    write_with_success(run, audit_metrics(key, name).rpartition("/")[0], key, {  # content records, for verify
        "scores.parquet": table_bytes(scores), "metrics.json": json_bytes(jsonable(result))})
    return result
