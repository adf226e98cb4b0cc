"""The statistics that need model access, computed before the pure attacks read them from `responses.statistics`.

- "transfer" (Label-Leaks): for each attacked model (every shadow too for the calibrated variant), the
  confidence or loss at the true label of models trained on its clean labels
  (`attacks.compute.transfer.transfer_statistic`);
- "boundary": HopSkipJump distances to the decision boundary (`attacks.compute.boundary.boundary_distances`,
  cached in the run per example chunk);
- "whitebox_*" (the white-box attacks, `WHITE_BOX`): loss, gradient norms and activations of every model from its
  saved weights (`attacks.compute.whitebox.whitebox_statistics`, cached in the run per model and example chunk).

`prepare_statistics` computes them for the run's models (the attack stage, tuning, the studies);
`audit_statistics` for the run's shadows plus an audited target that answers through an oracle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from attacks.compute.boundary import HsjaSettings, boundary_distances
from attacks.compute.transfer import transfer_statistic
from attacks.compute.whitebox import whitebox_statistics
from attacks.methods.boundary import STATISTIC as BOUNDARY
from attacks.methods.transfer import SPLIT
from attacks.methods.transfer import STATISTIC as TRANSFER
from attacks.registry import ATTACKS
from attacks.responses import Responses
from farm.cluster import ensure_ray
from farm.plan import Plan

WHITE_BOX = tuple(name for name, spec in ATTACKS.items() if spec.white_box)
MODEL_STATISTICS = (TRANSFER, BOUNDARY, *WHITE_BOX)  # the attacks whose statistics `prepare_statistics` computes


def hsja_settings(settings: dict, *, seed: int) -> HsjaSettings:
    """The HopSkipJump settings of the boundary attack's resolved `settings` (the key of its distance cache)."""
    return HsjaSettings(max_iter=settings["max_iter"], init_evals=settings["init_evals"],
                        max_evals=settings["max_evals"], budget=settings["budget"], seed=seed)


def prepare_statistics(plan: Plan, responses: Responses, settings: dict, *, scored: Sequence[int],
                       everyone: Sequence[int], seed: int, progress: bool = True, local: bool = False) -> Responses:
    """`responses` with the statistics of the attacks in `settings` that need model access.

    settings: attack name -> resolved settings (only attacks present are prepared); scored: the models
    that are attacked (targets, pseudo-targets); everyone: all models a per-example calibration reads.
    local=True: in this process, no Ray.
    """
    if not set(settings) & set(MODEL_STATISTICS):
        return responses
    if not local:
        ensure_ray()
    if TRANSFER in settings:
        chosen = settings[TRANSFER]
        alone = chosen["variant"] != "calibrated"
        models = sorted(scored) if alone else sorted(set(scored) | set(everyone))
        stat = transfer_statistic(responses, cfg=plan.cfg, info=plan.dataset.info, x=plan.dataset.x, models=models,
                                  n_models=chosen["n_models"], score=chosen["score"], seed=seed,
                                  split=chosen["variant"] in SPLIT, local=local)
        responses = responses.with_statistic(TRANSFER, stat)
    if BOUNDARY in settings:
        chosen = settings[BOUNDARY]
        models = sorted(scored) if chosen["variant"] == "threshold" else sorted(set(scored) | set(everyone))
        stat = boundary_distances(plan.run, x=plan.dataset.x, labels=plan.dataset.y,
                                  bounds=plan.dataset.info.bounds, models=models, n_models=responses.n_models,
                                  settings=hsja_settings(chosen, seed=seed), progress=progress, local=local)
        responses = responses.with_statistic(BOUNDARY, stat)
    if set(settings) & set(WHITE_BOX):
        stats = whitebox_statistics(plan.run, model_cfg=plan.cfg.model, info=plan.dataset.info, x=plan.dataset.x,
                                    labels=plan.dataset.y, models=sorted(set(scored) | set(everyone)),
                                    n_models=responses.n_models, group_size=plan.cfg.farm.group_size,
                                    progress=progress, local=local)
        for name, values in stats.items():
            responses = responses.with_statistic(name, values)
    return responses


def audit_statistics(plan: Plan, responses: Responses, oracle, settings: dict, *, examples: np.ndarray,
                     pseudo: Sequence[int], shadows: Sequence[int], seed: int, progress: bool) -> Responses:
    """`prepare_statistics` for an audit: `responses` holds the run's models on the challenge `examples`
    (int[K]) plus the target, answering through `oracle`, as its last row."""
    target = responses.n_models - 1
    if TRANSFER in settings:
        ensure_ray()
        chosen = settings[TRANSFER]
        models = pseudo if chosen["variant"] != "calibrated" else sorted(set(shadows) | set(pseudo))
        stat = transfer_statistic(responses, cfg=plan.cfg, info=plan.dataset.info, x=plan.dataset.x[examples],
                                  models=sorted(models) + [target], n_models=chosen["n_models"],
                                  score=chosen["score"], seed=seed, split=chosen["variant"] in SPLIT)
        responses = responses.with_statistic(TRANSFER, stat)
    if BOUNDARY in settings:
        ensure_ray()
        chosen = settings[BOUNDARY]
        models = pseudo if chosen["variant"] == "threshold" else shadows
        stat = np.full(responses.member.shape, np.nan)
        stat[:target] = _shadow_distances(plan, models, examples=examples, n_models=target,
                                          hsja=hsja_settings(chosen, seed=seed), progress=progress)
        stat[target] = _target_distances(plan, oracle, examples=examples, hsja=hsja_settings(chosen, seed=seed),
                                         progress=progress)
        responses = responses.with_statistic(BOUNDARY, stat)
    return responses


def _shadow_distances(plan: Plan, models: Sequence[int], *, examples: np.ndarray, n_models: int,
                      hsja: HsjaSettings, progress: bool) -> np.ndarray:
    """float64[n_models, K]: distances of `models` on the challenge examples (NaN rows for the others).

    Computed on the whole population: the distances are cached per example chunk, as by `shadowfarm attack`.
    """
    data = plan.dataset
    return boundary_distances(plan.run, x=data.x, labels=data.y, bounds=data.info.bounds, models=sorted(models),
                              n_models=n_models, settings=hsja, progress=progress)[:, examples]


def _target_distances(plan: Plan, oracle, *, examples: np.ndarray, hsja: HsjaSettings, progress: bool) -> np.ndarray:
    """float[K]: the oracle's distances on the challenge examples; the same seed and example ids as the
    shadows' give the target and the shadows the same random probes."""
    data = plan.dataset
    bar = tqdm(desc="target boundary", unit="query", disable=not progress)

    def ask(x: np.ndarray) -> np.ndarray:
        labels = oracle.predict_labels(x)
        bar.update(len(x))
        return labels

    result = hsja.run(ask, data.x[examples], data.y[examples], bounds=data.info.bounds, example_ids=examples)
    bar.close()
    return result.distance
