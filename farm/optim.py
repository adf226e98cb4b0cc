"""The optimizer of every training path: the vmapped ensemble, the per-model loop and DP-SGD (`farm.dp`)."""

from __future__ import annotations

import torch

from farm.config import TrainConfig


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """`train.optimizer` over `params`: SGD (momentum, weight decay) or Adam (weight decay), foreach kernels."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
