"""The label-only HTTP API spoken by `shadowfarm serve` (attacks.oracles.server) and `HttpOracle`.

One endpoint answers a batch of B inputs of one example shape with B labels, nothing else:

POST <path> (the URL's path; `shadowfarm serve` answers on /predict), two encodings:
- JSON: `Content-Type: application/json`, body `{"inputs": [[...], ...]}` (B inputs, each nested lists of
  the example shape or flat) -> `{"labels": [int, ...]}`.
- binary: `Content-Type: application/x-shadowfarm-batch`, body `b"SFB1"`, uint32 ndim, uint32 dims[ndim]
  (B first), then float32 values in C order, all little-endian -> `Content-Type:
  application/x-shadowfarm-labels`, body int32 little-endian [B]. About 4 bytes per feature instead of ~10.
GET /stats -> `{"inputs_answered": n, "requests_answered": r, "input_shape": [...] or null}`.
Errors: a 4xx/5xx status with `{"error": "one line"}`. With a token, every request needs
`Authorization: Bearer <token>` (401 otherwise).
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np

from farm.errors import DataError

JSON = "application/json"
BATCH = "application/x-shadowfarm-batch"
LABELS = "application/x-shadowfarm-labels"
MAGIC = b"SFB1"
MAX_NDIM = 8


def encode_batch(x: np.ndarray) -> bytes:
    """float32[B, *shape] -> the binary request body."""
    x = np.ascontiguousarray(x, dtype="<f4")
    return MAGIC + struct.pack(f"<I{x.ndim}I", x.ndim, *x.shape) + x.tobytes()


def decode_batch(body: bytes) -> np.ndarray:
    """The binary request body -> float32[B, *shape]; DataError when malformed."""
    if len(body) < 8 or body[:4] != MAGIC:
        raise DataError(f"binary batch: expected the {MAGIC.decode()} header")
    (ndim,) = struct.unpack_from("<I", body, 4)
    if not 1 <= ndim <= MAX_NDIM or len(body) < 8 + 4 * ndim:
        raise DataError(f"binary batch: ndim {ndim} not in [1, {MAX_NDIM}] or header cut short")
    shape = struct.unpack_from(f"<{ndim}I", body, 8)
    data = body[8 + 4 * ndim:]
    needed = 4 * math.prod(shape)  # Python ints: dims of 65536^4 do not overflow to 0
    if len(data) != needed:
        raise DataError(f"binary batch: shape {list(shape)} needs {needed:,} bytes, got {len(data):,}")
    return np.frombuffer(data, dtype="<f4").reshape(shape).astype(np.float32)


def encode_labels(labels: np.ndarray) -> bytes:
    return np.ascontiguousarray(labels, dtype="<i4").tobytes()


def decode_labels(body: bytes, n: int) -> np.ndarray:
    """The binary response body -> int64[n]; DataError when it does not hold exactly n labels."""
    if len(body) != 4 * n:
        raise DataError(f"expected {n} int32 labels ({4 * n} bytes), got {len(body)} bytes")
    return np.frombuffer(body, dtype="<i4").astype(np.int64)


def encode_json_batch(x: np.ndarray) -> bytes:
    return json.dumps({"inputs": np.asarray(x, dtype=np.float32).tolist()}).encode()


def decode_json_batch(body: bytes) -> np.ndarray:
    """A JSON request body -> float32[B, ...]; DataError when malformed (ragged, non-numeric, no "inputs")."""
    try:
        inputs = json.loads(body)["inputs"]
        x = np.asarray(inputs)  # as JSON typed them: a string or a boolean is refused, never converted
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise DataError(f'JSON batch: expected {{"inputs": [[...], ...]}} of numbers ({_short(exc)})') from None
    if x.ndim < 1 or not isinstance(inputs, list):
        raise DataError('JSON batch: "inputs" must be a list of inputs')
    if x.dtype.kind not in "iuf" or b"true" in body or b"false" in body:
        raise DataError(f'JSON batch: "inputs" must hold numbers only, got {x.dtype.name} values or booleans')
    return x.astype(np.float32)


def encode_json_labels(labels: np.ndarray) -> bytes:
    return json.dumps({"labels": [int(v) for v in labels]}).encode()


def decode_json_labels(body: bytes, n: int) -> np.ndarray:
    """A JSON response body -> int64[n]; DataError unless it is {"labels": [n integers]}."""
    try:
        labels = json.loads(body)["labels"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f'expected {{"labels": [...]}} ({_short(exc)})') from None
    if not isinstance(labels, list) or len(labels) != n or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise DataError(f'expected "labels": a list of {n} integers, got {_short(labels)}')
    return np.asarray(labels, dtype=np.int64)


def _short(value) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 80 else text[:77] + "..."
