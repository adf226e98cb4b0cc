"""What `shadowfarm serve` answers, whichever HTTP engine runs it: routes, token, limits, decoding, validation.

Both engines, the stdlib one (attacks.oracles.server) and the Ray Serve one (attacks.oracles.serve_app), hand
the request's path, headers and body to one `LabelApi` and send the `Reply` it gives, so their answers, limits
and error messages cannot drift apart. Only the model call and the counting of answered inputs are the
engine's own. No I/O here.

Order of checks on POST, from the headers before any byte of the body is read (`before_body`): bearer token
(401), path (404), Content-Length (400 when it is not a number, 413 over `max_bytes`); then from the body: a JSON
body's depth (400) and number of values (413) on its bytes before it is parsed (`json_bounds`), decoding (400,
attacks.oracles.protocol / protocol_v2), then the inputs: more than `max_batch` (413),
a shape other than the model's `input_shape` (flat inputs of the same size are reshaped) or non-finite
values (400). Only inputs that pass all of them reach the model, so only they are counted.
"""

from __future__ import annotations

import hmac
import json
import math
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from attacks.oracles import protocol, protocol_v2
from farm.errors import DataError, shown


class HttpError(Exception):
    """A request refused with `status` (4xx) or failed (5xx); its message is the one-line error sent back."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, body, content type (401 also sends `WWW-Authenticate: Bearer`)."""

    status: int
    body: bytes
    content_type: str = protocol.JSON

    @classmethod
    def error(cls, status: int, message: str) -> Reply:
        return cls(status, json.dumps({"error": message}).encode())

    @property
    def headers(self) -> dict[str, str]:
        extra = {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}
        return {"Content-Type": self.content_type, "Content-Length": str(len(self.body)), **extra}


@dataclass(frozen=True)
class Inputs:
    """A decoded, validated request: its inputs float32[B, *shape] and how to encode the answer."""

    x: np.ndarray
    kind: str  # "json", "binary" (our format) or "v2"


MAX_JSON_DEPTH = 32  # a batch of images in v2 is 6 deep; json.loads recurses once per level


BODY_SECONDS = 30.0  # a body must arrive within this plus a second per MiB (both engines)


def body_deadline(length: int) -> float:
    """Seconds a body of `length` bytes may take to arrive: BODY_SECONDS plus a second per MiB."""
    return BODY_SECONDS + length / (1 << 20)


def content_length_of(header: str | None) -> int | None:
    """A Content-Length header's bytes (absent: 0); None when it is not one non-negative decimal number."""
    if header is None:
        return 0
    text = header.strip()
    return int(text) if text.isascii() and text.isdecimal() and len(text) <= 18 else None


def json_bounds(body: bytes, *, max_values: int) -> None:
    """HttpError unless the JSON `body` nests at most MAX_JSON_DEPTH deep (400) and holds at most `max_values`
    values (413, counted by their separators), checked on the bytes in chunks, before anything is parsed."""
    data = np.frombuffer(body, dtype=np.uint8)
    if np.count_nonzero(data == ord(",")) + 1 > max_values:
        raise HttpError(413, f"request of more than {max_values:,} values; at most that many per request")
    depth, deepest = 0, 0
    for start in range(0, len(data), 1 << 20):
        chunk = data[start:start + (1 << 20)]
        steps = (np.isin(chunk, (ord("["), ord("{")))).astype(np.int32) - np.isin(chunk, (ord("]"), ord("}")))
        if len(steps):
            levels = depth + np.cumsum(steps)
            deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
        if deepest > MAX_JSON_DEPTH:
            raise HttpError(400, f"JSON nested more than {MAX_JSON_DEPTH} levels deep")


class LabelApi:
    """The label-only API of one model whose example shape is `input_shape` (None: any shape is accepted)."""

    def __init__(self, input_shape: tuple[int, ...] | None, *, path: str = "/predict", token: str | None = None,
                 max_batch: int = 65536, model_name: str = "model"):
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.path, self.max_batch, self.model_name = path, max_batch, model_name
        model = f"/v2/models/{urllib.parse.quote(model_name, safe='')}"
        self.v2_model_paths = (model, model + "/versions/1")
        self.v2_infer_paths = (model + "/infer", model + "/versions/1/infer")
        self.features = math.prod(self.input_shape) if self.input_shape is not None else 1 << 16
        self.max_bytes = 1024 + 32 * max_batch * self.features  # JSON needs up to ~25 bytes per float32
        self._token = token.encode() if token else None

    def authorized(self, header: str | None) -> bool:
        if self._token is None:
            return True
        return hmac.compare_digest((header or "").encode(), b"Bearer " + self._token)

    def get(self, path: str, authorization: str | None, stats: Callable[[], dict]) -> Reply:
        """GET `path` (query dropped): /stats (from `stats()`), v2 metadata, health and readiness."""
        if not self.authorized(authorization):
            return Reply.error(401, "missing or wrong bearer token")
        path = path.split("?")[0].rstrip("/")
        if path == "/stats":
            answer = stats()
        elif path in self.v2_model_paths:
            answer = protocol_v2.metadata(self.model_name, self.input_shape)
        elif path in ("/v2/health/ready", "/v2/health/live", *(p + "/ready" for p in self.v2_model_paths)):
            answer = {}
        elif path == "/v2":
            answer = {"name": "shadowfarm", "extensions": []}
        else:
            return Reply.error(404, f"unknown path {path!r}; GET /stats or {self.v2_model_paths[0]}")
        return Reply(200, json.dumps(answer).encode())

    def before_body(self, path: str, authorization: str | None, content_length: str | None) -> Reply | None:
        """The refusal of a POST from its request line and headers alone, before any byte of its body is read:
        a wrong token (401: no body is read without a valid one), an unknown path (404), a Content-Length that is
        not a number of bytes (400) or over the limit (413). None when the body may be read."""
        if not self.authorized(authorization):
            return Reply.error(401, "missing or wrong bearer token")
        route = path.split("?")[0]
        if route != self.path and route not in self.v2_infer_paths:
            return Reply.error(404, f"unknown path {shown(route, 100)}; POST {self.path} or {self.v2_infer_paths[0]}")
        length = content_length_of(content_length)
        if length is None:
            return Reply.error(400, f"Content-Length: expected a number of bytes, got {shown(content_length, 40)}")
        return self.too_large(length)

    def too_large(self, length: int) -> Reply | None:
        """The 413 for a POST body of `length` bytes over the limit (checked before the body is read), else None."""
        if length > self.max_bytes:
            return Reply.error(413, f"request body of {length} bytes; at most {self.max_bytes}")
        return None

    def parse(self, path: str, authorization: str | None, content_type: str | None, body: bytes) -> Inputs | Reply:
        """A POST's validated inputs, or the error Reply (401, 404, 400, 413) that refuses it."""
        if not self.authorized(authorization):
            return Reply.error(401, "missing or wrong bearer token")
        path = path.split("?")[0]
        v2 = path in self.v2_infer_paths
        if path != self.path and not v2:
            return Reply.error(404, f"unknown path {path!r}; POST {self.path} or {self.v2_infer_paths[0]}")
        binary = not v2 and (content_type or "").split(";")[0].strip() == protocol.BATCH
        decode = protocol_v2.decode_request if v2 else protocol.decode_batch if binary else protocol.decode_json_batch
        try:
            if not binary:  # before json.loads: its depth (recursion) and its values (memory) are bounded
                json_bounds(body, max_values=self.max_batch * self.features + 64)  # + a v2 envelope
            return Inputs(self.check(decode(body)), "v2" if v2 else "binary" if binary else "json")
        except DataError as exc:
            return Reply.error(400, str(exc))
        except HttpError as exc:
            return Reply.error(exc.status, str(exc))

    def check(self, x: np.ndarray) -> np.ndarray:
        """Inputs the model may answer (flat ones reshaped to `input_shape`); HttpError 413/400 otherwise."""
        if len(x) > self.max_batch:
            raise HttpError(413, f"batch of {len(x)} inputs; at most {self.max_batch} per request")
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            if x.ndim == 2 and x.shape[1] == int(np.prod(self.input_shape)):  # flat inputs are accepted
                x = x.reshape(len(x), *self.input_shape)
            else:
                raise HttpError(400, f"inputs have shape {list(x.shape[1:])}, expected {list(self.input_shape)}")
        if not np.isfinite(x).all():
            raise HttpError(400, "inputs hold NaN or infinite values")
        return x

    def reply(self, inputs: Inputs, labels: np.ndarray) -> Reply:
        """The 200 answer carrying `labels` in the request's format."""
        if inputs.kind == "v2":
            return Reply(200, protocol_v2.encode_response(labels, self.model_name))
        if inputs.kind == "binary":
            return Reply(200, protocol.encode_labels(labels), protocol.LABELS)
        return Reply(200, protocol.encode_json_labels(labels))

    @staticmethod
    def model_failed(exc: Exception) -> Reply:
        """The 500 for a model that raised (the client may retry a 5xx)."""
        return Reply.error(500, f"model error: {' '.join(str(exc).split())[:200]}")
