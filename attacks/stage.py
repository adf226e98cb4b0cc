"""The attack stage: every attack on a trained run's targets, thresholds from shadows, metrics, files.

For each attack and each target model t, the shadows are the run's models that are not targets
(`attacks.modes.split_targets`: so no target's membership is ever read). Thresholds come from the shadow game
(`attacks.stats.shadow_game.play`): pseudo-targets drawn from the shadows are attacked with the other
shadows, and the thresholds for the requested FPRs and for best balanced accuracy are picked on their
pooled scores, then applied to the targets (`--tuned`: `attacks.tune.tuned`, best.json's setting, query set
and, for its FPR on the same shadows, threshold). The settings come from `attacks.settings.resolve` (explicit,
tuned, membership mode, "auto" global variance decided once per game from the targets' shadow count).
Figures are pooled over the targets. Which attacks run is
`attacks.registry.choose_attacks`; the statistics that need models are computed first
(`attacks.compute.statistics.prepare_statistics`).

Resume: an attack whose scores.parquet and metrics.json exist and whose metrics.json holds the
`settings_hash` of this call (`settings_hash`: its settings, targets, requested and reported FPRs, shadow
game, seed, tuned choice, the run's config hash and its membership.parquet) is not run again; its metrics are read back.
Both files are written atomically, then `_SUCCESS` (the settings hash, the sha256 and size of both), so a killed
attack stage leaves either an attack's files or none that counts, and a result changed after it was written is
computed again (with a note). To redo an attack, delete attacks/<name>/.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from attacks.artifacts import ATTACK_SCORES_SCHEMA, attack_dir, attack_metrics, attack_scores, jsonable
from attacks.audit_checks import reference_of, run_fidelity, split_reference, with_nonmembers
from attacks.compute.requery import requery_responses
from attacks.compute.statistics import prepare_statistics
from attacks.loader import load_responses
from attacks.modes import challenge_of, split_targets
from attacks.registry import attack_with, choose_attacks, get_attack, own_queries
from attacks.responses import Responses
from attacks.settings import resolve
from attacks.stats.lira import collect_fallbacks, fallback_summary
from attacks.stats.metrics import auc, bootstrap_ci, evaluate, fpr_key, reported_fprs, tpr_at_fpr
from attacks.stats.shadow_game import GameResult, play, pseudo_targets
from attacks.tune.tuned import load_tuned, tuned_thresholds
from farm.content import folder_problems, note, write_with_success
from farm.lock import run_lock
from farm.plan import Plan, load_plan
from farm.shards import MEMBERSHIP
from farm.storage import RunDir, json_bytes, table_bytes
from farm.worker import hold_point


@dataclass(frozen=True)
class AttackOptions:
    """How the attack stage runs; `settings` maps attack name -> its settings."""

    attacks: tuple[str, ...] | None = None  # None: every attack the run supports
    targets: tuple[int, ...] | None = None  # None: the run's membership.target_ids
    settings: dict = field(default_factory=dict)
    fpr: float = 0.01  # requested FPR: its shadow threshold's realized FPR/TPR on the target is reported
    n_pseudo: int = 4  # shadows that play the target to pick thresholds
    bootstrap: int = 200  # replicates for the confidence intervals (0: none)
    seed: int = 0
    tuned: bool = False  # use tune/<attack>/best.json (settings and query set) where it exists
    calibrate: str = "shadows"  # "nonmembers": FPR thresholds chosen on the reference pool (membership.reference)


def attack_run(run_uri: str, options: AttackOptions = AttackOptions(), *, progress: bool = True) -> list[dict]:
    """Run the attacks on a finished run; writes attacks/<name>/{scores.parquet, metrics.json}.

    Returns one metrics dict per attack (in the order they were chosen), then {"attack", "skipped"} per skipped one.
    """
    plan = load_plan(run_uri)
    with run_lock(plan.run, command="attack"):
        return _attack_locked(plan, options, progress=progress)


def _attack_locked(plan: Plan, options: AttackOptions, *, progress: bool) -> list[dict]:
    responses = load_responses(plan.run)
    targets, shadows = split_targets(plan.cfg.membership, options.targets, modes=("lira", "disjoint"))
    names, skipped = choose_attacks(options.attacks, responses)
    for name in options.settings:
        get_attack(name)
    tuned = load_tuned(plan.run, names, targets=targets) if options.tuned else {}
    settings, auto = resolve(names, explicit=options.settings, tuned=tuned, mode=plan.cfg.membership.mode,
                             n_shadows=len(shadows))
    hashes = settings_hashes(plan, settings, targets=targets, options=options, tuned=tuned)
    finished = {name: metrics for name in names if (metrics := finished_metrics(plan.run, name, hashes[name]))}
    todo = {name: chosen for name, chosen in settings.items() if name not in finished}
    results = {**finished, **_run_attacks(plan, responses, todo, targets=targets, shadows=shadows, options=options,
                                          tuned=tuned, hashes=hashes, auto=auto, progress=progress)}
    return [results[name] for name in names] + [{"attack": name, "skipped": reason} for name, reason in skipped.items()]


def _run_attacks(plan: Plan, responses: Responses, settings: dict, *, targets: list[int], shadows: np.ndarray,
                 options: AttackOptions, tuned: dict, hashes: dict, auto: dict, progress: bool) -> dict[str, dict]:
    """{attack: metrics} of the attacks in `settings` (name -> resolved settings), each written when done.

    A disjoint run's game scores the target pool with thresholds from the shadow pool (`play`'s target_pool)."""
    mode = plan.cfg.membership.mode
    target_pool = plan.target_pool if mode == "disjoint" else None
    pseudo = pseudo_targets(shadows, n_pseudo=options.n_pseudo, seed=options.seed).tolist()
    reference = reference_of(plan, targets, calibrate=options.calibrate, fpr=options.fpr)
    responses = prepare_statistics(plan, responses, settings, scored=sorted(set(targets) | set(pseudo)),
                                   everyone=shadows.tolist(), seed=options.seed, progress=progress)
    fidelity = run_fidelity(responses, targets=targets, shadows=shadows, pool=target_pool)
    results = {}
    bar = tqdm(total=len(settings) * len(targets), desc="attacks", unit="target", disable=not progress)
    for name, chosen in settings.items():
        start = time.perf_counter()
        attacked = responses
        if tuned.get(name, {}).get("queries"):
            attacked = requery_responses(plan, responses, tuned[name]["queries"], progress=progress)
        with collect_fallbacks() as fallbacks:
            game = play(attack_with(name, chosen), attacked, targets=targets, shadows=shadows,
                        n_pseudo=options.n_pseudo, seed=options.seed, fprs=reported_fprs(options.fpr),
                        on_target=lambda _: bar.update(1), target_pool=target_pool)
        thresholds, threshold_source = tuned_thresholds(game.thresholds, tuned.get(name), fpr=options.fpr,
                                                        shadows=shadows)
        game, known_scores = split_reference(game, reference, len(targets))
        thresholds, known = with_nonmembers(thresholds, known_scores, requested=options.fpr,
                                            fprs=reported_fprs(options.fpr), calibrate=options.calibrate)
        if known and options.calibrate == "nonmembers":
            threshold_source = "known non-members"
        game = replace(game, thresholds=thresholds)
        metrics = metrics_of(name, game, settings=chosen, targets=targets, n_shadows=len(shadows),
                             options=options, tuned=tuned.get(name))
        metrics.update(challenge_of(mode, plan.target_pool), auto_settings=auto.get(name),
                       calibration_fallback=fallback_summary(fallbacks), fidelity=fidelity, known_nonmembers=known)
        if known:
            metrics["n_challenge_examples"] = len(game.scores) // len(targets)
        metrics["run_queries_per_example"] = len(attacked.query_kinds)  # the run's (or tuned) query set, asked once
        metrics["seconds"] = time.perf_counter() - start
        metrics["tuned_threshold"] = threshold_source
        metrics["settings_hash"] = hashes[name]
        _write(plan.run, name, targets, game, metrics)
        results[name] = metrics
        hold_point(f"attack-{name}")  # test hook: lets a test kill the stage between two attacks
    bar.close()
    return results


def metrics_of(name: str, game: GameResult, *, settings: dict, targets: list[int], n_shadows: int,
               options: AttackOptions, tuned: dict | None) -> dict:
    """What metrics.json holds of one attack, but its time and settings hash: figures, then how they were made."""
    fprs = reported_fprs(options.fpr)
    metrics = evaluate(game.scores, game.member, thresholds=game.thresholds, fprs=fprs)
    spec = get_attack(name)
    metrics.update(attack=name, label_only=spec.label_only, description=spec.description,
                   settings=settings, target_model_ids=targets, requested_fpr=options.fpr,
                   n_pseudo_targets=options.n_pseudo, n_shadows=n_shadows, seed=options.seed,
                   tuned=tuned, queries=(tuned or {}).get("queries"), queries_per_example=own_queries(name, settings))
    if options.bootstrap:
        scores, member, n, seed = game.scores, game.member, options.bootstrap, options.seed
        metrics["auc_ci"] = bootstrap_ci(scores, member, metric_fn=auc, n=n, seed=seed)
        metrics["tpr_at_fpr_ci"] = {
            fpr_key(f): bootstrap_ci(scores, member, n=n, seed=seed,
                                     metric_fn=lambda s, m, f=f: tpr_at_fpr(s, m, fpr=f).tpr)
            for f in fprs}
    return metrics


def settings_hashes(plan: Plan, settings: dict, *, targets: Sequence[int], options: AttackOptions,
                    tuned: dict) -> dict[str, str]:
    """attack name -> `settings_hash` of this call, for the attacks in `settings` (name -> resolved settings)."""
    membership_digest = hashlib.sha256(plan.run.read_bytes(MEMBERSHIP)).hexdigest()
    return {name: settings_hash(name, settings=chosen, targets=targets, fprs=reported_fprs(options.fpr),
                                options=options, tuned=tuned.get(name), config_hash=plan.config_hash,
                                membership_digest=membership_digest) for name, chosen in settings.items()}


def settings_hash(name: str, *, settings: dict, targets: Sequence[int], fprs: Sequence[float],
                  options: AttackOptions, tuned: dict | None, config_hash: str, membership_digest: str) -> str:
    """What an attack's outputs are a function of, hashed: equal hashes mean equal scores and metrics."""
    inputs = {"attack": name, "settings": settings, "targets": list(targets), "fprs": list(fprs),
              "requested_fpr": options.fpr,
              "n_pseudo": options.n_pseudo, "bootstrap": options.bootstrap, "seed": options.seed, "tuned": tuned,
              "config_hash": config_hash, "membership_sha256": membership_digest,
              "schema": ATTACK_SCORES_SCHEMA.metadata[b"shadowfarm.schema_version"].decode()}
    if options.calibrate != "shadows":  # absent at the default: hashes of runs made before it stay valid
        inputs["calibrate"] = options.calibrate
    return hashlib.sha256(json.dumps(jsonable(inputs), sort_keys=True).encode()).hexdigest()[:16]


def finished_metrics(run: RunDir, name: str, digest: str) -> dict | None:
    """metrics.json of attack `name` when its outputs exist, were made with settings hash `digest` and match the
    records of their `_SUCCESS` (a result that does not: None, with a note, so the attack runs again)."""
    if not (run.is_file(attack_scores(name)) and run.is_file(attack_metrics(name))):
        return None
    try:
        metrics = run.read_json(attack_metrics(name))
    except (ValueError, UnicodeDecodeError):
        return None  # damaged: the attack runs again and rewrites it
    if not (isinstance(metrics, dict) and metrics.get("settings_hash") == digest):
        return None
    if problems := folder_problems(run, attack_dir(name)):
        note(f"{problems[0]}; attack {name} runs again")
        return None
    return metrics


def _write(run: RunDir, name: str, targets: Sequence[int], game: GameResult, metrics: dict) -> None:
    n = len(game.scores) // len(targets)
    examples = np.arange(n) if game.examples is None else game.examples
    table = pa.table({
        "target_model_id": np.repeat(np.asarray(targets, dtype=np.int32), n),
        "example_id": np.tile(np.asarray(examples, dtype=np.int32), len(targets)),
        "member": game.member,
        "score": game.scores,
    }, schema=ATTACK_SCORES_SCHEMA)
    write_with_success(run, attack_dir(name), metrics["settings_hash"], {
        "scores.parquet": table_bytes(table), "metrics.json": json_bytes(jsonable(metrics))})
