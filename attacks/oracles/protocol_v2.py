"""The Open Inference Protocol ("v2" REST API of KServe, Triton, MLServer, Seldon): pure encode/decode.

Used by `HttpOracle` with `protocol="v2"` and by `shadowfarm serve` (attacks.oracles.server), which answers it
beside its own format. JSON only (no binary tensor extension):

- GET <base>/v2/health/ready -> 200 when ready.
- GET <base>/v2/models/{name} -> metadata `{"name", "versions", "platform", "inputs": [{"name", "datatype",
  "shape"}], "outputs": [...]}`, -1 marking a variable dimension (the batch).
- POST <base>/v2/models/{name}/infer, body `{"inputs": [{"name", "shape": [B, ...], "datatype": "FP32",
  "data": [...flat or nested...]}]}` -> `{"model_name", "outputs": [{"name", "shape", "datatype", "data"}]}`.

The client reads one output: the one named by `output_name`, else the first. Labels (an integer datatype,
shape [B] or [B, 1]) are used as they are; scores (FP16/FP32/FP64, shape [B, C]) are reduced to their arg-max
right here and nothing else of them is kept or written, so the attack stays label-only.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from dataclasses import dataclass

import numpy as np

from farm.errors import DataError

INT_TYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
FLOAT_TYPES = ("FP16", "FP32", "FP64")
INPUT_TYPES = ("FP32", "FP64")  # FP64 inputs get the float32 values cast up
LABEL_OUTPUT = "label"
DEFAULT_INPUT = "input-0"  # the name sent when metadata declares no inputs (MLServer's own examples use it)


@dataclass(frozen=True)
class InputSpec:
    """The model's input as its metadata declares it: name, datatype, shape after the batch dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def model_urls(url: str) -> tuple[str, str, str]:
    """(metadata URL, infer URL, model name) of a target URL `http://HOST:PORT[/prefix]/v2/models/NAME[/versions/V]`
    (a trailing /infer is dropped); DataError when the path names no model."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.rstrip("/").removesuffix("/infer")
    head, sep, tail = path.partition("/v2/models/")
    name = tail.split("/")[0]
    if not sep or not name:
        raise DataError(f"--target {url}: with --protocol v2 expected http://HOST:PORT/v2/models/NAME "
                        "(or the server's URL with --model-name NAME)")
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return base, base + "/infer", urllib.parse.unquote(name)


def input_spec(meta: dict, model: str, input_shape: tuple[int, ...] | None, input_name: str | None = None) -> InputSpec:
    """The input of model metadata `meta` named `input_name` (default: the first), checked against the run's example
    shape `input_shape` (the same dims, or one flat dim of their product; -1 matches any); DataError (one line) when
    they disagree. Metadata that declares no inputs (`[]` or none: MLServer's scikit-learn runtime unless its
    settings list them) gets `input_shape` as FP32, named `input_name` or DEFAULT_INPUT."""
    declared = meta.get("inputs") if isinstance(meta, dict) else None
    if not declared and isinstance(meta, dict) and input_shape is not None:
        return InputSpec(input_name or DEFAULT_INPUT, "FP32", tuple(input_shape))
    try:
        spec = next(s for s in declared if input_name is None or s["name"] == input_name) if declared else None
        name, datatype, shape = str(spec["name"]), str(spec["datatype"]), [int(d) for d in spec["shape"]]
    except StopIteration:
        names = [s.get("name") for s in declared if isinstance(s, dict)]
        raise DataError(f"model {model!r}: no input named {input_name!r} (inputs: {names})") from None
    except (KeyError, IndexError, TypeError, ValueError):
        raise DataError(f"model {model!r}: metadata without inputs [{{name, datatype, shape}}]") from None
    if datatype not in INPUT_TYPES:
        raise DataError(f"model {model!r}: input {name!r} has datatype {datatype}; expected FP32 (or FP64)")
    dims = tuple(shape[1:])
    if input_shape is not None:
        wanted = [tuple(input_shape), (int(np.prod(input_shape)),)]
        if not shape or not any(len(dims) == len(w) and all(d in (-1, e) for d, e in zip(dims, w, strict=True))
                                for w in wanted):
            raise DataError(f"model {model!r}: input {name!r} has shape {shape}, but the run's inputs have shape "
                            f"[B, {', '.join(map(str, input_shape))}]")
        dims = wanted[0] if len(dims) == len(input_shape) else wanted[1]
    return InputSpec(name, datatype, dims)


def request_shape(x: np.ndarray, spec: InputSpec) -> list[int]:
    """The shape a request for `x` declares: [B, *spec.shape] (the run's shape where the model's is variable)."""
    return [len(x), *spec.shape] if -1 not in spec.shape else [len(x), *x.shape[1:]]


def encode_request(x: np.ndarray, spec: InputSpec) -> bytes:
    """float32[B, *shape] -> an infer request body for `spec` (flat data, shape [B, *spec.shape])."""
    shape = request_shape(x, spec)
    return json.dumps({"inputs": [{"name": spec.name, "shape": shape, "datatype": spec.datatype,
                                   "data": np.asarray(x, dtype=np.float32).ravel().tolist()}]}).encode()


def _tensor(entry: dict, what: str) -> tuple[str, np.ndarray]:
    try:
        datatype, shape = str(entry["datatype"]), [int(d) for d in entry["shape"]]
        data = np.asarray(entry["data"])
        if data.size != math.prod(shape) or data.dtype.kind not in "iuf" or min(shape, default=0) < 0:
            raise ValueError
        return datatype, data.reshape(shape)
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{what}: expected {{name, shape, datatype, data}} with numbers matching the shape") from None


def decode_response(payload: bytes, n: int, output_name: str | None = None) -> np.ndarray:
    """An infer response -> labels int64[n] (scores: their arg-max); DataError when malformed."""
    try:
        outputs = json.loads(payload)["outputs"]
    except (ValueError, KeyError, TypeError):
        raise DataError("expected JSON {\"outputs\": [{name, shape, datatype, data}, ...]}") from None
    return decode_outputs(outputs, n, output_name)


def decode_outputs(outputs: list, n: int, output_name: str | None = None) -> np.ndarray:
    """The outputs [{name, shape, datatype, data}] of an infer response (REST's JSON, or gRPC's as dicts) ->
    labels int64[n] (scores: their arg-max); DataError when malformed."""
    try:
        entry = next(o for o in outputs if output_name is None or o.get("name") == output_name)
    except (TypeError, AttributeError):
        raise DataError("expected outputs [{name, shape, datatype, data}, ...]") from None
    except StopIteration:
        names = [o.get("name") for o in outputs if isinstance(o, dict)]
        raise DataError(f"no output named {output_name!r} (outputs: {names})") from None
    what = f"output {entry.get('name')!r}"
    datatype, data = _tensor(entry, what)
    if datatype in INT_TYPES and (data.ndim == 1 or (data.ndim == 2 and data.shape[1] == 1)):
        if data.dtype.kind == "f" and not np.all(data == np.round(data)):
            raise DataError(f"{what}: {datatype} labels that are not integers")
        labels = data.reshape(-1).astype(np.int64)
    elif datatype in FLOAT_TYPES and data.ndim == 2 and data.shape[1] >= 1:
        labels = data.argmax(axis=1).astype(np.int64)  # scores: only the arg-max leaves this function
    else:
        raise DataError(f"{what}: expected labels ({'/'.join(INT_TYPES[:4])}, shape [B] or [B, 1]) or scores "
                        f"(FP32/FP64/FP16, shape [B, C]); got {datatype} of shape {list(data.shape)}")
    if len(labels) != n:
        raise DataError(f"{what}: {len(labels)} answers for {n} inputs")
    return labels


# ---------------------------------------------------------------- server side
def metadata(name: str, input_shape: tuple[int, ...] | None) -> dict:
    """Model metadata of a label server for `name` (unknown example shape: one variable flat dim)."""
    dims = [-1, *input_shape] if input_shape is not None else [-1, -1]
    return {"name": name, "versions": ["1"], "platform": "shadowfarm",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": dims}],
            "outputs": [{"name": LABEL_OUTPUT, "datatype": "INT64", "shape": [-1]}]}


def decode_request(body: bytes) -> np.ndarray:
    """An infer request body (one FP32/FP64 input, data flat or nested) -> float32[*shape]; DataError if malformed."""
    try:
        inputs = json.loads(body)["inputs"]
        if not isinstance(inputs, list) or len(inputs) != 1:
            raise DataError(f"expected exactly one input, got {len(inputs) if isinstance(inputs, list) else inputs!r}")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise DataError(str(exc) if isinstance(exc, DataError) else
                        "expected JSON {\"inputs\": [{name, shape, datatype, data}]}") from None
    datatype, x = _tensor(inputs[0], "input")
    if datatype not in INPUT_TYPES or x.ndim < 1:
        raise DataError(f"input: expected datatype FP32 or FP64 and shape [B, ...], got {datatype} {list(x.shape)}")
    return x.astype(np.float32)


def encode_response(labels: np.ndarray, name: str) -> bytes:
    """Labels int64[B] -> an infer response with one INT64 output `label` of shape [B]."""
    labels = np.asarray(labels, dtype=np.int64)
    return json.dumps({"model_name": name, "model_version": "1", "outputs": [
        {"name": LABEL_OUTPUT, "shape": [len(labels)], "datatype": "INT64", "data": labels.tolist()}]}).encode()
