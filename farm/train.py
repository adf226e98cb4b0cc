"""Training a group of models: one torch.func vmapped ensemble, or a plain per-model loop.

Each model's data order and initialization come from its own seed, and every model of a run
takes the same number of steps per epoch (fixed by the whole membership matrix), so a model's
training does not depend on which group it lands in. The vmapped ensemble sums the per-model
losses: the gradient of the sum with respect to the stacked parameters is each model's own
gradient, and Adam/SGD (with weight decay and momentum) act elementwise, so every model gets
exactly its own optimizer.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

from farm.config import ModelConfig, TrainConfig
from farm.data import DatasetInfo
from farm.models import build_model, vmappable


@dataclass
class TrainedGroup:
    """Result of training G models: per-model state dicts and the ensemble for querying."""

    state_dicts: list[dict]
    predict: callable  # x float32[N, *shape] -> logits float32[G, N, C]
    seconds: float


def steps_per_epoch(member: np.ndarray, batch_size: int) -> int:
    """Steps per epoch for every model of a run: the largest training set, in batches."""
    return max(1, math.ceil(int(member.sum(1).max()) / batch_size))


def index_stream(members: np.ndarray, *, seed: int, n_steps: int, batch_size: int) -> np.ndarray:
    """int64[n_steps, batch_size]: the model's own members, reshuffled after every full pass."""
    rng = np.random.default_rng(seed)
    need = n_steps * batch_size
    passes = [rng.permutation(members) for _ in range(math.ceil(need / len(members)))]
    return np.concatenate(passes)[:need].reshape(n_steps, batch_size)


def _init_models(model_cfg: ModelConfig, info: DatasetInfo, seeds: Sequence[int], device) -> list[torch.nn.Module]:
    models = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed % (2**63))
            models.append(build_model(model_cfg, info=info).to(device))
    return models


def _optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


def train_group(
    *,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    info: DatasetInfo,
    x: torch.Tensor,
    y: torch.Tensor,
    member: np.ndarray,
    seeds: Sequence[int],
    n_steps_per_epoch: int,
    vectorize: bool = True,
) -> TrainedGroup:
    """Train G models on their member rows.

    x: float32[N, *info.shape] and y: int64[N] on the training device; member: bool[G, N];
    seeds: G per-model seeds. `vectorize=False` (or a model vmap cannot serve) trains them one
    after another with a plain loop.
    """
    device = x.device
    start = time.perf_counter()
    models = _init_models(model_cfg, info, seeds, device)
    n_steps = n_steps_per_epoch * train_cfg.epochs
    streams = [
        torch.as_tensor(index_stream(np.flatnonzero(row), seed=seed, n_steps=n_steps,
                                     batch_size=train_cfg.batch_size), device=device)
        for row, seed in zip(member, seeds, strict=True)
    ]
    if vectorize and len(models) > 1 and vmappable(models[0]):
        result = _train_vmapped(models, streams, x, y, train_cfg)
    else:
        result = _train_loop(models, streams, x, y, train_cfg)
    result.seconds = time.perf_counter() - start
    return result


def _train_loop(models, streams, x, y, cfg: TrainConfig) -> TrainedGroup:
    for model, stream in zip(models, streams, strict=True):
        model.train()
        opt = _optimizer(model.parameters(), cfg)
        for idx in stream:
            loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()

    @torch.no_grad()
    def predict(inputs: torch.Tensor) -> torch.Tensor:
        return torch.stack([model(inputs) for model in models])

    return TrainedGroup([model.state_dict() for model in models], predict, 0.0)


def _train_vmapped(models, streams, x, y, cfg: TrainConfig) -> TrainedGroup:
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    batched = torch.vmap(lambda p, b, xb: functional_call(base, (p, b), (xb,)), randomness="different")
    opt = _optimizer(list(params.values()), cfg)
    index = torch.stack(streams, dim=1)  # [n_steps, G, B]
    n_models, batch_size = index.shape[1], index.shape[2]
    base.train()
    for idx in index:
        logits = batched(params, buffers, x[idx])  # [G, B, C]
        # sum over models of each model's mean loss (every model has the same batch size)
        loss = F.cross_entropy(logits.reshape(n_models * batch_size, -1), y[idx].reshape(-1),
                               label_smoothing=cfg.label_smoothing, reduction="sum") / batch_size
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    base.eval()
    forward = torch.vmap(lambda p, b, xb: functional_call(base, (p, b), (xb,)), in_dims=(0, 0, None))

    @torch.no_grad()
    def predict(inputs: torch.Tensor) -> torch.Tensor:
        return forward(params, buffers, inputs)

    names = list(models[0].state_dict().keys())
    state_dicts = []
    for g in range(len(models)):
        merged = {**params, **buffers}
        state_dicts.append({name: merged[name][g].detach().clone() for name in names})
    return TrainedGroup(state_dicts, predict, 0.0)


@torch.no_grad()
def predict_in_chunks(predict, x: torch.Tensor, *, chunk: int = 4096) -> torch.Tensor:
    """logits float32[G, N, C] for x float32[N, ...], `chunk` examples at a time."""
    return torch.cat([predict(x[i : i + chunk]) for i in range(0, len(x), chunk)], dim=1)
