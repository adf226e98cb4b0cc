"""Memory a config will need, estimated before anything is allocated or written, against the machine's memory.

Each value that sets memory is checked through an estimate (bytes, from the config and the data set's size
alone): the membership matrix (`membership.n_models` x examples), the responses the attack stage reads whole
(models x examples x queries), a trainer actor's index streams and activations (`train.batch_size`: a batch
larger than a model's training set repeats its examples and costs memory all the same), and a group's weights,
gradients and optimizer state (`farm.group_size` x the model's parameters). The largest estimate, when it is over
MEMORY_FRACTION of the machine's memory, is a ConfigError naming its field, the estimate and the memory. The
estimates are lower bounds (Python, torch and Ray add their own): they stop a config that can never fit, not one
that barely does.

The machine is the one that plans the run (the driver). `SHADOWFARM_MEMORY_BYTES` sets the memory to check
against instead: a cluster whose nodes differ from the driver's, or a test with a small bound.
"""

from __future__ import annotations

import math
import os

from farm.config import RunConfig
from farm.errors import ConfigError

MEMORY_FRACTION = 0.8
MEMORY_ENV = "SHADOWFARM_MEMORY_BYTES"


def machine_memory() -> int:
    """Bytes of memory to plan against: `SHADOWFARM_MEMORY_BYTES`, or this machine's physical memory."""
    configured = os.environ.get(MEMORY_ENV)
    if configured:
        try:
            return int(configured)
        except ValueError:
            raise ConfigError(f"{MEMORY_ENV}: expected a number of bytes, got {configured[:40]!r}") from None
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def size_text(n_bytes: int | float) -> str:
    """`1.5 GiB`, `214.3 TiB`: bytes for an error line."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n_bytes < 1024 or unit == "PiB":
            return f"{n_bytes:,.0f} {unit}" if unit == "B" else f"{n_bytes:,.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def estimates(cfg: RunConfig, *, n_examples: int, n_features: int, n_classes: int, n_queries: int,
              n_params: int) -> list[tuple[str, int, str]]:
    """(field, bytes, what they hold) of each estimate, in the order they are checked (Python ints: no overflow)."""
    m, t = cfg.membership.n_models, cfg.train
    g = min(cfg.farm.group_size, m)  # a group never holds more than the run's models
    n_train = max(1, math.ceil(cfg.membership.p_in * n_examples))  # a model's members, on average
    logits = n_classes * 4 if cfg.record_logits else 0
    per_example = (n_features + n_classes + sum(cfg.model.hidden)) * 4 * 3  # inputs, activations and their grads
    return [
        ("membership.n_models", m * n_examples * 11,
         f"the membership matrix and table of {m:,} models x {n_examples:,} examples"),
        ("queries", m * n_examples * (2 * n_queries + logits),
         f"the responses of {m:,} models x {n_examples:,} examples x {n_queries:,} queries (the attack stage "
         "reads them whole)"),
        ("train.batch_size" if t.batch_size > n_train else "train.epochs",
         g * (t.epochs * max(t.batch_size, n_train) * 8 + t.batch_size * per_example),
         f"a trainer actor's index streams and activations for {g:,} models x {t.epochs:,} epochs x batches of "
         f"{t.batch_size:,} (a model trains on about {n_train:,} examples)"),
        ("farm.group_size", g * n_params * 4 * 4,
         f"the weights, gradients and optimizer state of {g:,} models of {n_params:,} parameters (the model's size: "
         "model.hidden, model.width)"),
    ]


def batch_note(cfg: RunConfig, member) -> str | None:
    """A note when `train.batch_size` exceeds the largest training set of the run's models (member bool[M, N]):
    such a batch repeats its examples (`farm.train.index_stream`: reshuffled passes, one step per epoch), close
    to full-batch training; None otherwise. Kept, not refused: the default batch (128) exceeds the training sets of
    small runs (a 120-example population), and runs trained so stay the same when resumed."""
    largest = int(member.sum(1).max()) if member.size else 0
    if cfg.train.batch_size <= largest:
        return None
    return (f"train.batch_size: {cfg.train.batch_size:,} is larger than a model's training set (at most "
            f"{largest:,} examples): each batch repeats examples, one step per epoch (close to full-batch training); "
            f"set train.batch_size: {largest:,} or less for batches of distinct examples")


def check_memory(cfg: RunConfig, *, n_examples: int, n_features: int, n_classes: int, n_queries: int,
                 n_params: int) -> None:
    """ConfigError when an estimate exceeds MEMORY_FRACTION of `machine_memory()`, naming the membership matrix's
    field when it is over (the number of models scales every other estimate), else the largest one's."""
    memory = machine_memory()
    over = [estimate for estimate in estimates(cfg, n_examples=n_examples, n_features=n_features,
                                               n_classes=n_classes, n_queries=n_queries, n_params=n_params)
            if estimate[1] > MEMORY_FRACTION * memory]
    if not over:
        return
    field, need, what = over[0] if over[0][0] == "membership.n_models" else max(over, key=lambda e: e[1])
    raise ConfigError(f"{field}: {what} need about {size_text(need)}, more than this machine's memory can "
                      f"hold ({size_text(memory)}, of which shadowfarm plans with at most {MEMORY_FRACTION:.0%}); "
                      "lower it")
