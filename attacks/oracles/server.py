"""Serve one model as a label-only HTTP API (attacks.oracles.protocol): the stdlib engine of `shadowfarm serve`,
and the server embedded in the audit's smoke test and tests.

Standard library only (`http.server.ThreadingHTTPServer`): one thread per connection, model calls serialized
under a lock (a CPU model uses every core anyway; this keeps answers independent of concurrency).
Loopback (127.0.0.1) by default. Port 0 picks a free port (`LabelServer.url` tells which). The Ray Serve
engine (attacks.oracles.serve_app) answers the same API with replicas and batching; what both answer (routes,
token, body and batch limits, decoding, validation, error messages) is one `LabelApi` (attacks.oracles.label_api).

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

import threading
from collections.abc import Callable

import numpy as np

from attacks.oracles.base import LabelOracle
from attacks.oracles.label_api import BODY_SECONDS, LabelApi
from attacks.oracles.server_http import LabelHandler, LabelHTTPServer


class LabelServer:
    """`oracle` (a LabelOracle; its `input_shape`, when set, is enforced) behind the label-only API.

    max_batch: inputs per request (413 above). on_answer(requests_answered): called after each answered
    request has been sent (tests use it to stop the server mid-audit). Timeouts: a request's line and headers
    must arrive within `header_seconds` of its first byte and its body within `body_seconds` (plus 1 s per MiB),
    else 408 and the connection is closed; a connection idle for `idle_seconds` is closed.
    """

    def __init__(self, oracle: LabelOracle, *, host: str = "127.0.0.1", port: int = 0, path: str = "/predict",
                 token: str | None = None, max_batch: int = 65536, model_name: str = "model",
                 on_answer: Callable[[int], None] | None = None, header_seconds: float = 10.0,
                 body_seconds: float = BODY_SECONDS, idle_seconds: float = 120.0):
        self.oracle, self.on_answer = oracle, on_answer
        self.header_seconds, self.body_seconds, self.idle_seconds = header_seconds, body_seconds, idle_seconds
        self.api = LabelApi(getattr(oracle, "input_shape", None), path=path, token=token, max_batch=max_batch,
                            model_name=model_name)
        self.inputs_answered = self.requests_answered = 0
        self._lock, self._model_lock = threading.Lock(), threading.Lock()
        self._httpd = LabelHTTPServer((host, port), LabelHandler)
        self._httpd.label_server = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{self.api.path}"

    @property
    def v2_url(self) -> str:
        """The model's v2 URL (`HttpOracle(..., protocol="v2")` reads its metadata there, infers at /infer)."""
        return self.url.removesuffix(self.api.path) + self.api.v2_model_paths[0]

    def stats(self) -> dict:
        with self._lock:
            return {"inputs_answered": self.inputs_answered, "requests_answered": self.requests_answered,
                    "input_shape": None if self.api.input_shape is None else list(self.api.input_shape)}

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

    def answer(self, x: np.ndarray) -> np.ndarray:
        """Labels of validated inputs (LabelApi.check), counted."""
        with self._model_lock:
            labels = np.asarray(self.oracle.predict_labels(x), dtype=np.int64)
        with self._lock:
            self.inputs_answered += len(x)
            self.requests_answered += 1
        return labels
