"""Serve one model as a label-only HTTP API (attacks.oracles.protocol): `shadowfarm serve`, and the audit's demos/tests.

Standard library only (`http.server.ThreadingHTTPServer`): one thread per connection, model calls serialized
under a lock (a CPU model uses every core anyway; this keeps answers independent of concurrency).
Loopback (127.0.0.1) by default. Port 0 picks a free port (`LabelServer.url` tells which).

Answered inputs are counted (`inputs_answered`, also GET /stats): a request is counted once its labels are
computed, just before they are sent, so an auditor can check how many queries it spent.

No output-side defense option: the API returns labels only, and every output-side defense (memguard, top1,
round; DESIGN §7) keeps the arg-max, so it would not change a single answer.

Open Inference Protocol ("v2", attacks.oracles.protocol_v2) beside it, for the model named `model_name`:
GET /v2/health/ready (and /live), GET /v2/models/{name} (metadata; /ready), POST /v2/models/{name}/infer
(one FP32/FP64 input -> one INT64 output `label` of shape [B]), also under /versions/1/. Same token, body limit
and counts: a v2 request is answered by the same `answer`, so /stats counts its inputs like the others.

Bearer token: given as a string by the caller (the CLI reads it from an environment variable); compared in
constant time; never logged. Request lines are not logged either.
"""

from __future__ import annotations

import hmac
import json
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from attacks.oracles import protocol, protocol_v2
from attacks.oracles.base import LabelOracle
from farm.errors import DataError


class LabelServer:
    """`oracle` (a LabelOracle; its `input_shape`, when set, is enforced) behind the label-only API.

    max_batch: inputs per request (413 above). on_answer(requests_answered): called after each answered
    request has been sent (tests use it to stop the server mid-audit).
    """

    def __init__(self, oracle: LabelOracle, *, host: str = "127.0.0.1", port: int = 0, path: str = "/predict",
                 token: str | None = None, max_batch: int = 65536, model_name: str = "model",
                 on_answer: Callable[[int], None] | None = None):
        self.oracle, self.path, self.max_batch, self.on_answer = oracle, path, max_batch, on_answer
        self.model_name = model_name
        model = f"/v2/models/{urllib.parse.quote(model_name, safe='')}"
        self.v2_model_paths, self.v2_infer_paths = (model, model + "/versions/1"), (model + "/infer",
                                                                                   model + "/versions/1/infer")
        self.input_shape = getattr(oracle, "input_shape", None)
        features = int(np.prod(self.input_shape)) if self.input_shape is not None else 1 << 16
        self.max_bytes = 1024 + 32 * max_batch * features  # JSON needs up to ~25 bytes per float32
        self._token = token.encode() if token else None
        self.inputs_answered = self.requests_answered = 0
        self._lock, self._model_lock = threading.Lock(), threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), _handler(self))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{self.path}"

    @property
    def v2_url(self) -> str:
        """The model's v2 URL (`HttpOracle(..., protocol="v2")` reads its metadata there, infers at /infer)."""
        return self.url.removesuffix(self.path) + self.v2_model_paths[0]

    def stats(self) -> dict:
        with self._lock:
            return {"inputs_answered": self.inputs_answered, "requests_answered": self.requests_answered,
                    "input_shape": None if self.input_shape is None else list(self.input_shape)}

    def start(self) -> LabelServer:
        """Serve in a background (daemon) thread; returns self."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="label-server")
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Stop serving and close the listening socket (later connections are refused). Any thread may call it."""
        if self._thread is not None:
            self._httpd.shutdown()
        self._httpd.server_close()

    # ------------------------------------------------------------ called by the handler
    def authorized(self, header: str | None) -> bool:
        if self._token is None:
            return True
        given = (header or "").encode()
        return hmac.compare_digest(given, b"Bearer " + self._token)

    def get(self, path: str) -> dict | None:
        """The JSON answer to GET `path`: /stats, v2 metadata, health and readiness; None: unknown path."""
        if path == "/stats":
            return self.stats()
        if path in self.v2_model_paths:
            return protocol_v2.metadata(self.model_name, self.input_shape)
        if path in ("/v2/health/ready", "/v2/health/live", *(p + "/ready" for p in self.v2_model_paths)):
            return {}
        return {"name": "shadowfarm", "extensions": []} if path == "/v2" else None

    def answer(self, x: np.ndarray) -> np.ndarray:
        if len(x) > self.max_batch:
            raise _HttpError(413, f"batch of {len(x)} inputs; at most {self.max_batch} per request")
        if self.input_shape is not None and tuple(x.shape[1:]) != tuple(self.input_shape):
            flat = int(np.prod(self.input_shape))
            if x.ndim == 2 and x.shape[1] == flat:  # flat inputs are accepted
                x = x.reshape(len(x), *self.input_shape)
            else:
                raise _HttpError(400, f"inputs have shape {list(x.shape[1:])}, expected {list(self.input_shape)}")
        if not np.isfinite(x).all():
            raise _HttpError(400, "inputs hold NaN or infinite values")
        with self._model_lock:
            labels = np.asarray(self.oracle.predict_labels(x), dtype=np.int64)
        with self._lock:
            self.inputs_answered += len(x)
            self.requests_answered += 1
        return labels


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _handler(server: LabelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - the base class's signature
            pass  # requests are not logged: an Authorization header must never reach a log

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            self._send(status, json.dumps({"error": message}).encode(), protocol.JSON)

        def do_GET(self):  # noqa: N802 - http.server's naming
            if not server.authorized(self.headers.get("Authorization")):
                return self._error(401, "missing or wrong bearer token")
            answer = server.get(self.path.split("?")[0].rstrip("/"))
            if answer is None:
                return self._error(404, f"unknown path {self.path!r}; GET /stats or {server.v2_model_paths[0]}")
            self._send(200, json.dumps(answer).encode(), protocol.JSON)

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if length > server.max_bytes:
                self.close_connection = True  # the body is not read
                return self._error(413, f"request body of {length} bytes; at most {server.max_bytes}")
            body = self.rfile.read(length) if length > 0 else b""  # read it whatever follows: keep-alive
            if not server.authorized(self.headers.get("Authorization")):
                return self._error(401, "missing or wrong bearer token")
            path = self.path.split("?")[0]
            v2 = path in server.v2_infer_paths
            if path != server.path and not v2:
                return self._error(404, f"unknown path {self.path!r}; POST {server.path} or {server.v2_infer_paths[0]}")
            binary = not v2 and (self.headers.get("Content-Type") or "").split(";")[0].strip() == protocol.BATCH
            decode = protocol.decode_batch if binary else protocol.decode_json_batch
            decode = protocol_v2.decode_request if v2 else decode
            try:
                labels = server.answer(decode(body))
            except DataError as exc:
                return self._error(400, str(exc))
            except _HttpError as exc:
                return self._error(exc.status, str(exc))
            except RuntimeError as exc:  # the model failed: the client may retry a 5xx
                return self._error(500, f"model error: {' '.join(str(exc).split())[:200]}")
            if v2:
                self._send(200, protocol_v2.encode_response(labels, server.model_name), protocol.JSON)
            elif binary:
                self._send(200, protocol.encode_labels(labels), protocol.LABELS)
            else:
                self._send(200, protocol.encode_json_labels(labels), protocol.JSON)
            if server.on_answer is not None:
                server.on_answer(server.requests_answered)

    return Handler
