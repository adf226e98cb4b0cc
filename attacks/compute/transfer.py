"""Li & Zhang's transfer attack (Label-Leaks): shadows trained on labels given by the target, as Ray tasks.

For a model `m` playing the target, the attacker relabels its own data with m's labels (the
clean `pred` column: label-only), trains `n_models` transfer models through the farm's trainer
on a balanced half each, and scores every example by minus the mean loss, at m's label, of the
transfer models that did NOT train on it: examples the target labels the way a model of its
kind would label unseen data score low; members, whose labels the target fits idiosyncratically
(and which it labels "too well"), transfer differently. The score is recorded as the
per-(model, example) statistic "transfer"; `attacks.methods.transfer` is the pure attack on it.

`train_transfer_models` is the one trainer of transfer models (seeded by `transfer_seed`), shared with
the OOD study (`attacks.studies.ood.query`), so both score with the very same models. Training runs as
Ray tasks, one per relabelled model (`attacks.compute.tasks.map_tasks`).
"""

from __future__ import annotations

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
from farm.membership import lira_membership
from farm.train import TrainedGroup, predict_in_chunks, steps_per_epoch, train_group


def transfer_seed(seed: int, model_id: int) -> int:
    """The seed of model `model_id`'s transfer models (membership and per-model seeds derive from it)."""
    return model_seed(seed, 10_000 + model_id)


@dataclass(frozen=True)
class TransferModels:
    """`n_models` transfer models trained on relabelled data; member bool[K, N]: who trained on which example."""

    group: TrainedGroup
    member: np.ndarray

    def losses(self, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """float32[K, n]: each model's cross-entropy at labels int[n] on x float32[n, *shape]."""
        logits = predict_in_chunks(self.group.predict, torch.tensor(x))  # [K, n, C]
        y = torch.tensor(labels, dtype=torch.int64).expand(len(self.member), -1)
        return F.cross_entropy(logits.permute(0, 2, 1), y, reduction="none").numpy()

    def out_of_training_score(self, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """float64[N] on the training data: minus the mean loss of the models that did not train on each example."""
        out = ~self.member
        return -(self.losses(x, labels) * out).sum(0) / np.maximum(out.sum(0), 1)


def train_transfer_models(*, cfg: RunConfig, info: DatasetInfo, x: np.ndarray, labels: np.ndarray, n_models: int,
                          seed: int) -> TransferModels:
    """Train `n_models` models of the run's kind on x float32[N, *shape] relabelled with labels int[N], each on a
    balanced half (lira_membership, p_in 0.5), seeds model_seed(seed, k)."""
    xt, yt = torch.tensor(x), torch.tensor(labels, dtype=torch.int64)  # copies: x may be read-only
    member = lira_membership(n_models=n_models, n_examples=len(labels), p_in=0.5, seed=seed)
    group = train_group(model_cfg=cfg.model, train_cfg=cfg.train, info=info, x=xt, y=yt, member=member,
                        seeds=[model_seed(seed, k) for k in range(n_models)],
                        n_steps_per_epoch=steps_per_epoch(member, cfg.train.batch_size))
    return TransferModels(group=group, member=member)


def transfer_scores(*, cfg: RunConfig, info: DatasetInfo, x: np.ndarray, labels: np.ndarray, n_models: int,
                    seed: int) -> np.ndarray:
    """float64[N]: minus the mean out-of-training loss at `labels` of `n_models` transfer models.

    x: float32[N, *shape] (the attacker's data), labels: int[N] (the labels the target gave).
    """
    if n_models < 2:
        raise ConfigError(f"attack 'transfer': n_models must be at least 2, got {n_models}")
    models = train_transfer_models(cfg=cfg, info=info, x=x, labels=labels, n_models=n_models, seed=seed)
    return models.out_of_training_score(x, labels)


@ray.remote
def _transfer_task(cfg, info, x, labels, n_models, seed):
    torch.set_num_threads(1)
    return transfer_scores(cfg=cfg, info=info, x=x, labels=labels, n_models=n_models, seed=seed)


def transfer_statistic(responses: Responses, *, cfg: RunConfig, info: DatasetInfo, x: np.ndarray,
                       models: Sequence[int], n_models: int = 4, seed: int = 0, local: bool = False) -> np.ndarray:
    """float64[M, N] "transfer" statistic for `models` (NaN rows for the others), one Ray task each
    (local=True: in this process)."""
    clean = responses.queries_of("clean")
    if len(clean) == 0:
        raise ConfigError("attack 'transfer' needs the target's clean labels: add 'clean' to the run's queries")
    models = list(models)
    labels = {m: responses.pred[m, :, clean[0]].astype(np.int64) for m in models}
    out = np.full(responses.member.shape, np.nan)
    if local:
        for m in models:
            out[m] = transfer_scores(cfg=cfg, info=info, x=x, labels=labels[m], n_models=n_models,
                                     seed=transfer_seed(seed, m))
        return out
    x_ref = ray.put(x)
    scores = map_tasks(lambda m: _transfer_task.remote(cfg, info, x_ref, labels[m], n_models, transfer_seed(seed, m)),
                       models, desc="transfer", unit="model", progress=False)
    for m, score in zip(models, scores, strict=True):
        out[m] = score
    return out
