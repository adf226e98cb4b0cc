"""Training a group of models: one torch.func vmapped ensemble, or a plain per-model loop.

Each model's data order and initialization come from its own seed, and every model of a run
takes the same number of steps per epoch (fixed by the whole membership matrix), so a model's
training does not depend on which group it lands in. The vmapped ensemble sums the per-model
losses: the gradient of the sum with respect to the stacked parameters is each model's own
gradient, and Adam/SGD (with weight decay and momentum) act elementwise, so every model gets
exactly its own optimizer.

Training-time defenses (`farm.defenses`): MixUp and augmentation draw from each model's own seed inside
the vmapped step, early stopping keeps each model's best epoch, so the vmapped group still equals the
per-model loop; DP-SGD (`farm.dp`) trains the models of a group one at a time through Opacus.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

from farm.config import ModelConfig, TrainConfig
from farm.data import DatasetInfo
from farm.defenses import (
    BatchDraws,
    EarlyStopping,
    EpochDraws,
    active,
    augment,
    group_loss,
    mixup_inputs,
    validation_split,
)
from farm.dp import train_dp_model
from farm.ensemble import ensemble_kernel
from farm.models import build_model, vmappable
from farm.optim import make_optimizer


@dataclass
class TrainedGroup:
    """Result of training G models: per-model state dicts and the ensemble for querying.

    details: per model, what its training-time defenses report for metrics.json (e.g. {"dp_sgd": {...}},
    {"early_stopping": {...}}); vectorized: whether the group trained as one vmapped ensemble.
    """

    state_dicts: list[dict]
    predict: callable  # x float32[N, *shape] -> logits float32[G, N, C]
    seconds: float
    vectorized: bool = False
    details: list[dict] = field(default_factory=list)


def steps_per_epoch(member: np.ndarray, batch_size: int) -> int:
    """Steps per epoch for every model of a run: the largest training set, in batches."""
    return max(1, math.ceil(int(member.sum(1).max()) / batch_size))


def index_stream(members: np.ndarray, *, seed: int, n_steps: int, batch_size: int) -> np.ndarray:
    """int64[n_steps, batch_size]: the model's own members, reshuffled after every full pass."""
    rng = np.random.default_rng(seed)
    need = n_steps * batch_size
    passes = [rng.permutation(members) for _ in range(math.ceil(need / len(members)))]
    return np.concatenate(passes)[:need].reshape(n_steps, batch_size)


def _init_models(model_cfg: ModelConfig, info: DatasetInfo, seeds: Sequence[int], device,
                 init_model: Callable[[torch.nn.Module], None] | None = None) -> list[torch.nn.Module]:
    """G models, each initialized from its own seed, then given to `init_model` (e.g. `farm.teacher`'s transfer:
    the teacher's weights, frozen layers) when set."""
    models = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed % (2**63))
            model = build_model(model_cfg, info=info)
        if init_model is not None:
            init_model(model)
        models.append(model.to(device))
    return models


def _trainable(params) -> list[torch.Tensor]:
    """The parameters the optimizer steps: frozen ones (requires_grad False, `farm.teacher`) never change."""
    return [p for p in params if p.requires_grad]


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
    init_model: Callable[[torch.nn.Module], None] | None = None,
    kernel: bool = True,
) -> TrainedGroup:
    """Train G models on their member rows.

    x: float32[N, *info.shape] and y: int64[N] (or int64[G, N]: per-model labels) on the training device;
    member: bool[G, N];
    seeds: G per-model seeds. `vectorize=False` (or a model vmap cannot serve) trains them one
    after another with a plain loop; `train_cfg.dp_sgd` always does (one Opacus model at a time).
    A vectorized group of MLPs trains with the ensemble kernel (`farm.ensemble`) unless `kernel=False` (vmap).
    With early stopping, each model's validation split comes from its own members (`farm.defenses`).
    `init_model(model)` runs on each freshly built model (transfer learning: `farm.teacher.fine_tune_init`).
    """
    device = x.device
    start = time.perf_counter()
    models = _init_models(model_cfg, info, seeds, device, init_model)
    rows = [np.flatnonzero(row) for row in member]
    val_rows = None
    if train_cfg.early_stopping.patience > 0:
        split = [validation_split(r, seed=s, fraction=train_cfg.early_stopping.validation_fraction)
                 for r, s in zip(rows, seeds, strict=True)]
        rows, val_rows = [t for t, _ in split], [v for _, v in split]
    # Dropout masks come from torch's global RNG (vmap's randomness="different"): seed it from the
    # group, so a run is reproducible; the masks then depend on the group, nothing else does.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seeds[0]) % (2**63))
        if train_cfg.dp_sgd is not None:
            details = [{"dp_sgd": train_dp_model(m, x=x, y=y if y.ndim == 1 else y[g], rows=r, cfg=train_cfg, seed=s)}
                       for g, (m, r, s) in enumerate(zip(models, rows, seeds, strict=True))]
            result = TrainedGroup([m.state_dict() for m in models], _stacked_predict(models), 0.0, False, details)
        else:
            n_steps = n_steps_per_epoch * train_cfg.epochs
            streams = [torch.as_tensor(index_stream(r, seed=seed, n_steps=n_steps, batch_size=train_cfg.batch_size),
                                       device=device) for r, seed in zip(rows, seeds, strict=True)]
            common = dict(x=x, y=y, cfg=train_cfg, seeds=seeds, val_rows=val_rows, steps=n_steps_per_epoch)
            if vectorize and len(models) > 1 and vmappable(models[0]):
                result = _train_vmapped(models, streams, **common, kernel=kernel)
            else:
                result = _train_loop(models, streams, **common)
    result.seconds = time.perf_counter() - start
    return result


def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t[idx] for idx int64[G, B]: one index_select (on a CPU ~10x faster than advanced indexing)."""
    return t.index_select(0, idx.reshape(-1)).reshape(*idx.shape, *t.shape[1:])


def _labels(y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """labels [G, B] of rows idx [G, B]: y int64[N] shared, or int64[G, N] per model."""
    return _rows(y, idx) if y.ndim == 1 else torch.gather(y, 1, idx)


def _step_inputs(x, y, idx, draws: EpochDraws | None, s: int):
    """(inputs [G, B, ...], labels [G, B], lam [G] | None, perm [G, B] | None) of step s of an epoch."""
    xb, yb = _rows(x, idx), _labels(y, idx)
    if draws is None:
        return xb, yb, None, None
    xb = augment(xb, flip=None if draws.flip is None else draws.flip[s],
                 shift=None if draws.shift is None else draws.shift[s])
    if draws.lam is None:
        return xb, yb, None, None
    lam, perm = draws.lam[s], draws.perm[s]
    return mixup_inputs(xb, lam=lam, perm=perm), yb, lam, perm


@torch.no_grad()
def _validation_loss(forward, val_rows: list[np.ndarray], x, y, *, chunk: int = 4096) -> np.ndarray:
    """float64[G]: each model's mean cross-entropy on its own validation rows; forward: [G, V, ...] -> [G, V, C]."""
    width = max(len(r) for r in val_rows)
    padded = np.stack([np.resize(r, width) for r in val_rows])  # pad by repeating; masked out below
    mask = torch.as_tensor(np.arange(width)[None, :] < np.array([len(r) for r in val_rows])[:, None],
                           device=x.device)
    index = torch.as_tensor(padded, device=x.device)
    losses = []
    for i in range(0, width, chunk):
        idx = index[:, i : i + chunk]
        logits = forward(x[idx])
        losses.append(F.cross_entropy(logits.permute(0, 2, 1), _labels(y, idx), reduction="none"))
    loss = torch.cat(losses, dim=1)
    return ((loss * mask).sum(1) / mask.sum(1)).double().cpu().numpy()


def _stacked_predict(models):
    @torch.no_grad()
    def predict(inputs: torch.Tensor) -> torch.Tensor:
        return torch.stack([model(inputs) for model in models])

    return predict


def _train_loop(models, streams, *, x, y, cfg: TrainConfig, seeds, val_rows, steps: int) -> TrainedGroup:
    details = [{} for _ in models]
    labels = y
    for g, (model, stream) in enumerate(zip(models, streams, strict=True)):
        y = labels if labels.ndim == 1 else labels[g]
        model.train()
        opt = make_optimizer(_trainable(model.parameters()), cfg)
        draws = BatchDraws(cfg, [seeds[g]], batch_size=stream.shape[1], device=x.device) if active(cfg) else None
        stopper = None if val_rows is None else EarlyStopping(patience=cfg.early_stopping.patience, n_models=1)
        for epoch in range(cfg.epochs):
            epoch_draws = draws.epoch(steps) if draws else None
            for s in range(steps):
                xb, yb, lam, perm = _step_inputs(x, y, stream[None, epoch * steps + s], epoch_draws, s)
                if lam is None and epoch_draws is None:
                    loss = F.cross_entropy(model(xb[0]), yb[0], label_smoothing=cfg.label_smoothing)
                else:
                    loss = group_loss(model(xb[0])[None], yb, cfg, lam=lam, perm=perm)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if stopper is not None:
                model.eval()
                val = _validation_loss(lambda xb, m=model: m(xb[0])[None], [val_rows[g]], x, y)
                model.train()
                stopper.update(epoch + 1, val, {k: v[None] for k, v in model.state_dict().items()})
                if stopper.all_stopped:
                    break
        if stopper is not None:
            model.load_state_dict({k: v[0] for k, v in stopper.best.items()})
            details[g]["early_stopping"] = {**stopper.details(0, epochs=cfg.epochs), "n_validation": len(val_rows[g])}
        model.eval()
    return TrainedGroup([model.state_dict() for model in models], _stacked_predict(models), 0.0, False, details)


def _train_vmapped(models, streams, *, x, y, cfg: TrainConfig, seeds, val_rows, steps: int,
                   kernel: bool = True) -> TrainedGroup:
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    batched = torch.vmap(lambda p, b, xb: functional_call(base, (p, b), (xb,)), randomness="different")
    # farm.ensemble: one baddbmm per layer where the model family allows it (MLP, logistic), else vmap
    fast = ensemble_kernel(models[0], params, cfg) if kernel else None
    if fast is not None:
        params, batched = fast.params, lambda p, b, xb: fast.forward(xb)
    opt = None if fast is not None else make_optimizer(_trainable(params.values()), cfg)
    index = torch.stack(streams, dim=1)  # [n_steps, G, B]
    n_models, batch_size = index.shape[1], index.shape[2]
    draws = BatchDraws(cfg, seeds, batch_size=batch_size, device=x.device) if active(cfg) else None
    stopper = None if val_rows is None else EarlyStopping(patience=cfg.early_stopping.patience, n_models=n_models)
    base.train()
    for epoch in range(cfg.epochs):
        epoch_draws = draws.epoch(steps) if draws else None
        for s in range(steps):
            xb, yb, lam, perm = _step_inputs(x, y, index[epoch * steps + s], epoch_draws, s)
            if fast is not None:
                fast.step(xb, yb, lam=lam, perm=perm)
                continue
            # sum over models of each model's mean loss (every model has the same batch size)
            loss = group_loss(batched(params, buffers, xb), yb, cfg, lam=lam, perm=perm)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if stopper is not None:
            base.eval()
            stopper.update(epoch + 1, _validation_loss(lambda xb: batched(params, buffers, xb), val_rows, x, y),
                           params)
            base.train()
            if stopper.all_stopped:
                break
    base.eval()
    details = [{} for _ in models]
    if stopper is not None:
        with torch.no_grad():
            for k, v in params.items():
                v.copy_(stopper.best[k])
        for g in range(n_models):
            details[g]["early_stopping"] = {**stopper.details(g, epochs=cfg.epochs), "n_validation": len(val_rows[g])}
    forward = torch.vmap(lambda p, b, xb: functional_call(base, (p, b), (xb,)), in_dims=(0, 0, None))

    @torch.no_grad()
    def predict(inputs: torch.Tensor) -> torch.Tensor:
        return forward(params, buffers, inputs) if fast is None else fast.predict(inputs)

    names = list(models[0].state_dict().keys())
    state_dicts = []
    for g in range(len(models)):
        merged = {**params, **buffers}
        state_dicts.append({name: merged[name][g].detach().clone() for name in names})
    return TrainedGroup(state_dicts, predict, 0.0, True, details)


@torch.no_grad()
def predict_in_chunks(predict, x: torch.Tensor, *, chunk: int = 4096) -> torch.Tensor:
    """logits float32[G, N, C] for x float32[N, ...], `chunk` examples at a time."""
    return torch.cat([predict(x[i : i + chunk]) for i in range(0, len(x), chunk)], dim=1)
