"""The models' responses on out-of-distribution inputs, as Ray tasks (the model access of the OOD study).

- `query_ood`: every model answers the run's own query set (same kinds, parameters and seeds) applied to
  the OOD inputs, through a `ModelOracle` (labels only); the clean logits are recorded beside them for the
  confidence baselines, exactly as the farm records them for the population (white-box access to the
  attacker's own shadows; for the target, the same access the farm's recorded logits assume).
  Perturbations are drawn for the whole OOD batch in every task, so every model sees identical inputs.
- `transfer_ood`: the target's transfer models (`attacks.compute.transfer.train_transfer_models`: trained on the
  population relabelled by the target, same seeds as the attack stage) scored on the OOD inputs at their
  "labels" (the study's rule: the target's own clean prediction), with the attack's score; the IN/OUT
  variant's models train on halves of the population and the OOD inputs (labelled by the target) together.
- `boundary_ood`: HopSkipJump distances of the OOD inputs for a target, with the attack's settings.

Every fan-out is one `attacks.compute.tasks.map_tasks` (bounded, completion order). Nothing here is cached on
disk: OOD inputs are cheap to query; HopSkipJump is bounded by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import ray
import torch

from attacks.compute.boundary import HsjaSettings, hsja_settings
from attacks.compute.tasks import map_tasks, task
from attacks.compute.transfer import check_settings, train_transfer_models, transfer_scores, transfer_seed
from attacks.methods.boundary import STATISTIC as BOUNDARY
from attacks.methods.transfer import SPLIT
from attacks.methods.transfer import STATISTIC as TRANSFER
from farm.config import ModelConfig, RunConfig
from farm.data import DatasetInfo
from farm.queries import Query, apply_query


@task
def _responses_task(run_uri: str, model_cfg: ModelConfig, info: DatasetInfo, model_ids: Sequence[int],
                    x: np.ndarray, queries: Sequence[Query], logits: bool) -> list:
    from attacks.oracles.model import ModelOracle
    from farm.models import build_model
    from farm.shards import load_weights
    from farm.storage import RunDir

    torch.set_num_threads(1)
    inputs = torch.tensor(x)
    perturbed = [apply_query(q, inputs, info=info) for q in queries]
    out = []
    for m in model_ids:
        model = build_model(model_cfg, info=info)
        model.load_state_dict(load_weights(RunDir(run_uri), m))
        oracle = ModelOracle(model, input_shape=info.shape)
        pred = np.stack([oracle.predict_labels(p) for p in perturbed], axis=1).astype(np.int16)
        with torch.no_grad():
            clean = model.eval()(inputs).numpy().astype(np.float32) if logits else None
        out.append((oracle.predict_labels(inputs), pred, clean))
    return out


def query_ood(*, run_uri: str, cfg: RunConfig, info: DatasetInfo, queries: Sequence[Query], x: np.ndarray,
              models: Sequence[int], n_models: int, logits: bool, models_per_task: int = 8,
              progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(clean labels int64[n_models, n], pred int16[n_models, n, Q], logits float32[n_models, n, C] | None) of
    `models` on x float32[n, *shape]: labels of the unperturbed inputs, then the query set's answers.

    Rows of models not asked for are -1 (labels, pred) and NaN (logits).
    """
    models = list(models)
    x_ref = ray.put(np.ascontiguousarray(x, dtype=np.float32))
    groups = [models[i:i + models_per_task] for i in range(0, len(models), models_per_task)]
    results = map_tasks(lambda g: _responses_task.remote(run_uri, cfg.model, info, g, x_ref, list(queries), logits),
                        groups, desc="OOD queries", progress=progress)
    clean = np.full((n_models, len(x)), -1, dtype=np.int64)
    pred = np.full((n_models, len(x), len(queries)), -1, dtype=np.int16)
    all_logits = np.full((n_models, len(x), info.num_classes), np.nan, dtype=np.float32) if logits else None
    for group, answers in zip(groups, results, strict=True):
        for m, (c, p, z) in zip(group, answers, strict=True):
            clean[m], pred[m] = c, p
            if logits:
                all_logits[m] = z
    return clean, pred, all_logits


@task
def _transfer_task(cfg: RunConfig, info: DatasetInfo, x: np.ndarray, labels: np.ndarray, truth: np.ndarray,
                   x_ood: np.ndarray, ood_labels: np.ndarray, n_models: int, score: str,
                   seed: int, split: bool) -> tuple[np.ndarray, np.ndarray]:
    torch.set_num_threads(1)
    if split:  # the OOD inputs join the relabelled data (labelled by the target), so halves of the models fit them
        both = transfer_scores(cfg=cfg, info=info, x=np.concatenate([x, x_ood]), labels=np.concatenate(
            [labels, ood_labels])[None], truth=np.concatenate([truth, ood_labels]), n_models=n_models, score=score,
            seeds=[seed], split=True)[0]
        return both[:len(x)], both[len(x):]
    # The attack stage's trainer and seeds, so the population statistic equals transfer_statistic's.
    models = train_transfer_models(cfg=cfg, info=info, x=x, labels=labels[None], n_models=n_models, seeds=[seed])
    return models.scores(x, truth, score)[0], models.scores(x_ood, ood_labels, score)[0]


def transfer_ood(*, cfg: RunConfig, info: DatasetInfo, x: np.ndarray, truth: np.ndarray,
                 target_labels: dict[int, np.ndarray], x_ood: np.ndarray, ood_labels: dict[int, np.ndarray],
                 n_models: int, score: str = "confidence", seed: int, variant: str = "threshold",
                 progress: bool = False) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{target: (population statistic float64[N], OOD statistic float64[n])} of the transfer attack.

    truth: int[N] the population's true labels; target_labels[t]: int[N] the target's clean labels of the
    population (what the attack relabels with); ood_labels[t]: int[n] the OOD inputs' labels (the study's rule).
    variant: the attack's; for an IN/OUT one (`attacks.methods.transfer.SPLIT`) the transfer models train on
    halves of the population and OOD inputs together (the population statistic then differs slightly from the
    attack stage's, whose models never saw the OOD inputs).
    """
    split = variant in SPLIT
    check_settings(n_models=n_models, score=score, split=split)
    x_ref, ood_ref = ray.put(x), ray.put(np.ascontiguousarray(x_ood, dtype=np.float32))
    truth = np.asarray(truth, dtype=np.int64)
    targets = sorted(target_labels)
    results = map_tasks(lambda t: _transfer_task.remote(cfg, info, x_ref, target_labels[t].astype(np.int64), truth,
                                                        ood_ref, ood_labels[t].astype(np.int64), n_models, score,
                                                        transfer_seed(seed, t), split),
                        targets, desc="OOD transfer", progress=progress)
    return dict(zip(targets, results, strict=True))


@task
def _boundary_task(run_uri: str, model_id: int, x: np.ndarray, labels: np.ndarray, bounds, settings: HsjaSettings,
                   example_ids: np.ndarray) -> np.ndarray:
    from attacks.oracles.model import ModelOracle

    torch.set_num_threads(1)
    oracle = ModelOracle.from_run(run_uri, model_id)
    result = settings.run(oracle.predict_labels, x, labels, bounds=bounds, example_ids=example_ids)
    return result.distance.astype(np.float64)


def boundary_ood(*, run_uri: str, target: int, x: np.ndarray, labels: np.ndarray, bounds: tuple[float, float],
                 settings: HsjaSettings, chunk: int = 64, progress: bool = False) -> np.ndarray:
    """float64[n]: HopSkipJump distances of the OOD inputs x float32[n, *shape] for model `target`, from labels
    int[n]; one Ray task per `chunk` inputs, at most twice the cluster's CPUs in flight."""

    def submit(start: int) -> ray.ObjectRef:
        stop = min(start + chunk, len(x))
        return _boundary_task.remote(run_uri, target, np.ascontiguousarray(x[start:stop]), labels[start:stop],
                                     bounds, settings, np.arange(start, stop))

    results = map_tasks(submit, range(0, len(x), chunk), desc="OOD boundary", progress=progress)
    return np.concatenate(results) if results else np.zeros(0)


def transfer_statistics(game, plan, responses, *, x_ood: np.ndarray, used: np.ndarray, labels: np.ndarray,
                        progress: bool) -> dict[int, dict[str, np.ndarray]]:
    """The transfer attack's `Ood.statistic`: {target: {"transfer": float64[n]}}, the OOD inputs' transfer
    statistic for each of the game's targets (`transfer_ood`, with the game's settings)."""
    clean = responses.queries_of("clean")[0]
    extra = transfer_ood(cfg=plan.cfg, info=plan.dataset.info, x=plan.dataset.x, truth=responses.labels,
                         target_labels={t: responses.pred[t, :, clean] for t in game.targets},
                         x_ood=x_ood, ood_labels={t: labels[t] for t in game.targets},
                         n_models=game.settings["n_models"], score=game.settings["score"], seed=game.seed,
                         variant=game.settings["variant"], progress=progress)
    return {t: {TRANSFER: extra[t][1]} for t in game.targets}


def boundary_statistics(game, plan, responses, *, x_ood: np.ndarray, used: np.ndarray, labels: np.ndarray,
                        progress: bool) -> dict[int, dict[str, np.ndarray]]:
    """The boundary attack's `Ood.statistic`: {target: {"boundary": float64[n_used]}}, HopSkipJump distances of
    the `used` OOD inputs for each of the game's targets (`boundary_ood`, with the game's settings)."""
    return {t: {BOUNDARY: boundary_ood(run_uri=plan.run.uri, target=t, x=x_ood[used], labels=labels[t, used],
                                       bounds=plan.dataset.info.bounds,
                                       settings=hsja_settings(game.settings, seed=game.seed), progress=progress)}
            for t in game.targets}
