"""The optimizer of every training path: the vmapped ensemble, the per-model loop and DP-SGD (`farm.dp`).

`FlatOptimizer` is the same update for the ensemble kernel (`farm.ensemble`), over ONE flat tensor that
holds every parameter of a group: a handful of elementwise ops per step instead of one per parameter
tensor. Its math is torch's Adam and SGD step for step (L2 weight decay added to the gradient, bias
correction in Python floats, momentum buffer started at the first gradient), so a kernel-trained model
equals its vmapped twin to float rounding.
"""

from __future__ import annotations

import torch

from farm.config import TrainConfig


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """`train.optimizer` over `params`: SGD (momentum, weight decay) or Adam (weight decay), foreach kernels."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


class FlatOptimizer:
    """`train.optimizer` (Adam or SGD, torch's defaults otherwise) over one flat float tensor `param`.

    `step(grad)` updates `param` in place from `grad` (same shape); `grad` may be overwritten.
    """

    def __init__(self, param: torch.Tensor, cfg: TrainConfig, *, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.cfg, self.betas, self.eps = param, cfg, betas, eps
        self.steps = 0
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param) if cfg.optimizer == "adam" else None
        self._denom = torch.empty_like(param) if cfg.optimizer == "adam" else None

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        self.steps += 1
        if self.cfg.weight_decay:
            grad.add_(self.param, alpha=self.cfg.weight_decay)
        if self.exp_avg_sq is None:
            self._sgd(grad)
            return
        beta1, beta2 = self.betas
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        torch.sqrt(self.exp_avg_sq, out=self._denom)
        self._denom.div_((1 - beta2**self.steps) ** 0.5).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, self._denom, value=-self.cfg.lr / (1 - beta1**self.steps))

    def _sgd(self, grad: torch.Tensor) -> None:
        if self.cfg.momentum:
            if self.steps == 1:
                self.exp_avg.copy_(grad)
            else:
                self.exp_avg.mul_(self.cfg.momentum).add_(grad)
            grad = self.exp_avg
        self.param.add_(grad, alpha=-self.cfg.lr)
