"""Ensemble kernel: G MLPs (`farm.models` `mlp`, `logistic`) trained as one batched matrix product per layer.

The vmapped ensemble (`farm.train`) pays torch.func's and autograd's per-op overhead on every step; on a
CPU, with the quickstart's small layers, that overhead (not the arithmetic) bounds it. This kernel holds
the G models' parameters in ONE flat tensor (views [G, out, in] and [G, out] per layer), runs the forward
pass as one `torch.baddbmm` per layer, writes the hand-derived backward pass straight into one flat
gradient tensor and updates everything with `farm.optim.FlatOptimizer`: about twenty tensor ops per
step for the whole group, no autograd graph, no per-parameter optimizer loop.

It is the same training, not an approximation: the same inputs (the trainer's batches, augmentation and
MixUp draws), the loss `farm.defenses.group_loss` differentiates (cross-entropy with label smoothing and
MixUp), dropout masks drawn by `torch.native_dropout` on the stacked activations exactly as vmap's
randomness="different" draws them, and torch's Adam/SGD update; weights equal vmap's to float rounding
(tests/test_ensemble.py). `ensemble_kernel` returns None, and the trainer keeps vmap, for anything else:
other layer types, a Linear with a frozen weight but not its bias (or the reverse), non-float32 weights.
Frozen layers (requires_grad False, e.g. transfer learning's head-only fine-tuning, `farm.teacher`) stay
frozen: they sit after the trainable ones in the flat tensor, outside what the optimizer steps, and the
backward pass stops below the lowest trainable layer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from farm.config import TrainConfig
from farm.optim import FlatOptimizer


@dataclass(frozen=True)
class _Layer:
    """One Linear of the MLP, with what follows it: ReLU (relu) and Dropout(dropout; 0: none)."""

    prefix: str  # state-dict prefix of the Linear, e.g. "1."
    relu: bool
    dropout: float
    trainable: bool = True  # False: frozen (requires_grad off, `farm.teacher`'s body): never stepped


def mlp_layers(model: nn.Module) -> list[_Layer] | None:
    """The layers of `model` when it is Sequential(Flatten, [Linear, ReLU?, Dropout?]...), else None."""
    if not isinstance(model, nn.Sequential) or not len(model) or not isinstance(model[0], nn.Flatten):
        return None
    if model[0].start_dim != 1 or model[0].end_dim != -1:
        return None
    layers: list[dict] = []
    for name, module in list(model.named_children())[1:]:
        last = layers[-1] if layers else None
        if isinstance(module, nn.Linear) and module.bias is not None:
            layers.append({"prefix": f"{name}.", "relu": False, "dropout": 0.0})
        elif isinstance(module, nn.ReLU) and last and not last["relu"] and not last["dropout"]:
            last["relu"] = True
        elif isinstance(module, nn.Dropout) and last and not last["dropout"] and module.p > 0:
            last["dropout"] = float(module.p)
        else:
            return None
    return [_Layer(**layer) for layer in layers] or None


def ensemble_kernel(model: nn.Module, params: dict[str, torch.Tensor], cfg: TrainConfig) -> EnsembleMLP | None:
    """The kernel for G stacked copies of `model` (params: `stack_module_state`'s), or None: train with vmap."""
    layers = mlp_layers(model)
    if layers is None or any(v.dtype != torch.float32 for v in params.values()) or cfg.optimizer not in ("adam", "sgd"):
        return None
    grad = {name: p.requires_grad for name, p in model.named_parameters()}
    if any(grad[f"{la.prefix}weight"] != grad[f"{la.prefix}bias"] for la in layers) or not any(grad.values()):
        return None  # a Linear half frozen, or nothing to train: vmap
    return EnsembleMLP([dataclasses.replace(la, trainable=grad[f"{la.prefix}weight"]) for la in layers], params, cfg)


class EnsembleMLP:
    """G MLPs in one flat tensor. params: {name: float32[G, ...]} views of it, in the models' state-dict order.

    `step(xb, yb, lam=, perm=)`: one optimizer step of every model on its own batch; `forward(xb)`:
    eval-mode logits [G, B, C] of per-model inputs [G, B, ...]; `predict(x)`: logits [G, N, C] of shared
    inputs [N, ...].
    """

    def __init__(self, layers: list[_Layer], params: dict[str, torch.Tensor], cfg: TrainConfig):
        self.layers, self.cfg = layers, cfg
        names = [[f"{la.prefix}weight", f"{la.prefix}bias"] for la in layers]
        trainable = [k for la, pair in zip(layers, names, strict=True) if la.trainable for k in pair]
        order = trainable + [k for k in params if k not in trainable]  # the optimizer steps the front part
        sizes = [params[k].numel() for k in order]
        self.flat = torch.cat([params[k].detach().reshape(-1) for k in order])
        views = dict(zip(order, self.flat.split(sizes), strict=True))
        self.params = {k: views[k].view(params[k].shape) for k in params}
        n_trainable = sum(sizes[: len(trainable)])
        self.grad = torch.zeros(n_trainable, device=self.flat.device)
        grads = {k: g.view(params[k].shape) for k, g in zip(trainable, self.grad.split(sizes[: len(trainable)]),
                                                             strict=True)}
        self.weights = [(self.params[w], self.params[b]) for w, b in names]
        # the forward's operands, as views made once (the flat tensor is updated in place)
        self._operands = [(bias.unsqueeze(1), weight.transpose(1, 2)) for weight, bias in self.weights]
        self.grads = [(grads[w], grads[b]) if w in grads else None for w, b in names]
        self.lowest_trainable = min(i for i, la in enumerate(layers) if la.trainable)
        self.optimizer = FlatOptimizer(self.flat[:n_trainable], cfg)
        self._own: torch.Tensor | None = None  # -(1 - label smoothing) per row: the label's share of the target

    def _layers(self, a: torch.Tensor, *, train: bool, start: int = 0):
        """Layers `start`.. on a float32[G, B, in]; returns (logits, saved: per layer (input, relu out, mask))."""
        saved = []
        for layer, (bias, weight_t) in zip(self.layers[start:], self._operands[start:], strict=True):
            z = torch.baddbmm(bias, a, weight_t)
            relu_out = z.relu_() if layer.relu else None
            mask = None
            if layer.dropout and train:
                z, mask = torch.native_dropout(z, layer.dropout, True)
            saved.append((a, relu_out, mask))
            a = z
        return a, saved

    @torch.no_grad()
    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        return self._layers(xb.reshape(xb.shape[0], xb.shape[1], -1), train=False)[0]

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        # the first layer of all G models as ONE matrix product over the shared inputs
        weight, bias = self.weights[0]
        g, out, _ = weight.shape
        a = inputs.reshape(len(inputs), -1) @ weight.reshape(g * out, -1).T  # [N, G * out]
        a = a.reshape(len(inputs), g, out).transpose(0, 1) + bias.unsqueeze(1)
        if self.layers[0].relu:
            a = a.relu_()
        return self._layers(a, train=False, start=1)[0] if len(self.layers) > 1 else a

    @torch.no_grad()
    def step(self, xb: torch.Tensor, yb: torch.Tensor, *, lam: torch.Tensor | None = None,
             perm: torch.Tensor | None = None) -> None:
        """One step: xb float32[G, B, ...], yb int64[G, B]; MixUp's lam float32[G], perm int64[G, B] or None."""
        logits, saved = self._layers(xb.reshape(xb.shape[0], xb.shape[1], -1), train=True)
        d = self._loss_grad(logits, yb, lam=lam, perm=perm)
        for i in range(len(self.layers) - 1, self.lowest_trainable - 1, -1):
            (a, _, _), weight = saved[i], self.weights[i][0]
            if self.grads[i] is not None:
                torch.bmm(d.transpose(1, 2), a, out=self.grads[i][0])
                torch.sum(d, 1, out=self.grads[i][1])
            if i == self.lowest_trainable:
                break
            d = torch.bmm(d, weight)  # gradient of layer i's input: layer i - 1's output
            below, (_, relu_out, mask) = self.layers[i - 1], saved[i - 1]
            if mask is not None:
                d = torch.ops.aten.native_dropout_backward(d, mask, 1 / (1 - below.dropout))
            if below.relu:
                d = torch.ops.aten.threshold_backward(d, relu_out, 0)
        self.optimizer.step(self.grad)

    def _loss_grad(self, logits, yb, *, lam, perm) -> torch.Tensor:
        """d group_loss / d logits: (softmax - smoothed targets) / B per model; logits float32[G, B, C]."""
        g, b, c = logits.shape
        smoothing = self.cfg.label_smoothing
        # softmax over a middle dim: torch's CPU softmax over a short last dim (C=10) is ~20x slower
        d = torch.softmax(logits.transpose(1, 2), 1).transpose(1, 2)
        if smoothing:
            d.sub_(smoothing / c)
        if self._own is None or self._own.shape[:2] != (g, b):
            self._own = torch.full((g, b, 1), smoothing - 1.0, device=d.device)
        own = self._own
        if lam is None:
            return d.scatter_add_(2, yb.unsqueeze(2), own).div_(b)
        weight = lam.reshape(g, 1, 1)
        d.scatter_add_(2, yb.unsqueeze(2), own * weight)
        d.scatter_add_(2, torch.gather(yb, 1, perm).unsqueeze(2), own * (1 - weight))
        return d.div_(b)
