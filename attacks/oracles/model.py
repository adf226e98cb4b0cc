"""Targets are label oracles (DESIGN §5): inputs in, predicted labels out, every query counted.

The attack stage never sees a target's logits: oracles answer `predict_labels(x)` with int64[B] labels
for a batch float32[B, *shape] and nothing else (the confidence baselines read logits from the shards).

Counting: every example of a batch is one query. A call that would take `queries_used` past
`budget` raises `QueryBudgetExceeded` before anything is spent or answered (no partial answers).
Queries are reserved under a lock before answering, so concurrent callers never overshoot the budget;
a malformed batch is rejected uncounted, but an admitted call stays counted even if answering fails
(a remote target may already have seen its inputs).
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from farm.config import from_dict
from farm.data import DatasetInfo
from farm.errors import DataError, RunError, ShadowfarmError
from farm.models import build_model
from farm.shards import RUN_JSON, load_weights, model_dir
from farm.storage import RunDir


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


class _ModuleOracle(CountingOracle):
    """Arg-max of a module's outputs float[B, C], in eval mode, no gradients, chunks of `batch_size`."""

    def __init__(self, module, *, device: str | torch.device, budget: int | None, batch_size: int,
                 input_shape: tuple[int, ...] | None, source: str):
        super().__init__(budget=budget, input_shape=input_shape)
        if batch_size < 1:
            raise ValueError(f"batch_size: expected at least 1, got {batch_size}")
        self._device, self._batch_size, self._source = torch.device(device), batch_size, source
        self._module = module.to(self._device).eval()

    def _answer(self, x: torch.Tensor) -> np.ndarray:
        labels = []
        with torch.no_grad():
            for chunk in torch.split(x, self._batch_size):
                out = self._module(chunk.to(self._device))
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                if not isinstance(shape, tuple) or len(shape) != 2 or shape[0] != len(chunk):
                    raise DataError(f"{self._source}: outputs must be [{len(chunk)}, C], got {shape}")
                labels.append(out.argmax(dim=1).cpu())
        return torch.cat(labels).numpy().astype(np.int64)


class ModelOracle(_ModuleOracle):
    """A torch module (in memory, or model `model_id` of a run) as a label oracle; moved to `device`, eval mode."""

    def __init__(self, model: nn.Module, *, device: str | torch.device = "cpu", budget: int | None = None,
                 batch_size: int = 8192, input_shape: tuple[int, ...] | None = None):
        super().__init__(model, device=device, budget=budget, batch_size=batch_size, input_shape=input_shape,
                         source="model")

    @classmethod
    def from_run(cls, run: RunDir | str, model_id: int, *, device: str | torch.device = "cpu",
                 budget: int | None = None, batch_size: int = 8192) -> ModelOracle:
        """Model `model_id` of a run, rebuilt from run.json (config + dataset) and its weights.pt."""
        model, info = _load_run_model(run, model_id)
        return cls(model, device=device, budget=budget, batch_size=batch_size, input_shape=info.shape)


def _load_run_model(run: RunDir | str, model_id: int) -> tuple[nn.Module, DatasetInfo]:
    """Rebuild a run's model from run.json and load its weights. The DatasetInfo is built from
    run.json's "dataset" (what the model builder needs: kind, shape, num_classes), loading no data."""
    run = RunDir(run) if isinstance(run, str) else run
    if not run.is_file(RUN_JSON):
        raise RunError(f"{run.path(RUN_JSON)}: not found; is {run.uri!r} a shadowfarm run?")
    try:
        d = (saved := run.read_json(RUN_JSON))["dataset"]
        info = DatasetInfo(name=d["name"], kind=d["kind"], shape=tuple(int(s) for s in d["shape"]),
                           num_classes=int(d["num_classes"]))
        cfg = from_dict(saved["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{run.path(RUN_JSON)}: missing or malformed 'config'/'dataset' ({exc!r})") from None
    rel = f"{model_dir(model_id)}/weights.pt"
    if not run.is_file(rel):
        raise RunError(f"{run.path(rel)}: not found (model {model_id} not trained yet?)")
    model = build_model(cfg.model, info=info)
    try:
        model.load_state_dict(load_weights(run, model_id))
    except (RuntimeError, KeyError) as exc:
        raise RunError(f"{run.path(rel)}: does not fit the run's model ({str(exc).splitlines()[0]})") from None
    return model.eval(), info


def _split(path: str | os.PathLike) -> tuple[RunDir, str]:
    """A file path or URI -> (its folder as a RunDir, its name)."""
    text = os.fspath(path)
    parent, name = text.rsplit("/", 1) if "://" in text else os.path.split(os.path.abspath(text))
    return RunDir(parent), name


class TorchScriptOracle(_ModuleOracle):
    """A TorchScript file (local path or URI) mapping float32[B, *shape] -> scores [B, C]."""

    def __init__(self, path: str | os.PathLike, *, device: str | torch.device = "cpu", budget: int | None = None,
                 batch_size: int = 8192, input_shape: tuple[int, ...] | None = None):
        self.path = os.fspath(path)
        folder, name = _split(path)
        if not folder.is_file(name):
            raise DataError(f"{self.path}: file not found (TorchScript target)")
        try:
            with warnings.catch_warnings():  # torch.jit is deprecated upstream but still the format users ship
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(io.BytesIO(folder.read_bytes(name)), map_location=torch.device(device))
        except (RuntimeError, ValueError) as exc:
            raise DataError(f"{self.path}: not a TorchScript file ({' '.join(str(exc).split())[:120]})") from None
        super().__init__(module, device=device, budget=budget, batch_size=batch_size,
                         input_shape=input_shape, source=self.path)


def export_torchscript(run: RunDir | str, model_id: int, path: str | os.PathLike) -> None:
    """Trace model `model_id` of a run into a TorchScript file at `path` (atomic write; path or URI).

    Traced (not scripted) with an example batch float32[2, *shape] of the dataset's shape: every
    registry model is a static graph, and tracing also works for user models TorchScript cannot compile.
    """
    model, info = _load_run_model(run, model_id)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(model, torch.zeros(2, *info.shape)), buffer)
    folder, name = _split(path)
    folder.write_bytes(name, buffer.getvalue())
