"""Li & Zhang's transfer attack (Label-Leaks, §4): local models trained on labels given by the target, as Ray tasks.

For a model `m` playing the target, the attacker relabels its own data -- which includes the candidates (in
lira mode the run's population, which is also the challenge set) -- with m's labels (only the clean `pred`
column: label-only), trains `n_models` transfer models of the run's kind on all of it, and scores every
candidate by the transfer models' mean softmax probability ("confidence") or mean minus cross-entropy
("loss") at the candidate's GROUND-TRUTH label: a local model that mimics the target inherits its behaviour
on its members (the target labels them right, so the transfer model fits their true label). The score is
recorded as the per-(model, example) statistic "transfer"; `attacks.methods.transfer` is the pure attack on it.

`train_transfer_models` is the one trainer of transfer models (seeds: model_seed(transfer_seed(seed, m), k) for
transfer model k of model m), shared with the OOD study (`attacks.studies.ood.query`), so both score with the
very same models. The transfer models of several relabelled models train as one vmapped group with per-model
labels (`farm.train.train_group`), at most `farm.group_size` models a group; one Ray task per group
(`attacks.compute.tasks.map_tasks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import ray
import torch
import torch.nn.functional as F

from attacks.compute.tasks import map_tasks, task
from attacks.methods.transfer import PER_EXAMPLE, SPLIT, STATISTIC
from attacks.responses import Responses
from farm.cluster import ensure_ray
from farm.config import RunConfig, model_seed
from farm.data import DatasetInfo
from farm.errors import ConfigError
from farm.membership import lira_membership
from farm.plan import Plan
from farm.train import TrainedGroup, predict_in_chunks, steps_per_epoch, train_group

SCORES = ("confidence", "loss")


def transfer_seed(seed: int, model_id: int) -> int:
    """The seed of model `model_id`'s transfer models (their per-model seeds derive from it)."""
    return model_seed(seed, 10_000 + model_id)


def check_settings(*, n_models: int, score: str, split: bool = False) -> None:
    """ConfigError naming the field when the transfer settings are out of range (split: IN/OUT halves, which
    need at least 2 transfer models)."""
    least = 2 if split else 1
    if not isinstance(n_models, int) or n_models < least:
        raise ConfigError(f"attack 'transfer': n_models must be an integer >= {least}, got {n_models!r}")
    if score not in SCORES:
        raise ConfigError(f"attack 'transfer': unknown score {score!r} (valid: {', '.join(SCORES)})")


@dataclass(frozen=True)
class TransferModels:
    """The transfer models of R relabelled models, `n_models` each, as one trained group of R * n_models."""

    group: TrainedGroup
    n_models: int

    def values(self, x: np.ndarray, labels: np.ndarray, score: str, *, logit: bool = False) -> np.ndarray:
        """float64[R, K, n]: per transfer model, the softmax probability (score "confidence"; its logit when
        logit=True) or minus the cross-entropy ("loss") at labels int[n] (or int[R, n]) on x."""
        logits = predict_in_chunks(self.group.predict, torch.tensor(x))  # [R * K, n, C]
        y = torch.tensor(np.asarray(labels, dtype=np.int64))
        y = y.expand(len(logits) // self.n_models, -1) if y.ndim == 1 else y
        y = y.repeat_interleave(self.n_models, dim=0)
        logp = -F.cross_entropy(logits.permute(0, 2, 1), y, reduction="none").double()  # [R * K, n]
        if score == "confidence":
            logp = logp - torch.log(-torch.expm1(logp.clamp(max=-1e-12))) if logit else logp.exp()
        return logp.reshape(-1, self.n_models, logits.shape[1]).numpy()

    def scores(self, x: np.ndarray, labels: np.ndarray, score: str) -> np.ndarray:
        """float64[R, n]: per relabelled model, the mean over its transfer models of `values`."""
        return self.values(x, labels, score).mean(1)


def split_membership(seeds: Sequence[int], *, n_models: int, n_examples: int) -> np.ndarray:
    """bool[R, K, N]: for each relabelled model (its transfer seed), which of its K transfer models train on
    which example: a balanced random half each (`farm.membership.lira_membership`, seeded by the transfer seed)."""
    return np.stack([lira_membership(n_models=n_models, n_examples=n_examples, p_in=0.5, seed=s) for s in seeds])


def train_transfer_models(*, cfg: RunConfig, info: DatasetInfo, x: np.ndarray, labels: np.ndarray, n_models: int,
                          seeds: Sequence[int], member: np.ndarray | None = None) -> TransferModels:
    """`n_models` models of the run's kind per row of labels int[R, N], trained on x float32[N, *shape]
    relabelled with that row (all of it, or the rows of member bool[R, K, N]); seeds: R transfer seeds
    (`transfer_seed`), model k of row r seeded model_seed(seeds[r], k)."""
    labels = np.asarray(labels, dtype=np.int64)
    xt = torch.tensor(x)  # a copy: x may be read-only
    yt = torch.tensor(np.repeat(labels, n_models, axis=0))  # [R * K, N]: per-model labels
    member = np.ones(yt.shape, dtype=bool) if member is None else np.asarray(member).reshape(yt.shape)
    group = train_group(model_cfg=cfg.model, train_cfg=cfg.train, info=info, x=xt, y=yt, member=member,
                        seeds=[model_seed(s, k) for s in seeds for k in range(n_models)],
                        n_steps_per_epoch=steps_per_epoch(member, cfg.train.batch_size))
    return TransferModels(group=group, n_models=n_models)


def transfer_scores(*, cfg: RunConfig, info: DatasetInfo, x: np.ndarray, labels: np.ndarray, truth: np.ndarray,
                    n_models: int, score: str, seeds: Sequence[int], split: bool = False) -> np.ndarray:
    """float64[R, N]: the transfer statistic of R relabelled models (labels int[R, N], what each target gave)
    at the ground-truth labels truth int[N].

    split=False: the mean over transfer models trained on all the data; split=True: each transfer model
    trains on a balanced half (`split_membership`) and the statistic is the mean over the models that trained
    on the example minus the mean over those that did not, of the logit confidence (or minus the loss).
    """
    if not split:
        models = train_transfer_models(cfg=cfg, info=info, x=x, labels=labels, n_models=n_models, seeds=seeds)
        return models.scores(x, truth, score)
    member = split_membership(seeds, n_models=n_models, n_examples=len(x))
    models = train_transfer_models(cfg=cfg, info=info, x=x, labels=labels, n_models=n_models, seeds=seeds,
                                   member=member)
    values = models.values(x, truth, score, logit=True)  # [R, K, N]
    inside = (values * member).sum(1) / member.sum(1)
    outside = (values * ~member).sum(1) / (~member).sum(1)
    return inside - outside


@task
def _transfer_task(cfg, info, x, labels, truth, n_models, score, seeds, split):
    torch.set_num_threads(1)
    return transfer_scores(cfg=cfg, info=info, x=x, labels=labels, truth=truth, n_models=n_models, score=score,
                           seeds=seeds, split=split)


def model_groups(models: Sequence[int], *, n_models: int, group_size: int) -> list[list[int]]:
    """`models` split into balanced groups whose transfer models (n_models each) fit in about `group_size`."""
    models = list(models)
    if not models:
        return []
    per_group = max(1, group_size // n_models)
    n_groups = math.ceil(len(models) / per_group)
    size = math.ceil(len(models) / n_groups)
    return [models[i:i + size] for i in range(0, len(models), size)]


def transfer_statistic(responses: Responses, *, cfg: RunConfig, info: DatasetInfo, x: np.ndarray,
                       models: Sequence[int], n_models: int = 4, score: str = "confidence", seed: int = 0,
                       split: bool = False, local: bool = False) -> np.ndarray:
    """float64[M, N] "transfer" statistic for `models` (NaN rows for the others; split: `transfer_scores`), one
    Ray task per group of models (local=True: in this process). Reads only the models' clean labels and the
    examples' true labels."""
    check_settings(n_models=n_models, score=score, split=split)
    clean = responses.queries_of("clean")
    if len(clean) == 0:
        raise ConfigError("attack 'transfer' needs the target's clean labels: add 'clean' to the run's queries")
    groups = model_groups(sorted(models), n_models=n_models, group_size=cfg.farm.group_size)
    truth = np.asarray(responses.labels, dtype=np.int64)

    def args(group: list[int]) -> tuple:
        labels = responses.pred[group][:, :, clean[0]].astype(np.int64)
        return labels, truth, n_models, score, [transfer_seed(seed, m) for m in group], split

    out = np.full(responses.member.shape, np.nan)
    if local:
        results = [transfer_scores(cfg=cfg, info=info, x=x, labels=a[0], truth=a[1], n_models=n_models, score=score,
                                   seeds=a[4], split=split) for a in map(args, groups)]
    else:
        x_ref = ray.put(x)
        results = map_tasks(lambda g: _transfer_task.remote(cfg, info, x_ref, *args(g)), groups, desc="transfer",
                            unit="group", progress=False)
    for group, rows in zip(groups, results, strict=True):
        out[group] = rows
    return out


def prepare(plan: Plan, responses: Responses, chosen: dict, *, scored: Sequence[int], everyone: Sequence[int],
            seed: int, progress: bool, local: bool) -> Responses:
    """`responses` with the "transfer" statistic of the `scored` models (and of `everyone`, the shadows, for a
    variant that calibrates per example); chosen: the attack's resolved settings (`Statistic.prepare`)."""
    models = sorted(set(scored) | set(everyone)) if chosen["variant"] in PER_EXAMPLE else sorted(scored)
    stat = transfer_statistic(responses, cfg=plan.cfg, info=plan.dataset.info, x=plan.dataset.x, models=models,
                              n_models=chosen["n_models"], score=chosen["score"], seed=seed,
                              split=chosen["variant"] in SPLIT, local=local)
    return responses.with_statistic(STATISTIC, stat)


def prepare_audit(plan: Plan, responses: Responses, oracle, chosen: dict, *, examples: np.ndarray,
                  pseudo: Sequence[int], shadows: Sequence[int], seed: int, progress: bool) -> Responses:
    """`prepare` for an audit: `responses` holds the run's models on the challenge `examples` plus the target,
    whose clean answers (its last row) are relabelled like any model's (`Statistic.audit`)."""
    ensure_ray()
    target = responses.n_models - 1
    models = sorted(set(shadows) | set(pseudo)) if chosen["variant"] in PER_EXAMPLE else pseudo
    stat = transfer_statistic(responses, cfg=plan.cfg, info=plan.dataset.info, x=plan.dataset.x[examples],
                              models=sorted(models) + [target], n_models=chosen["n_models"],
                              score=chosen["score"], seed=seed, split=chosen["variant"] in SPLIT)
    return responses.with_statistic(STATISTIC, stat)
