"""An ONNX model file as a label oracle (DESIGN §5): scikit-learn, XGBoost/LightGBM, TensorFlow/Keras and PyTorch
models exported to ONNX, run by onnxruntime (its CUDA provider when present, else the CPU), in batches.

The file is checked when opened: it must parse as an ONNX model with exactly one input, of element type float
(or double: the run's float32 values are cast up, exactly) and of the run's example shape, the same dims or one
flat dim of their product, a symbolic or unknown dim matching any (the batch dim always). A mismatch is one line
naming the file's input and the run's. The answer read is the model's first output: labels (an integer tensor
[B] or [B, 1]) are used as they are; scores (a float tensor [B, C]) are reduced to their arg-max here, and
nothing else of them is kept, so the attack stays label-only. Queries are counted and answers validated by
`attacks.oracles.base.CountingOracle`. `identity()` (the file's SHA-256, its input and output) keys its journal
(`attacks.oracles.journal.open_journal`): a changed file at the same path gets a journal of its own.

onnxruntime is an optional dependency (the `onnx` extra); a missing one is a one-line error naming the extra.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings

import numpy as np
import torch

from attacks.oracles.base import CountingOracle
from attacks.oracles.model import _load_run_model, split_uri
from farm.errors import ConfigError, DataError

INPUT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}
SCORE_TYPES = ("tensor(float)", "tensor(double)", "tensor(float16)")
LABEL_TYPES = tuple(f"tensor({t})" for t in ("int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8"))


def _runtime():
    try:
        import onnxruntime
        from onnxruntime.capi import onnxruntime_pybind11_state as state
    except ImportError:
        raise ConfigError("--target *.onnx: onnxruntime is not installed; pip install 'shadowfarm[onnx]'") from None
    errors = tuple(v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception))
    return onnxruntime, errors


def _dims(shape) -> list:
    """An onnxruntime shape ([None, 'batch', 8, 8]) as dims: ints, None where symbolic or unknown."""
    return [d if isinstance(d, int) and d >= 0 else None for d in shape]


def check_input(path: str, inputs: list, input_shape: tuple[int, ...] | None) -> tuple[str, type, tuple | None]:
    """(name, numpy dtype, example dims to send) of a model's one input `inputs` (onnxruntime NodeArgs), checked
    against the run's example shape (None: unchecked, inputs sent as given); DataError (one line naming both) when
    they disagree."""
    if len(inputs) != 1:
        raise DataError(f"{path}: the ONNX model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                        "expected exactly one, the example")
    (spec,) = inputs
    declared = _dims(spec.shape)
    shown = f"input {spec.name!r} {spec.type} {['?' if d is None else d for d in declared]}"
    run = "the run's inputs are float32 [B, " + ", ".join(map(str, input_shape or ())) + "]"
    if spec.type not in INPUT_TYPES:
        raise DataError(f"{path}: the ONNX model's {shown} is not float; {run}")
    if input_shape is None:
        return spec.name, INPUT_TYPES[spec.type], None
    dims = declared[1:]
    for wanted in (tuple(input_shape), (int(np.prod(input_shape)),)):
        if declared and len(dims) == len(wanted) and all(d in (None, w) for d, w in zip(dims, wanted, strict=True)):
            return spec.name, INPUT_TYPES[spec.type], wanted
    raise DataError(f"{path}: the ONNX model's {shown} does not fit: {run}")


def check_output(path: str, outputs: list) -> str:
    """The name of a model's first output, which must be labels (integer) or scores (float)."""
    if not outputs or outputs[0].type not in LABEL_TYPES + SCORE_TYPES:
        what = f"{outputs[0].name!r} is {outputs[0].type}" if outputs else "none"
        raise DataError(f"{path}: the ONNX model's first output {what}; expected labels (an integer tensor) or "
                        "scores (a float tensor [B, C])")
    return outputs[0].name


def labels_of(out: np.ndarray, n: int, source: str) -> np.ndarray:
    """An output for n inputs -> labels int64[n]: integer [n] or [n, 1] as they are, float [n, C] their arg-max."""
    out = np.asarray(out)
    if out.dtype.kind in "iu" and out.shape in ((n,), (n, 1)):
        return out.reshape(n).astype(np.int64)
    if out.dtype.kind == "f" and out.ndim == 2 and out.shape[0] == n and out.shape[1] >= 1:
        return out.argmax(axis=1).astype(np.int64)  # scores: only the arg-max leaves this function
    raise DataError(f"{source}: output of dtype {out.dtype} and shape {list(out.shape)} for {n} inputs; expected "
                    f"labels [{n}] or scores [{n}, C]")


class OnnxOracle(CountingOracle):
    """An ONNX file (local path or URI) mapping float[B, *shape] -> labels or scores, as a label oracle."""

    def __init__(self, path: str | os.PathLike, *, budget: int | None = None, batch_size: int = 8192,
                 input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
                 providers: list[str] | None = None):
        onnxruntime, errors = _runtime()
        self.path, self._errors = os.fspath(path), errors
        folder, name = split_uri(path)
        if not folder.is_file(name):
            raise DataError(f"{self.path}: file not found (ONNX target)")
        data = folder.read_bytes(name)
        self.sha256 = hashlib.sha256(data).hexdigest()
        available = onnxruntime.get_available_providers()
        self.providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self._session = onnxruntime.InferenceSession(data, providers=self.providers)
        except errors as exc:
            raise DataError(f"{self.path}: not an ONNX model ({' '.join(str(exc).split())[:120]})") from None
        self._input, self._dtype, self._dims = check_input(self.path, self._session.get_inputs(), input_shape)
        self._output = check_output(self.path, self._session.get_outputs())
        if batch_size < 1:
            raise ValueError(f"batch_size: expected at least 1, got {batch_size}")
        super().__init__(budget=budget, input_shape=input_shape, num_classes=num_classes)
        self._batch_size, self._source = batch_size, self.path

    def identity(self) -> dict:
        """What identifies the model: the file's SHA-256, its input and its output (keys its journal)."""
        return {"format": "onnx", "sha256": self.sha256, "input": self._input, "output": self._output}

    def _answer(self, x: torch.Tensor) -> np.ndarray:
        labels = []
        for chunk in torch.split(x, self._batch_size):
            feed = chunk.numpy().reshape(len(chunk), *(self._dims or chunk.shape[1:])).astype(self._dtype)
            try:
                (out,) = self._session.run([self._output], {self._input: feed})
            except self._errors as exc:
                raise DataError(f"{self.path}: the ONNX model failed on a batch of {len(chunk)} "
                                f"({' '.join(str(exc).split())[:160]})") from None
            labels.append(labels_of(out, len(chunk), self.path))
        return np.concatenate(labels)


def export_onnx(run, model_id: int, path: str | os.PathLike) -> None:
    """Model `model_id` of a run as an ONNX file at `path` (atomic write; path or URI): input `input`
    float32[batch, *shape], output `scores` float32[batch, C]. torch.onnx's TorchScript-based exporter
    (dynamo=False: it needs only the `onnx` package)."""
    model, info = _load_run_model(run, model_id)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, *info.shape),), buffer, dynamo=False, input_names=["input"],
                          output_names=["scores"], dynamic_axes={"input": {0: "batch"}, "scores": {0: "batch"}})
    folder, name = split_uri(path)
    folder.write_bytes(name, buffer.getvalue())
