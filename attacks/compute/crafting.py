"""Crafting queries by gradient descent through stacked shadow models (YOQO, Wu et al., ICLR 2024).

One batched kernel: the G models of a crafting set are stacked (`attacks.compute.whitebox.stacked`) and called
with `torch.func.functional_call` under `vmap`, so each descent step is one batched forward and backward pass
for a whole chunk of examples through every crafting model. Examples never interact: the loss is a sum of
per-example terms and Adam's state is per coordinate, so a crafted input does not depend on which examples
share its chunk. `loop_craft` is the per-example, per-model reference (the loop of the public implementations),
used by the tests and the benchmark.

Objective for example (x, y), perturbation delta, crafted input x' = clip(x + delta) (YOQO, both variants):
    online:  mean_{g IN}  CE(f_g(x'), y) + alpha * mean_{g OUT} CE(f_g(x'), y~_g)
    offline: mean_{g OUT} CE(f_g(x'), y~_g) + alpha * ||delta||^2 / D
with y~_g the OUT model's most likely wrong label on x, D the number of features. A graded score asks several
queries: the crafted inputs after steps * (j + 1) / n_queries descent steps, j = 0..n_queries-1 (the last one
the furthest pushed).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap


@dataclass(frozen=True)
class CraftSettings:
    """variant "online" (IN and OUT crafting models) or "offline" (OUT only); steps of Adam at rate lr (in units
    of the data's value range), alpha the weight of the second term; n_queries crafted inputs per example."""

    variant: str = "online"
    steps: int = 40
    lr: float = 0.02
    alpha: float = 1.0
    n_queries: int = 1

    def checkpoints(self) -> list[int]:
        """The descent steps after which a crafted input is kept, one per query."""
        return [max(1, round(self.steps * (j + 1) / self.n_queries)) for j in range(self.n_queries)]


def _wrong_label(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """int64[G, B]: each model's most likely label other than y, from logits float[G, B, C]."""
    return logits.masked_fill(F.one_hot(y, logits.shape[-1]).bool()[None], -torch.inf).argmax(-1)


def _loss(logits: torch.Tensor, y: torch.Tensor, wrong: torch.Tensor, member: torch.Tensor, delta: torch.Tensor,
          settings: CraftSettings) -> torch.Tensor:
    """The summed per-example objective (logits float[G, B, C], member bool[G, B], delta float[B, ...])."""
    g, b, c = logits.shape
    flat = logits.reshape(g * b, c)
    to_y = F.cross_entropy(flat, y.repeat(g), reduction="none").reshape(g, b)
    to_wrong = F.cross_entropy(flat, wrong.reshape(-1), reduction="none").reshape(g, b)
    inside, outside = member.float(), (~member).float()
    out_term = (to_wrong * outside).sum(0) / outside.sum(0).clamp(min=1)
    if settings.variant == "online":
        in_term = (to_y * inside).sum(0) / inside.sum(0).clamp(min=1)
        return (in_term + settings.alpha * out_term).sum()
    return (out_term + settings.alpha * delta.flatten(1).pow(2).mean(1)).sum()


@dataclass(frozen=True)
class OsloSettings:
    """OSLO (Peng et al., NeurIPS 2024): sign-gradient steps with momentum (norm "linf", images) or normalized
    L2 steps ("l2", tabular) of size lr (in units of the data's value range) on the source OUT models' loss, at
    most `steps`; one query per level tau, the input at the first step where the validation OUT models' mean
    probability of the true class falls below tau (the last input when it never does)."""

    levels: tuple[float, ...] = (0.5, 0.25, 0.1, 0.05)
    steps: int = 40
    lr: float = 0.01
    momentum: float = 1.0
    norm: str = "linf"

    @property
    def n_queries(self) -> int:
        return len(self.levels)


def _kernel(settings):
    return _transfer if isinstance(settings, OsloSettings) else _descend


def craft(base: nn.Module, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor, member: torch.Tensor,
          *, settings: CraftSettings, bounds: tuple[float, float]) -> torch.Tensor:
    """float32[B, n_queries, *shape]: the crafted inputs of examples x float32[B, *shape] with labels y int64[B],
    through G stacked models (params/buffers: name -> [G, ...]) whose membership is member bool[G, B]."""
    base = copy.deepcopy(base).eval().requires_grad_(False)
    batched = vmap(lambda p, b, inputs: functional_call(base, (p, b), (inputs,)), in_dims=(0, 0, None))
    return _kernel(settings)(lambda inputs: batched(params, buffers, inputs), x, y, member, settings, bounds)


def margins_of(base: nn.Module, params: dict, buffers: dict, inputs: np.ndarray, labels: np.ndarray,
               batch: int = 4096) -> np.ndarray:
    """float64[G, N, Q]: each of G stacked models' logit of the true label (labels int[N]) minus its largest other
    logit on inputs float32[N, Q, *shape] (one batched pass per `batch` inputs)."""
    n, q = inputs.shape[:2]
    base = copy.deepcopy(base).eval().requires_grad_(False)
    forward = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, None))
    flat = torch.from_numpy(np.ascontiguousarray(inputs.reshape(n * q, *inputs.shape[2:])))
    y = torch.from_numpy(np.repeat(np.asarray(labels, dtype=np.int64), q))
    out = []
    with torch.no_grad():
        for start in range(0, n * q, batch):
            logits, index = forward(params, buffers, flat[start:start + batch]), y[start:start + batch, None]
            true = logits.gather(-1, index[None].expand(len(logits), -1, 1))[..., 0]
            others = logits.scatter(-1, index[None].expand(len(logits), -1, 1), -torch.inf).amax(-1)
            out.append((true - others).double())
    return torch.cat(out, dim=1).numpy().reshape(-1, n, q)


def loop_craft(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, member: torch.Tensor, *,
               settings: CraftSettings, bounds: tuple[float, float]) -> torch.Tensor:
    """`craft` one example at a time, through one model at a time (no vmap, no batch): the reference."""
    models = [copy.deepcopy(m).eval().requires_grad_(False) for m in models]

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(inputs) for m in models])

    return torch.cat([_kernel(settings)(forward, x[i:i + 1], y[i:i + 1], member[:, i:i + 1], settings, bounds)
                      for i in range(len(x))])


def _transfer(forward, x: torch.Tensor, y: torch.Tensor, member: torch.Tensor, settings: OsloSettings,
              bounds: tuple[float, float]) -> torch.Tensor:
    """OSLO's transfer attack; forward(inputs [B, ...]) -> logits [G, B, C]. Each example's OUT models alternate
    between source (gradients) and validation (the stop test) in model order."""
    lo, hi = bounds
    out = (~member).float()
    rank = out.cumsum(0) * out
    source, validation = out * (rank % 2 == 1), out * (rank % 2 == 0) * (rank > 0)
    levels = torch.tensor(settings.levels)
    kept = x.detach().clone()[:, None].repeat(1, len(levels), *([1] * (x.dim() - 1)))
    done = torch.zeros(len(x), len(levels), dtype=torch.bool)
    crafted, velocity = x.detach().clone(), torch.zeros_like(x)
    step_size = settings.lr * (hi - lo if hi > lo else 1.0)
    for step in range(settings.steps + 1):
        crafted.requires_grad_(True)
        logits = forward(crafted)
        with torch.no_grad():  # the stop test on the validation models, before stepping
            p_y = logits.softmax(-1).gather(-1, y[None, :, None].expand(len(logits), -1, 1))[..., 0]
            p_val = (p_y * validation).sum(0) / validation.sum(0).clamp(min=1)
            p_val = torch.where(validation.sum(0) > 0, p_val, torch.ones_like(p_val))
            reached = (p_val[:, None] < levels[None]) & ~done
            kept[reached] = crafted.detach()[:, None].expand_as(kept)[reached]
            done |= reached
        if step == settings.steps or done.all():
            break
        flat = logits.reshape(-1, logits.shape[-1])
        per_model = F.cross_entropy(flat, y.repeat(len(logits)), reduction="none").reshape(len(logits), -1)
        loss = ((per_model * source).sum(0) / source.sum(0).clamp(min=1)).sum()
        (gradient,) = torch.autograd.grad(loss, crafted)
        with torch.no_grad():
            velocity = settings.momentum * velocity + gradient / gradient.abs().flatten(1).mean(1).clamp(
                min=1e-12).view(-1, *([1] * (x.dim() - 1)))
            direction = velocity.sign() if settings.norm == "linf" else velocity / velocity.flatten(1).norm(
                dim=1).clamp(min=1e-12).view(-1, *([1] * (x.dim() - 1))) * velocity[0].numel() ** 0.5
            crafted = (crafted + step_size * direction).clamp(lo, hi).detach()
    kept[~done] = crafted.detach()[:, None].expand_as(kept)[~done]
    return kept


def _descend(forward, x: torch.Tensor, y: torch.Tensor, member: torch.Tensor, settings: CraftSettings,
             bounds: tuple[float, float]) -> torch.Tensor:
    """Adam on delta for `settings.steps` steps; forward(inputs [B, ...]) -> logits [G, B, C]."""
    lo, hi = bounds
    with torch.no_grad():
        wrong = _wrong_label(forward(x), y)
    delta = torch.zeros_like(x, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=settings.lr * (hi - lo if hi > lo else 1.0))
    keep, kept = set(settings.checkpoints()), []
    for step in range(1, settings.steps + 1):
        optimizer.zero_grad()
        _loss(forward((x + delta).clamp(lo, hi)), y, wrong, member, delta, settings).backward()
        optimizer.step()
        if step in keep:
            kept.append((x + delta.detach()).clamp(lo, hi))
    return torch.stack(kept, dim=1)
