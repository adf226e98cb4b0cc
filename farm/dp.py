"""DP-SGD for one model through Opacus (Abadi et al.): Poisson sampling, per-example clipping, Gaussian noise.

Decisions:
- One model at a time: per-example gradients, Poisson batches of random size and the accountant are
  per model, so DP models never train as a vmapped group; `farm.group_size` only groups the work.
- The noise multiplier is Opacus's `get_noise_multiplier` for the target (ε, δ) at sample rate
  1 / ceil(n / batch_size) over `train.epochs` epochs: what `make_private_with_epsilon` computes. It is
  memoized per (rate, epochs, ε, δ, accountant), since the search takes seconds and the models of a
  run share a handful of rates; `make_private` then wraps the model with it.
- The ε recorded is what the accountant reports for the steps actually taken, at the config's δ
  (memoized on the accountant's history, which models of the same rate share).
- Batches are fetched with one tensor index (`_Rows.__getitems__`), not example by example: the
  Poisson sampler is Opacus's; the per-example `default_collate` took about 40% of a model's time.
- Seeded: the Poisson sampler and the noise draw from generators seeded with the model's seed, so
  a model is a pure function of (run seed, model_id), not cryptographically secure randomness
  (`secure_mode` off: fine for an audit, not for releasing a model).
"""

from __future__ import annotations

import functools
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from farm.config import TrainConfig
from farm.errors import ConfigError
from farm.optim import make_optimizer

NOISE_STREAM, SAMPLER_STREAM = 3, 4

_INSTALL = "train.dp_sgd needs Opacus: pip install opacus==1.6.0"


def _opacus():
    try:
        import opacus
    except ImportError:
        raise ConfigError(_INSTALL) from None
    return opacus


def check_dp_model(model: nn.Module) -> None:
    """ConfigError when Opacus is missing or cannot compute per-example gradients of `model`."""
    _opacus()
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ConfigError(f"train.dp_sgd: Opacus cannot train this model ({str(errors[0]).splitlines()[0]})")


@functools.lru_cache(maxsize=64)
def noise_multiplier(*, epsilon: float, delta: float, sample_rate: float, epochs: int, accountant: str) -> float:
    """The Gaussian noise multiplier that spends (epsilon, delta) in `epochs` epochs at `sample_rate`."""
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # RDP: "optimal order is the largest alpha"
        warnings.simplefilter("ignore", RuntimeWarning)  # PRV: log(0) at the edge of its grid, handled there
        return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                          epochs=epochs, accountant=accountant))


@functools.lru_cache(maxsize=64)
def spent_epsilon(history: tuple[tuple[float, float, int], ...], *, delta: float, accountant: str) -> float:
    """ε spent at `delta` by an accountant history ((noise multiplier, sample rate, steps), ...)."""
    from opacus.accountants import create_accountant

    spent = create_accountant(accountant)
    spent.history = list(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(spent.get_epsilon(delta))


class _Rows(Dataset):
    """(x, y) rows on the device; `__getitems__` lets the DataLoader fetch a whole batch with one index."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.int64, device=self.y.device)
        return [self.x[index], self.y[index]]


def _as_batch(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    return batch  # already [inputs, labels] from `_Rows.__getitems__` (an empty Poisson batch included)


def _seeded(seed: int, stream: int, device) -> torch.Generator:
    value = int(np.random.default_rng([int(seed), stream]).integers(2**62))
    return torch.Generator(device=device).manual_seed(value)


def train_dp_model(model: nn.Module, *, x: torch.Tensor, y: torch.Tensor, rows: np.ndarray, cfg: TrainConfig,
                   seed: int) -> dict:
    """Train `model` in place with DP-SGD on x[rows], y[rows]; returns what metrics.json records.

    x: float32[N, ...], y: int64[N] on the model's device; rows: int[n] the model's members.
    Returns {"epsilon": spent ε, "delta", "target_epsilon", "noise_multiplier", "max_grad_norm",
    "sample_rate", "steps", "accountant", "seconds_accounting"}.
    """
    _opacus()
    from opacus import PrivacyEngine

    dp = cfg.dp_sgd
    device = x.device
    index = torch.as_tensor(rows, device=device)
    loader = DataLoader(_Rows(x[index], y[index]), batch_size=cfg.batch_size, collate_fn=_as_batch,
                        generator=_seeded(seed, SAMPLER_STREAM, "cpu"))
    sample_rate = 1 / len(loader)  # Opacus's Poisson rate: one expected batch per len(loader)
    start = time.perf_counter()
    sigma = noise_multiplier(epsilon=dp.epsilon, delta=dp.delta, sample_rate=sample_rate, epochs=cfg.epochs,
                             accountant=dp.accountant)
    optimizer = make_optimizer(model.parameters(), cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "secure RNG turned off": seeded on purpose, see above
        engine = PrivacyEngine(accountant=dp.accountant)
        module, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma,
            max_grad_norm=dp.max_grad_norm, poisson_sampling=True,
            noise_generator=_seeded(seed, NOISE_STREAM, device))
    accounting = time.perf_counter() - start
    module.train()
    steps = 0
    for _ in range(cfg.epochs):
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            out = module(xb)
            # An empty Poisson batch still takes a (noise-only) step: the accountant assumes every step.
            loss = (F.cross_entropy(out, yb, label_smoothing=cfg.label_smoothing) if len(yb)
                    else out.sum() * 0.0)
            with warnings.catch_warnings():
                # Opacus's hooks fire on module outputs here by design (inputs need no gradient)
                warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
                loss.backward()
            optimizer.step()
            steps += 1
    start = time.perf_counter()
    # = engine.get_epsilon(delta), memoized: the history is the same for every model of a given rate
    spent = spent_epsilon(tuple(map(tuple, engine.accountant.history)), delta=dp.delta, accountant=dp.accountant)
    accounting += time.perf_counter() - start
    module.cleanup()  # removes the hooks and the per-example gradient attributes from the parameters
    model.eval()
    return {"epsilon": spent, "delta": dp.delta, "target_epsilon": dp.epsilon, "noise_multiplier": sigma,
            "max_grad_norm": dp.max_grad_norm, "sample_rate": sample_rate, "steps": steps,
            "accountant": dp.accountant, "seconds_accounting": accounting}
