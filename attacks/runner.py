"""Run attacks on a trained run: scores for each target, thresholds from shadows, metrics, files.

For each attack and each target model t, the shadows are the run's models that are not targets
(so no target's membership is ever read). Thresholds come from the shadow game: pseudo-targets
drawn from the shadows are attacked with the other shadows (`attacks.stats.shadow_game.shadow_scores`),
and the thresholds for the requested FPRs and for best balanced accuracy are picked on their
pooled scores, then applied to the targets. Figures are pooled over the targets.

Resume: an attack whose scores.parquet and metrics.json exist and whose metrics.json holds the
`settings_hash` of this call (`settings_hash`: its settings, targets, FPRs, shadow game, seed, tuned
choice, the run's config hash and its membership.parquet) is not run again; its metrics are read back.
Both files are written atomically, metrics.json last, so a killed attack stage leaves either an
attack's two files or none that counts. To redo an attack, delete attacks/<name>/.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from attacks.compute.boundary import HsjaSettings, boundary_distances
from attacks.compute.requery import requery, with_queries
from attacks.compute.transfer import transfer_statistic
from attacks.loader import load_responses
from attacks.methods.boundary import STATISTIC as BOUNDARY
from attacks.methods.transfer import STATISTIC as TRANSFER
from attacks.registry import ATTACKS, get_attack, resolve_settings, run_attack
from attacks.responses import Responses
from attacks.stats.correctness import query_indices
from attacks.stats.metrics import auc, bootstrap_ci, evaluate, fpr_key, pool, shadow_thresholds, tpr_at_fpr
from attacks.stats.shadow_game import pseudo_targets, shadow_scores
from farm.config import from_dict
from farm.driver import ensure_ray, load_plan
from farm.errors import ConfigError
from farm.shards import MEMBERSHIP, schema
from farm.storage import RunDir
from farm.worker import hold_point

SCORES_SCHEMA = schema(
    [("target_model_id", pa.int32()), ("example_id", pa.int32()), ("member", pa.bool_()), ("score", pa.float64())],
    file="scores",
)


# Attacks left out of the default list because of their cost; they run when asked for by name.
EXPLICIT_ONLY = ("boundary",)


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


def applicable(name: str, responses: Responses) -> str | None:
    """Why attack `name` cannot run on these responses, or None when it can."""
    spec = get_attack(name)
    if not spec.label_only and responses.logits is None:
        return "the shards have no logits (confidence baseline)"
    if spec.needs and not len(query_indices(responses, kinds=spec.needs)):
        return f"needs queries of kind {' or '.join(spec.needs)}"
    return None


def choose_attacks(names: Sequence[str] | None, responses: Responses, *,
                   subject: str = "this run") -> tuple[list[str], dict[str, str]]:
    """(attacks to run, {skipped attack: reason}); explicitly requested attacks must apply to `subject`."""
    if names is not None:
        for name in names:
            reason = applicable(name, responses)
            if reason:
                raise ConfigError(f"attack {name!r} cannot run on {subject}: {reason}")
        return list(names), {}
    chosen, skipped = [], {}
    for name in ATTACKS:
        reason = applicable(name, responses)
        if name in EXPLICIT_ONLY and not reason:
            reason = f"runs HopSkipJump on every example (many queries); ask for it with --attacks {name}"
        if reason:
            skipped[name] = reason
        else:
            chosen.append(name)
    return chosen, skipped


def game(plan, options: AttackOptions) -> tuple[list[int], np.ndarray]:
    m = plan.cfg.membership
    if m.mode != "lira":
        raise ConfigError("membership.mode: the attack stage supports lira-mode runs (disjoint: not yet)")
    targets = list(options.targets if options.targets is not None else m.target_ids)
    for t in targets:
        if not 0 <= t < m.n_models:
            raise ConfigError(f"--targets: {t} is not a model id in [0, {m.n_models})")
    shadows = np.array([i for i in range(m.n_models) if i not in set(targets)], dtype=np.intp)
    if len(shadows) < 3:
        raise ConfigError(f"membership.n_models: {len(shadows)} shadows is too few (need at least 3)")
    return targets, shadows


def prepare_statistics(plan, responses: Responses, settings: dict, *, scored: Sequence[int],
                       everyone: Sequence[int], seed: int, progress: bool = True, local: bool = False) -> Responses:
    """Compute the statistics that need model access (transfer losses, boundary distances).

    settings: attack name -> resolved settings (only attacks present are prepared); scored: the models
    that are attacked (targets, pseudo-targets); everyone: all models a per-example calibration reads.
    """
    if TRANSFER not in settings and BOUNDARY not in settings:
        return responses
    if not local:
        ensure_ray()
    if TRANSFER in settings:
        stat = transfer_statistic(responses, cfg=plan.cfg, info=plan.dataset.info, x=plan.dataset.x,
                                  models=sorted(scored), n_models=settings[TRANSFER]["n_models"], seed=seed,
                                  local=local)
        responses = responses.with_statistic(TRANSFER, stat)
    if BOUNDARY in settings:
        chosen = settings[BOUNDARY]
        models = sorted(scored) if chosen["variant"] == "threshold" else sorted(set(scored) | set(everyone))
        hsja = HsjaSettings(max_iter=chosen["max_iter"], init_evals=chosen["init_evals"],
                            max_evals=chosen["max_evals"], budget=chosen["budget"], seed=seed)
        stat = boundary_distances(plan.run, x=plan.dataset.x, labels=plan.dataset.y,
                                  bounds=plan.dataset.info.bounds, models=models, n_models=responses.n_models,
                                  settings=hsja, progress=progress, local=local)
        responses = responses.with_statistic(BOUNDARY, stat)
    return responses


def attack_run(run_uri: str, options: AttackOptions = AttackOptions(), *, progress: bool = True) -> list[dict]:
    """Run the attacks on a finished run; writes attacks/<name>/{scores.parquet, metrics.json}."""
    plan = load_plan(run_uri)
    run = plan.run
    responses = load_responses(run)
    targets, shadows = game(plan, options)
    names, skipped = choose_attacks(options.attacks, responses)
    for name in options.settings:
        get_attack(name)
    tuned = load_tuned(run, names) if options.tuned else {}
    settings = {name: resolve_settings(name, options.settings.get(name, tuned.get(name, {}).get("settings")))
                for name in names}
    fprs = sorted({0.001, 0.01, options.fpr})
    membership_digest = hashlib.sha256(run.read_bytes(MEMBERSHIP)).hexdigest()
    hashes = {name: settings_hash(name, settings=settings[name], targets=targets, fprs=fprs, options=options,
                                  tuned=tuned.get(name), config_hash=plan.config_hash,
                                  membership_digest=membership_digest) for name in names}
    finished = {name: metrics for name in names if (metrics := finished_metrics(run, name, hashes[name]))}
    order, names = names, [name for name in names if name not in finished]
    settings = {name: settings[name] for name in names}
    pseudo = pseudo_targets(shadows, n_pseudo=options.n_pseudo, seed=options.seed).tolist()
    responses = prepare_statistics(plan, responses, settings, scored=sorted(set(targets) | set(pseudo)),
                                   everyone=shadows.tolist(), seed=options.seed, progress=progress)
    results = dict(finished)
    bar = tqdm(total=len(names) * len(targets), desc="attacks", unit="target", disable=not progress)
    for name in names:
        start = time.perf_counter()
        responses_of = responses
        if tuned.get(name, {}).get("queries"):
            responses_of = _requeried(plan, responses, tuned[name]["queries"], progress=progress)

        def attack(resp, *, target, shadows, _name=name):
            return run_attack(_name, resp, target=target, shadows=shadows, settings=settings[_name])

        target_pairs, shadow_pairs = [], []
        for t in targets:
            target_pairs.append((attack(responses_of, target=t, shadows=shadows), responses.member[t]))
            shadow_pairs.append(shadow_scores(attack, responses_of, target=t, shadows=shadows,
                                              n_pseudo=options.n_pseudo, seed=options.seed))
            bar.update(1)
        scores, member = pool(target_pairs)
        thresholds = shadow_thresholds(*pool(shadow_pairs), fprs=fprs)
        metrics = evaluate(scores, member, thresholds=thresholds, fprs=fprs)
        spec = get_attack(name)
        metrics.update(attack=name, label_only=spec.label_only, description=spec.description,
                       settings=settings[name], target_model_ids=targets, requested_fpr=options.fpr,
                       n_pseudo_targets=options.n_pseudo, n_shadows=len(shadows), seed=options.seed,
                       tuned=tuned.get(name), queries=(tuned.get(name) or {}).get("queries"))
        if options.bootstrap:
            metrics["auc_ci"] = bootstrap_ci(scores, member, metric_fn=auc, n=options.bootstrap, seed=options.seed)
            metrics["tpr_at_fpr_ci"] = {
                fpr_key(f): bootstrap_ci(scores, member, n=options.bootstrap, seed=options.seed,
                                         metric_fn=lambda s, m, f=f: tpr_at_fpr(s, m, fpr=f).tpr)
                for f in fprs}
        metrics["seconds"] = time.perf_counter() - start
        metrics["settings_hash"] = hashes[name]
        _write(run, name, targets, target_pairs, metrics)
        results[name] = metrics
        hold_point(f"attack-{name}")  # test hook: lets a test kill the stage between two attacks
    bar.close()
    return [results[name] for name in order] + [{"attack": name, "skipped": reason} for name, reason in skipped.items()]


def settings_hash(name: str, *, settings: dict, targets: Sequence[int], fprs: Sequence[float],
                  options: AttackOptions, tuned: dict | None, config_hash: str, membership_digest: str) -> str:
    """What an attack's outputs are a function of, hashed: equal hashes mean equal scores and metrics."""
    inputs = {"attack": name, "settings": settings, "targets": list(targets), "fprs": list(fprs),
              "n_pseudo": options.n_pseudo, "bootstrap": options.bootstrap, "seed": options.seed, "tuned": tuned,
              "config_hash": config_hash, "membership_sha256": membership_digest,
              "schema": SCORES_SCHEMA.metadata[b"shadowfarm.schema_version"].decode()}
    return hashlib.sha256(json.dumps(jsonable(inputs), sort_keys=True).encode()).hexdigest()[:16]


def finished_metrics(run: RunDir, name: str, digest: str) -> dict | None:
    """metrics.json of attack `name` when its outputs exist and were made with settings hash `digest`."""
    base = f"attacks/{name}"
    if not (run.is_file(f"{base}/scores.parquet") and run.is_file(f"{base}/metrics.json")):
        return None
    try:
        metrics = run.read_json(f"{base}/metrics.json")
    except (ValueError, UnicodeDecodeError):
        return None  # damaged: the attack runs again and rewrites it
    return metrics if isinstance(metrics, dict) and metrics.get("settings_hash") == digest else None


def load_tuned(run: RunDir, names: Sequence[str]) -> dict:
    """attack name -> the chosen setting of tune/<attack>/best.json, for the attacks that were tuned."""
    found = {}
    for name in names:
        rel = f"tune/{name}/best.json"
        if run.is_file(rel):
            best = run.read_json(rel)
            found[name] = {"settings": best["chosen"]["settings"], "queries": best["chosen"]["queries"],
                           "threshold": best["threshold"], "fpr": best["fpr"], "metric": best["metric"]}
    if not found:
        raise ConfigError(f"--tuned: no tune results under {run.path('tune')}; run `shadowfarm tune RUN --attack NAME`")
    return found


def _requeried(plan, responses: Responses, specs: list[dict], *, progress: bool) -> Responses:
    """The responses of every model under another query set (the query engine caches them)."""
    parsed = from_dict({"queries": specs}).queries
    queries, pred = requery(plan.run, specs=parsed, info=plan.dataset.info, x=plan.dataset.x,
                            labels=plan.dataset.y, models=list(range(responses.n_models)),
                            n_models=responses.n_models, seed=plan.cfg.seed, progress=progress)
    return with_queries(responses, queries, pred)


def _write(run: RunDir, name: str, targets: Sequence[int], pairs, metrics: dict) -> None:
    n = len(pairs[0][0])
    table = pa.table({
        "target_model_id": np.repeat(np.asarray(targets, dtype=np.int32), n),
        "example_id": np.tile(np.arange(n, dtype=np.int32), len(targets)),
        "member": np.concatenate([m for _, m in pairs]),
        "score": np.concatenate([s for s, _ in pairs]),
    }, schema=SCORES_SCHEMA)
    run.write_table(f"attacks/{name}/scores.parquet", table)
    run.write_json(f"attacks/{name}/metrics.json", jsonable(metrics))


def jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
