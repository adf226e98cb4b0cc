"""White-box statistics of every (model, example), from the saved weights: per-example gradients with torch.func.

For model m and example (x, y), with the model in eval mode and the loss L = cross-entropy at the true label y:

    loss          L                                     "whitebox_loss"        float64[M, N]
    margin        z_y - logsumexp_{c != y} z_c          "whitebox_margin"      (LiRA's logit-scaled confidence)
    grad_norm     ||dL/dtheta||_2 over every parameter  "whitebox_grad_norm"   (Rezaei & Liu)
    layer norms   ||dL/dtheta_l||_2 per layer l         "whitebox_layers"      float64[M, N, L] (Nasr et al.)
    activations   ||h_l(x)||_2 per layer but the last   "whitebox_activations" float64[M, N, L - 1]
    top           the K largest softmax probabilities   "whitebox_top"         float64[M, N, K]

A layer is a module with parameters of its own (Linear, Conv2d, GroupNorm), in registration order. Gradients are
per example, vmap(grad(...)) over a batch of examples and vmap over the stacked models of a group at once, so a
group of G models costs one batched call per batch of examples (`group_statistics`); `loop_statistics` is the
plain reference (model.zero_grad(); loss.backward() per example), used by the benchmark. Work is one Ray task per
(model group, example chunk) through `attacks.compute.tasks.map_tasks`; each writes one part file per model,
`whitebox/<key>/model_id=00007/part-<first>-<stop>.parquet` (example_id, then every statistic), atomically, so a
re-run computes only what is missing. The key hashes the statistics' definition (`VERSION`, `TOP_K`): the
weights of a run never change once written.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import ray
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from attacks.compute.tasks import map_tasks, task
from attacks.methods.whitebox import STATISTICS
from attacks.responses import Responses
from farm.config import ModelConfig
from farm.content import cached, write_recorded
from farm.data import DatasetInfo
from farm.models import build_model
from farm.plan import Plan
from farm.shards import fixed_list_to_numpy, load_weights
from farm.storage import RunDir, table_bytes
from farm.worker import hold_point

VERSION = 1
TOP_K = 3
SCALARS = ("loss", "margin", "grad_norm")
VECTORS = ("layers", "activations", "top")
GRADIENT_FLOATS = 1 << 25  # per batched call: G models x B examples x parameters of gradient, at most


def cache_key() -> str:
    return hashlib.sha256(json.dumps({"version": VERSION, "top_k": TOP_K}).encode()).hexdigest()[:12]


def _part(key: str, model_id: int, start: int, stop: int) -> str:
    return f"whitebox/{key}/model_id={model_id:05d}/part-{start:06d}-{stop:06d}.parquet"


def layer_names(model: nn.Module) -> list[str]:
    """The modules with parameters of their own, in registration order (their dotted names)."""
    return [name for name, module in model.named_modules() if next(module.parameters(recurse=False), None) is not None]


def _layer_of(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0] if "." in param_name else ""


def _recorder(model: nn.Module) -> list[torch.Tensor]:
    """A list that receives the output of every layer (`layer_names`) but the last, at each forward pass."""
    outputs: list[torch.Tensor] = []
    layers = dict(model.named_modules())
    for name in layer_names(model)[:-1]:
        layers[name].register_forward_hook(lambda _m, _i, out: outputs.append(out))
    return outputs


def _head(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, margin, top K probabilities) of logits float[C] at label y, in float64."""
    z = logits.double()
    log_p = F.log_softmax(z, dim=-1)
    hot = torch.arange(z.shape[-1], device=z.device) == y  # not z[y] or one_hot: vmap cannot index with a batched label
    loss = -(log_p * hot).sum()
    margin = (z * hot).sum() - torch.logsumexp(z.masked_fill(hot, -torch.inf), dim=-1)
    return loss, margin, log_p.exp().topk(min(TOP_K, z.shape[-1])).values


def _norms(outputs: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([o.double().flatten().norm() for o in outputs]) if outputs else torch.zeros(0)


def group_statistics(base: nn.Module, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor,
                     *, batch: int | None = None) -> dict[str, np.ndarray]:
    """Every statistic of G stacked models (params/buffers: name -> [G, ...]) on x [B, *shape], y int[B].

    Returns field -> float64[G, B] (`SCALARS`) or [G, B, ...] (`VECTORS`). batch: examples per batched call
    (default: as many as keep G x batch x parameters under `GRADIENT_FLOATS`)."""
    base = copy.deepcopy(base).eval()
    outputs = _recorder(base)
    layers = layer_names(base)

    def one(p, b, xi, yi):
        outputs.clear()
        loss, margin, top = _head(functional_call(base, (p, b), (xi[None],))[0], yi)
        return loss.float(), (loss, margin, top, _norms(outputs))

    per_model = vmap(vmap(grad(one, has_aux=True), in_dims=(None, None, 0, 0)), in_dims=(0, 0, None, None))
    n_models = next(iter(params.values())).shape[0]
    per_call = batch or max(1, GRADIENT_FLOATS // (n_models * sum(v[0].numel() for v in params.values())))
    parts = []
    for start in range(0, len(x), per_call):
        grads, (loss, margin, top, acts) = per_model(params, buffers, x[start:start + per_call],
                                                     y[start:start + per_call])
        squares = torch.stack([sum(g.double().pow(2).flatten(2).sum(-1) for n, g in grads.items()
                                   if _layer_of(n) == layer) for layer in layers], dim=-1)
        parts.append({"loss": loss, "margin": margin, "grad_norm": squares.sum(-1).sqrt(),
                      "layers": squares.sqrt(), "activations": acts, "top": top})
    return {k: torch.cat([p[k] for p in parts], dim=1).detach().numpy() for k in parts[0]}


def loop_statistics(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """The reference: `group_statistics` of one model, one example at a time (zero_grad, backward), no vmap.

    Returns field -> float64[B] or [B, ...]."""
    model = copy.deepcopy(model).eval()
    outputs, layers = _recorder(model), dict(model.named_modules())
    rows = []
    for i in range(len(x)):
        outputs.clear()
        model.zero_grad()
        loss, margin, top = _head(model(x[i:i + 1])[0], y[i])
        loss.float().backward()
        layer_norms = torch.stack([sum(p.grad.double().pow(2).sum() for p in layers[name].parameters(recurse=False))
                                   for name in layer_names(model)]).sqrt()
        rows.append({"loss": loss, "margin": margin, "grad_norm": layer_norms.pow(2).sum().sqrt(),
                     "layers": layer_norms, "activations": _norms(outputs), "top": top})
    return {k: torch.stack([r[k] for r in rows]).detach().numpy() for k in rows[0]}


def stacked(model_cfg: ModelConfig, info: DatasetInfo, state_dicts: Sequence[dict]) -> tuple[nn.Module, dict, dict]:
    """(base module, params, buffers) of models with these state_dicts, stacked along a first axis of size G."""
    base = build_model(model_cfg, info=info)
    names = {name for name, _ in base.named_parameters()}
    stack = {k: torch.stack([sd[k] for sd in state_dicts]) for k in state_dicts[0]}
    return base, {k: v for k, v in stack.items() if k in names}, {k: v for k, v in stack.items() if k not in names}


def _table(start: int, stats: dict[str, np.ndarray], g: int) -> pa.Table:
    columns = {"example_id": pa.array(np.arange(start, start + stats["loss"].shape[1], dtype=np.int32))}
    for k, v in stats.items():
        row = np.asarray(v[g], dtype=np.float64)
        if row.ndim == 1:
            columns[k] = pa.array(row)
        elif row.shape[1]:  # a zero-width vector (no hidden layer: no activation) is left out
            columns[k] = pa.FixedSizeListArray.from_arrays(pa.array(row.reshape(-1)), row.shape[1])
    return pa.table(columns)


def _chunk(run_uri: str, models: list[int], start: int, stop: int, model_cfg: ModelConfig, info: DatasetInfo,
           x: np.ndarray, labels: np.ndarray, key: str) -> None:
    hold_point(f"whitebox-{models[0]:05d}-{start:06d}")  # test hook: a test removes this task's node here
    torch.set_num_threads(1)
    run = RunDir(run_uri)
    base, params, buffers = stacked(model_cfg, info, [load_weights(run, m) for m in models])
    stats = group_statistics(base, params, buffers, torch.tensor(x[start:stop]),
                             torch.tensor(np.asarray(labels[start:stop], dtype=np.int64)))
    for g, m in enumerate(models):
        write_recorded(run, _part(key, m, start, stop), table_bytes(_table(start, stats, g)))


_chunk_task = task(_chunk)


def whitebox_statistics(run: RunDir, *, model_cfg: ModelConfig, info: DatasetInfo, x: np.ndarray,
                        labels: np.ndarray, models: Sequence[int], n_models: int, group_size: int = 16,
                        chunk_examples: int = 4096, progress: bool = True,
                        local: bool = False) -> dict[str, np.ndarray]:
    """Responses.statistics name -> float64[n_models, N] or [n_models, N, ...] for `models` (NaN rows for the others).

    x: float32[N, *info.shape] the population in example_id order, labels int[N]. Missing parts are computed by
    one Ray task per (group of up to `group_size` models, chunk of `chunk_examples` examples); local=True: here."""
    key, n = cache_key(), len(labels)
    todo = []
    for start in range(0, n, chunk_examples):
        stop = min(start + chunk_examples, n)
        missing = [m for m in sorted(models) if not cached(run, _part(key, m, start, stop))]
        todo += [(missing[i:i + group_size], start, stop) for i in range(0, len(missing), group_size)]
    if todo and local:
        for group, start, stop in todo:
            _chunk(run.uri, group, start, stop, model_cfg, info, x, labels, key)
    elif todo:
        x_ref, labels_ref = ray.put(x), ray.put(np.asarray(labels))
        map_tasks(lambda t: _chunk_task.remote(run.uri, *t, model_cfg, info, x_ref, labels_ref, key), todo,
                  desc="white-box", unit="chunk", progress=progress)
    return _read(run, key, models=models, n_examples=n, n_models=n_models, chunk_examples=chunk_examples)


def _read(run: RunDir, key: str, *, models: Sequence[int], n_examples: int, n_models: int,
          chunk_examples: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for m in models:
        for start in range(0, n_examples, chunk_examples):
            stop = min(start + chunk_examples, n_examples)
            table = run.read_table(_part(key, m, start, stop))
            for field in (*SCALARS, *VECTORS):
                if field not in table.column_names:
                    values = np.zeros((stop - start, 0))
                else:
                    values = table[field].to_numpy() if field in SCALARS else fixed_list_to_numpy(table[field])
                if field not in out:
                    out[field] = np.full((n_models, n_examples, *values.shape[1:]), np.nan)
                out[field][m, start:stop] = values
    return {STATISTICS[k]: v for k, v in out.items()}


def prepare(plan: Plan, responses: Responses, chosen: dict, *, scored: Sequence[int], everyone: Sequence[int],
            seed: int, progress: bool, local: bool) -> Responses:
    """`responses` with every white-box statistic of the `scored` models and `everyone` (`Statistic.prepare`; the
    same for every white-box attack, so prepared once: chosen and seed are unused)."""
    stats = whitebox_statistics(plan.run, model_cfg=plan.cfg.model, info=plan.dataset.info, x=plan.dataset.x,
                                labels=plan.dataset.y, models=sorted(set(scored) | set(everyone)),
                                n_models=responses.n_models, group_size=plan.cfg.farm.group_size,
                                progress=progress, local=local)
    for name, values in stats.items():
        responses = responses.with_statistic(name, values)
    return responses
