"""The oracle contract (DESIGN §5): inputs in, predicted labels out, every query counted.

Targets are label oracles: the attack stage never sees a target's logits. An oracle answers
`predict_labels(x)` with int64[B] labels for a batch float32[B, *shape] and nothing else (the
confidence baselines read logits from the shards). This module holds the contract (`LabelOracle`),
the answer validation every oracle applies (`check_labels`) and the counting base class
(`CountingOracle`); the model-backed oracles are in `attacks.oracles.model`, the HTTP client in
`attacks.oracles.http_client`.

Counting: every example of a batch is one query. A call that would take `queries_used` past
`budget` raises `QueryBudgetExceeded` before anything is spent or answered (no partial answers).
Queries are reserved under a lock before answering, so concurrent callers never overshoot the budget;
a malformed batch is rejected uncounted, but an admitted call stays counted even if answering fails
(a remote target may already have seen its inputs).
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from farm.errors import DataError, ShadowfarmError


class QueryBudgetExceeded(ShadowfarmError):
    """A call would take an oracle past its query budget; nothing was spent."""


@runtime_checkable
class LabelOracle(Protocol):
    """A target that answers with labels only.

    `predict_labels(x)`: x float32[B, *shape] (numpy or torch) -> int64[B] predicted labels. Each of the
    B examples counts as one query against `budget` (None = unlimited); a call that would exceed it raises
    `QueryBudgetExceeded` naming the budget and the queries used, before spending anything.
    """

    queries_used: int
    budget: int | None

    def predict_labels(self, x: np.ndarray | torch.Tensor) -> np.ndarray: ...


MAX_LABEL = 2**15 - 1  # responses store labels as int16 (DESIGN §2)


def check_labels(answer, *, n: int, num_classes: int | None = None, source: str = "oracle") -> np.ndarray:
    """An oracle's answer to a batch of `n` inputs as int64[n], or a one-line DataError naming `source`.

    Accepted: n integer labels (any integer dtype, or floats holding whole numbers) in [0, num_classes)
    (in [0, 32767] when num_classes is None). Refused: another count or shape, NaN/inf, fractions,
    non-numeric values, labels out of range. Nothing is cast silently (NaN -> int64 would be garbage).
    """
    where = f"{source}: malformed answer"
    try:
        labels = np.asarray(answer)
    except (ValueError, TypeError):  # ragged nesting and the like
        raise DataError(f"{where}: not an array of {n} labels ({type(answer).__name__})") from None
    if labels.shape != (n,):
        raise DataError(f"{where}: got labels of shape {labels.shape} for a batch of {n}; expected one label per input")
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all():
            raise DataError(f"{where}: NaN or inf among the labels; expected integer class labels")
        if (labels != np.round(labels)).any():
            raise DataError(f"{where}: non-integer labels (e.g. {labels[labels != np.round(labels)][0]:g}); "
                            "expected integer class labels")
    elif labels.dtype.kind not in "iu":
        raise DataError(f"{where}: labels of dtype {labels.dtype}; expected integer class labels")
    hi = MAX_LABEL if num_classes is None else num_classes - 1
    if n and (labels.min() < 0 or labels.max() > hi):
        raise DataError(f"{where}: labels in [{labels.min():g}, {labels.max():g}]; expected labels in [0, {hi}]")
    return labels.astype(np.int64)


class CountingOracle:
    """Query counting and the budget, once, thread-safe. Subclasses implement `_answer`.

    Every answer goes through `check_labels` (num_classes: labels must be in [0, num_classes)).
    """

    def __init__(self, *, budget: int | None = None, input_shape: tuple[int, ...] | None = None,
                 num_classes: int | None = None):
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise ValueError(f"budget: expected None or an integer >= 0, got {budget!r}")
        self.budget = budget
        self.num_classes = num_classes
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self._used, self._lock = 0, threading.Lock()

    @property
    def queries_used(self) -> int:
        return self._used

    @property
    def remaining(self) -> int | None:
        """Queries left in the budget; None when unlimited."""
        return None if self.budget is None else self.budget - self._used

    def reset_count(self) -> None:
        with self._lock:
            self._used = 0

    def predict_labels(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """x float32[B, *shape] -> int64[B] labels; spends B queries."""
        x = torch.as_tensor(x).detach().to(torch.float32)
        if x.ndim < 1 or (self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape):
            raise DataError(f"oracle input: expected [B, *shape] with shape {self.input_shape}, got {tuple(x.shape)}")
        n = int(x.shape[0])
        with self._lock:  # check and reserve together: concurrent calls cannot overshoot
            if self.budget is not None and self._used + n > self.budget:
                raise QueryBudgetExceeded(f"query budget exceeded: this call needs {n} queries but {self._used} "
                                          f"of the budget of {self.budget} are used ({self.remaining} left)")
            self._used += n
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        return check_labels(self._answer(x), n=n, num_classes=self.num_classes,
                            source=getattr(self, "_source", None) or f"oracle {type(self).__name__}")

    def _answer(self, x: torch.Tensor) -> np.ndarray:
        """x float32[B, *shape], B >= 1 -> int64[B]; called after the queries are counted."""
        raise NotImplementedError
