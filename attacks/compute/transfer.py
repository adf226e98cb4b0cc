"""Li & Zhang's transfer attack (Label-Leaks): shadows trained on labels given by the target.

For a model `m` playing the target, the attacker relabels its own data with m's labels (the
clean `pred` column: label-only), trains `n_models` transfer models through the farm's trainer
on a balanced half each, and scores every example by minus the mean loss, at m's label, of the
transfer models that did NOT train on it: examples the target labels the way a model of its
kind would label unseen data score low; members, whose labels the target fits idiosyncratically
(and which it labels "too well"), transfer differently. The score is recorded as the
per-(model, example) statistic "transfer"; `transfer` below is the pure attack on it.

The preparation trains models, so it runs as Ray tasks (one per relabelled model); the attack
function itself is pure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import ray
import torch
import torch.nn.functional as F

from attacks.responses import Responses
from farm.config import RunConfig, model_seed
from farm.data import DatasetInfo
from farm.errors import ConfigError
from farm.membership import lira_membership
from farm.train import predict_in_chunks, steps_per_epoch, train_group


def transfer_scores(*, cfg: RunConfig, info: DatasetInfo, x: np.ndarray, labels: np.ndarray, n_models: int,
                    seed: int) -> np.ndarray:
    """float64[N]: minus the mean out-of-training loss at `labels` of `n_models` transfer models.

    x: float32[N, *shape] (the attacker's data), labels: int[N] (the labels the target gave).
    """
    if n_models < 2:
        raise ConfigError(f"attack 'transfer': n_models must be at least 2, got {n_models}")
    xt, yt = torch.tensor(x), torch.tensor(labels, dtype=torch.int64)  # copies: x may be read-only
    member = lira_membership(n_models=n_models, n_examples=len(labels), p_in=0.5, seed=seed)
    group = train_group(model_cfg=cfg.model, train_cfg=cfg.train, info=info, x=xt, y=yt, member=member,
                        seeds=[model_seed(seed, k) for k in range(n_models)],
                        n_steps_per_epoch=steps_per_epoch(member, cfg.train.batch_size))
    logits = predict_in_chunks(group.predict, xt)  # [K, N, C]
    loss = F.cross_entropy(logits.permute(0, 2, 1), yt.expand(n_models, -1), reduction="none").numpy()
    out = ~member
    return -(loss * out).sum(0) / np.maximum(out.sum(0), 1)


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
    labels = {m: responses.pred[m, :, clean[0]].astype(np.int64) for m in models}
    out = np.full(responses.member.shape, np.nan)
    if local:
        for m in models:
            out[m] = transfer_scores(cfg=cfg, info=info, x=x, labels=labels[m], n_models=n_models,
                                     seed=model_seed(seed, 10_000 + m))
        return out
    x_ref = ray.put(x)
    refs = {m: _transfer_task.remote(cfg, info, x_ref, labels[m], n_models, model_seed(seed, 10_000 + m))
            for m in models}
    for m, ref in refs.items():
        out[m] = ray.get(ref)
    return out
