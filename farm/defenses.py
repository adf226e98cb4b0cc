"""Training-time defenses (DESIGN §7) that act inside the training step: augmentation, MixUp, early stopping.

Weight decay, label smoothing and dropout are plain optimizer / loss / model settings; DP-SGD trains
one model at a time through Opacus (`farm.dp`). What is here works on a group of G models at once, so
that vmapped ensembles keep training together, and is exactly the per-model computation for G = 1:

- Every random draw (which examples are flipped, how far each is shifted, MixUp's lambda and
  partner permutation, the validation split) comes from the model's own seed, through
  `numpy.random.default_rng([seed, stream])` with a stream number per use, so a model's training does
  not depend on the group it lands in. Draws are made one epoch at a time.
- Early stopping holds out `validation_fraction` of the model's OWN members (seeded); they stay
  members of the membership game (the training procedure received them) but never enter a gradient
  step. After every epoch the validation loss decides; the weights of the best epoch are kept, and a
  model stops after `patience` epochs without improvement. In a vmapped group a stopped model's later
  steps are discarded, which is the same as stopping it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from farm.config import RunConfig, TrainConfig
from farm.data import DatasetInfo
from farm.dp import check_dp_model
from farm.errors import ConfigError
from farm.models import build_model

VALIDATION_STREAM, BATCH_STREAM = 1, 2  # independent RNG streams derived from a model's seed


def check_defenses(cfg: RunConfig, *, info: DatasetInfo) -> None:
    """ConfigError when a training-time defense does not apply to this data / model / install."""
    t = cfg.train
    if (t.augmentation.flip or t.augmentation.translate) and (info.kind != "image" or len(info.shape) != 3):
        raise ConfigError(f"train.augmentation: applies to image data, but {info.name!r} is {info.kind}")
    if t.augmentation.translate and t.augmentation.translate >= min(info.shape[-2:]):
        raise ConfigError(f"train.augmentation.translate: expected less than the image size "
                          f"{min(info.shape[-2:])}, got {t.augmentation.translate}")
    if t.dp_sgd is not None:
        check_dp_model(build_model(cfg.model, info=info))


def active(cfg: TrainConfig) -> bool:
    """True when the step needs per-model draws (augmentation or MixUp)."""
    return bool(cfg.mixup_alpha > 0 or cfg.augmentation.flip or cfg.augmentation.translate)


def validation_split(members: np.ndarray, *, seed: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of one model's member example ids int[n]; at least one of each."""
    n_val = min(max(1, round(fraction * len(members))), len(members) - 1)
    if len(members) < 2:
        raise ConfigError(f"train.early_stopping: a model with {len(members)} member(s) cannot hold out a "
                          "validation split")
    shuffled = np.random.default_rng([seed, VALIDATION_STREAM]).permutation(members)
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])


@dataclass
class EpochDraws:
    """One epoch of per-model draws for G models, S steps, batches of B.

    flip: bool[S, G, B] | None; shift: int64[S, G, B, 2] (dy, dx) | None;
    lam: float32[S, G] | None and perm: int64[S, G, B] | None (MixUp partner of each batch row).
    """

    flip: torch.Tensor | None
    shift: torch.Tensor | None
    lam: torch.Tensor | None
    perm: torch.Tensor | None


class BatchDraws:
    """Per-model generators for augmentation and MixUp; `epoch(n_steps)` draws the next epoch's randomness."""

    def __init__(self, cfg: TrainConfig, seeds: Sequence[int], *, batch_size: int, device):
        self.cfg, self.batch_size, self.device = cfg, batch_size, device
        self.rngs = [np.random.default_rng([int(s), BATCH_STREAM]) for s in seeds]

    def epoch(self, n_steps: int) -> EpochDraws:
        a, b = self.cfg.augmentation, self.batch_size
        flips, shifts, lams, perms = [], [], [], []
        for rng in self.rngs:  # the same order of draws per model, whatever its group
            flips.append(rng.random((n_steps, b)) < 0.5 if a.flip else None)
            shifts.append(rng.integers(-a.translate, a.translate + 1, size=(n_steps, b, 2)) if a.translate else None)
            if self.cfg.mixup_alpha > 0:
                lams.append(rng.beta(self.cfg.mixup_alpha, self.cfg.mixup_alpha, size=n_steps))
                perms.append(rng.permuted(np.tile(np.arange(b), (n_steps, 1)), axis=1))

        def stack(parts, dtype):
            if not parts or parts[0] is None:
                return None
            return torch.as_tensor(np.stack(parts, axis=1), dtype=dtype, device=self.device)

        return EpochDraws(stack(flips, torch.bool), stack(shifts, torch.int64), stack(lams, torch.float32),
                          stack(perms, torch.int64))


def augment(xb: torch.Tensor, *, flip: torch.Tensor | None, shift: torch.Tensor | None,
            fill: float = 0.0) -> torch.Tensor:
    """Per-example flip and translation of images xb float32[G, B, C, H, W].

    flip: bool[G, B]; shift: int64[G, B, 2] as (dy, dx): out[y, x] = in[y - dy, x - dx], shifted-in pixels
    `fill` (the same convention as the `translate` query).
    """
    if flip is not None:
        xb = torch.where(flip[..., None, None, None], xb.flip(-1), xb)
    if shift is not None:
        g, b, c, h, w = xb.shape
        d = int(shift.abs().max()) if shift.numel() else 0
        if d:
            flat = F.pad(xb.reshape(g * b, c, h, w), (d, d, d, d), value=fill)
            s = shift.reshape(g * b, 2)
            rows = torch.arange(h, device=xb.device)[None, :] - s[:, :1] + d  # [GB, H]
            cols = torch.arange(w, device=xb.device)[None, :] - s[:, 1:] + d  # [GB, W]
            n = torch.arange(g * b, device=xb.device)[:, None, None, None]
            ch = torch.arange(c, device=xb.device)[None, :, None, None]
            xb = flat[n, ch, rows[:, None, :, None], cols[:, None, None, :]].reshape(g, b, c, h, w)
    return xb


def mixup_inputs(xb: torch.Tensor, *, lam: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """lam * x + (1 - lam) * x[perm], per model: xb float32[G, B, ...], lam [G], perm int64[G, B]."""
    partner = torch.gather(xb, 1, perm.reshape(*perm.shape, *([1] * (xb.ndim - 2))).expand_as(xb))
    weight = lam.reshape(-1, *([1] * (xb.ndim - 1)))
    return weight * xb + (1 - weight) * partner


def group_loss(logits: torch.Tensor, yb: torch.Tensor, cfg: TrainConfig, *, lam: torch.Tensor | None = None,
               perm: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over the G models of each model's mean loss. logits float[G, B, C], yb int64[G, B].

    Summing keeps each model's gradient its own (the models share no parameters). With MixUp the loss of a
    row is lam * CE(y) + (1 - lam) * CE(y[perm]).
    """
    g, b = yb.shape
    flat = logits.reshape(g * b, -1)
    if lam is None:
        return F.cross_entropy(flat, yb.reshape(-1), label_smoothing=cfg.label_smoothing, reduction="sum") / b
    own = F.cross_entropy(flat, yb.reshape(-1), label_smoothing=cfg.label_smoothing, reduction="none")
    other = F.cross_entropy(flat, torch.gather(yb, 1, perm).reshape(-1), label_smoothing=cfg.label_smoothing,
                            reduction="none")
    weight = lam[:, None]
    return (weight * own.reshape(g, b) + (1 - weight) * other.reshape(g, b)).sum() / b


class EarlyStopping:
    """Validation-loss early stopping for G models; keeps each model's best-epoch weights.

    params: the stacked parameters dict {name: float[G, ...]} (or the per-model list of parameter dicts,
    G = 1 each) that training updates in place; `update(epoch, val_loss float[G])` after every epoch.
    """

    def __init__(self, *, patience: int, n_models: int):
        self.patience = patience
        self.best_loss = np.full(n_models, math.inf)
        self.best_epoch = np.zeros(n_models, dtype=int)
        self.stopped_epoch = np.zeros(n_models, dtype=int)  # 0: still training
        self.best: dict[str, torch.Tensor] | None = None

    @property
    def all_stopped(self) -> bool:
        return bool((self.stopped_epoch > 0).all())

    def update(self, epoch: int, val_loss: np.ndarray, params: dict[str, torch.Tensor]) -> None:
        running = self.stopped_epoch == 0
        improved = running & (val_loss < self.best_loss)
        if self.best is None:
            self.best = {k: v.detach().clone() for k, v in params.items()}
        elif improved.any():
            rows = torch.as_tensor(np.flatnonzero(improved), device=next(iter(params.values())).device)
            for k, v in params.items():
                self.best[k][rows] = v.detach()[rows]
        self.best_loss[improved] = val_loss[improved]
        self.best_epoch[improved] = epoch
        stop = running & ~improved & (epoch - self.best_epoch >= self.patience)
        self.stopped_epoch[stop] = epoch

    def details(self, g: int, *, epochs: int) -> dict:
        return {"best_epoch": int(self.best_epoch[g]), "stopped_epoch": int(self.stopped_epoch[g] or epochs),
                "best_validation_loss": float(self.best_loss[g])}
