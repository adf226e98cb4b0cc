"""Model-backed label oracles: a torch module, a run's saved model, or a TorchScript file.

`ModelOracle` answers with the arg-max of a module (in memory, or rebuilt from a run's run.json and
weights), `TorchScriptOracle` with that of a TorchScript file (path or URI); `export_torchscript` traces
a run's model into such a file. All count queries and validate answers through
`attacks.oracles.base.CountingOracle` (the oracle contract and its budget rules are described there).
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
from torch import nn

from attacks.oracles.base import CountingOracle
from farm.data import DatasetInfo
from farm.errors import DataError, RunError
from farm.models import build_model
from farm.runfile import run_config
from farm.shards import RUN_JSON, load_weights, model_dir
from farm.storage import RunDir


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
    saved, cfg = run_config(run)
    try:
        d = saved["dataset"]
        info = DatasetInfo(name=d["name"], kind=d["kind"], shape=tuple(int(s) for s in d["shape"]),
                           num_classes=int(d["num_classes"]))
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


def split_uri(path: str | os.PathLike) -> tuple[RunDir, str]:
    """A file path or URI -> (its folder as a RunDir, its name)."""
    text = os.fspath(path)
    parent, name = text.rsplit("/", 1) if "://" in text else os.path.split(os.path.abspath(text))
    return RunDir(parent), name


class TorchScriptOracle(_ModuleOracle):
    """A TorchScript file (local path or URI) mapping float32[B, *shape] -> scores [B, C]."""

    def __init__(self, path: str | os.PathLike, *, device: str | torch.device = "cpu", budget: int | None = None,
                 batch_size: int = 8192, input_shape: tuple[int, ...] | None = None):
        self.path = os.fspath(path)
        folder, name = split_uri(path)
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
    folder, name = split_uri(path)
    folder.write_bytes(name, buffer.getvalue())
