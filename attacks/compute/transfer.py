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

from attacks.compute.tasks import map_tasks
from attacks.responses import Responses
from farm.config import RunConfig, model_seed
from farm.data import DatasetInfo
from farm.errors import ConfigError
from farm.train import TrainedGroup, predict_in_chunks, steps_per_epoch, train_group

SCORES = ("confidence", "loss")


def transfer_seed(seed: int, model_id: int) -> int:
    """The seed of model `model_id`'s transfer models (their per-model seeds derive from it)."""
    return model_seed(seed, 10_000 + model_id)


def check_settings(*, n_models: int, score: str) -> None:
    """ConfigError naming the field when the transfer settings are out of range."""
    if not isinstance(n_models, int) or n_models < 1:
        raise ConfigError(f"attack 'transfer': n_models must be an integer >= 1, got {n_models!r}")
    if score not in SCORES:
        raise ConfigError(f"attack 'transfer': unknown score {score!r} (valid: {', '.join(SCORES)})")


@dataclass(frozen=True)
class TransferModels:
    """The transfer models of R relabelled models, `n_models` each, as one trained group of R * n_models."""

    group: TrainedGroup
    n_models: int

    def scores(self, x: np.ndarray, labels: np.ndarray, score: str) -> np.ndarray:
        """float64[R, n]: per relabelled model, the mean over its transfer models of the softmax probability
        (score "confidence") or minus the cross-entropy ("loss") at labels int[n] (or int[R, n]) on x."""
        logits = predict_in_chunks(self.group.predict, torch.tensor(x))  # [R * K, n, C]
        y = torch.tensor(np.asarray(labels, dtype=np.int64))
        y = y.expand(len(logits) // self.n_models, -1) if y.ndim == 1 else y
        y = y.repeat_interleave(self.n_models, dim=0)
        logp = -F.cross_entropy(logits.permute(0, 2, 1), y, reduction="none")  # [R * K, n]
        value = logp.exp() if score == "confidence" else logp
        return value.double().reshape(-1, self.n_models, logits.shape[1]).mean(1).numpy()


def train_transfer_models(*, cfg: RunConfig, info: DatasetInfo, x: np.ndarray, labels: np.ndarray, n_models: int,
                          seeds: Sequence[int]) -> TransferModels:
    """`n_models` models of the run's kind per row of labels int[R, N], trained on all of x float32[N, *shape]
    relabelled with that row; seeds: R transfer seeds (`transfer_seed`), model k of row r seeded
    model_seed(seeds[r], k)."""
    labels = np.asarray(labels, dtype=np.int64)
    xt = torch.tensor(x)  # a copy: x may be read-only
    yt = torch.tensor(np.repeat(labels, n_models, axis=0))  # [R * K, N]: per-model labels
    member = np.ones(yt.shape, dtype=bool)
    group = train_group(model_cfg=cfg.model, train_cfg=cfg.train, info=info, x=xt, y=yt, member=member,
                        seeds=[model_seed(s, k) for s in seeds for k in range(n_models)],
                        n_steps_per_epoch=steps_per_epoch(member, cfg.train.batch_size))
    return TransferModels(group=group, n_models=n_models)


def transfer_scores(*, cfg: RunConfig, info: DatasetInfo, x: np.ndarray, labels: np.ndarray, truth: np.ndarray,
                    n_models: int, score: str, seeds: Sequence[int]) -> np.ndarray:
    """float64[R, N]: the transfer statistic of R relabelled models (labels int[R, N], what each target gave)
    at the ground-truth labels truth int[N]."""
    models = train_transfer_models(cfg=cfg, info=info, x=x, labels=labels, n_models=n_models, seeds=seeds)
    return models.scores(x, truth, score)


@ray.remote
def _transfer_task(cfg, info, x, labels, truth, n_models, score, seeds):
    torch.set_num_threads(1)
    return transfer_scores(cfg=cfg, info=info, x=x, labels=labels, truth=truth, n_models=n_models, score=score,
                           seeds=seeds)


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
                       local: bool = False) -> np.ndarray:
    """float64[M, N] "transfer" statistic for `models` (NaN rows for the others), one Ray task per group of
    models (local=True: in this process). Reads only the models' clean labels and the examples' true labels."""
    check_settings(n_models=n_models, score=score)
    clean = responses.queries_of("clean")
    if len(clean) == 0:
        raise ConfigError("attack 'transfer' needs the target's clean labels: add 'clean' to the run's queries")
    groups = model_groups(sorted(models), n_models=n_models, group_size=cfg.farm.group_size)
    truth = np.asarray(responses.labels, dtype=np.int64)

    def args(group: list[int]) -> tuple:
        labels = responses.pred[group][:, :, clean[0]].astype(np.int64)
        return labels, truth, n_models, score, [transfer_seed(seed, m) for m in group]

    out = np.full(responses.member.shape, np.nan)
    if local:
        results = [transfer_scores(cfg=cfg, info=info, x=x, labels=a[0], truth=a[1], n_models=n_models, score=score,
                                   seeds=a[4]) for a in map(args, groups)]
    else:
        x_ref = ray.put(x)
        results = map_tasks(lambda g: _transfer_task.remote(cfg, info, x_ref, *args(g)), groups, desc="transfer",
                            unit="group", progress=False)
    for group, rows in zip(groups, results, strict=True):
        out[group] = rows
    return out
