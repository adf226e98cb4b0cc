"""The Ray Serve engine of `shadowfarm serve`: one model behind the label-only API, with replicas and batching.

The same API as the stdlib engine (attacks.oracles.server): every request goes through one `LabelApi`
(attacks.oracles.label_api: routes, bearer token, body and batch limits, decoding, validation, error lines),
so both engines answer alike; only the model call and the counting differ.

- Replicas: `replicas` copies of the model (each built in its replica by `make_oracle()`, so a run directory
  must be storage every node sees), or with `max_replicas` > `replicas` Serve's autoscaling between the two.
- Batching: each replica merges the validated inputs of concurrent requests (`@serve.batch`, up to
  `max_batch` rows and `batch_wait_s` of waiting) into one model call per example shape, then splits the
  labels back; the model runs in a worker thread so the replica keeps accepting requests meanwhile.
- Counting: one `AnswerCounter` deployment holds the answered inputs and requests of all replicas; a batch's
  inputs are added (and awaited) before any of its answers is sent, so GET /stats never lags an answer a
  client holds. Refused requests (401, 404, 400, 413) never reach the model and are not counted.
- HTTP: Serve's proxy on `host:port` (127.0.0.1 by default: this machine only), application route "/". A request
  is refused from its headers before its body is read (`LabelApi.before_body`: token, path, Content-Length), and
  one not answered within `request_seconds` (a trickled body) gets Serve's 408. Limits of Serve's proxy (uvicorn),
  which no option of this Ray version changes: it answers a Content-Length that is no number with its own 400
  (plain text, before any token check), it has no deadline for a request's headers (a slowloris holds a
  connection, not a thread, until the client closes it), and it reads a body into memory as it arrives, so
  what a client sends before the replica's refusal reaches it is read (docs/reliability.md).

The token is a deployment argument: it lives in the cluster's memory (Serve's controller), never in files or
logs; requests are not logged (Serve's access log is turned down to warnings).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from attacks.oracles.base import LabelOracle
from attacks.oracles.label_api import LabelApi, Reply, body_deadline
from farm.errors import ConfigError

APP = "shadowfarm"
QUIET = {"log_level": "WARNING", "enable_access_log": False}


@serve.deployment(ray_actor_options={"num_cpus": 0}, num_replicas=1)
class AnswerCounter:
    """Inputs and requests answered by all replicas of the app, and the batches they came in (not in /stats)."""

    def __init__(self, input_shape: list[int] | None):
        self.input_shape, self.inputs, self.requests, self.batches = input_shape, 0, 0, 0

    def add(self, inputs: int, requests: int) -> None:
        """One answered batch of `requests` requests holding `inputs` inputs."""
        self.inputs += inputs
        self.requests += requests
        self.batches += 1

    def answered_batches(self) -> int:
        return self.batches

    def stats(self) -> dict:
        return {"inputs_answered": self.inputs, "requests_answered": self.requests, "input_shape": self.input_shape}


def _rows(items: list[np.ndarray]) -> int:
    return sum(len(x) for x in items)


def _rows_not_requests(record: logging.LogRecord) -> bool:
    """Drop Serve's warning that max_batch_size exceeds max_ongoing_requests: our batch size counts rows."""
    return not record.getMessage().startswith("`max_batch_size`")


@serve.deployment(max_ongoing_requests=64)
class LabelDeployment:
    """One replica: the model from `make_oracle()` behind `LabelApi(**api)`, answered inputs added to `counter`."""

    def __init__(self, make_oracle: Callable[[], LabelOracle], counter, api: dict, batch_wait_s: float):
        logging.getLogger("ray.serve").addFilter(_rows_not_requests)
        self.oracle = make_oracle()
        self.api = LabelApi(getattr(self.oracle, "input_shape", None), **api)
        self.counter = counter
        self.labels.set_max_batch_size(self.api.max_batch)
        self.labels.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch(max_batch_size=65536, batch_wait_timeout_s=0.005, batch_size_fn=_rows)
    async def labels(self, batch: list[np.ndarray]) -> list[np.ndarray | Exception]:
        """Labels of each request's inputs (or the exception its model call raised): one model call per shape."""
        out: list[np.ndarray | Exception | None] = [None] * len(batch)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(batch):
            groups.setdefault(tuple(x.shape[1:]), []).append(i)
        for members in groups.values():
            x = np.concatenate([batch[i] for i in members])
            try:
                labels = await asyncio.to_thread(self._predict, x)
            except Exception as exc:  # noqa: BLE001 - handed to each request of the group, raised there
                labels = exc
            ends = np.cumsum([len(batch[i]) for i in members])
            parts = [labels] * len(members) if isinstance(labels, Exception) else np.split(labels, ends[:-1])
            for i, part in zip(members, parts, strict=True):
                out[i] = part
        answered = [x for x, o in zip(batch, out, strict=True) if not isinstance(o, Exception)]
        if answered:
            await self.counter.add.remote(_rows(answered), len(answered))
        return out

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.oracle.predict_labels(x), dtype=np.int64)

    async def __call__(self, request: Request) -> Response:
        return _response(await self._reply(request))

    async def _reply(self, request: Request) -> Reply:
        auth, path = request.headers.get("authorization"), request.url.path
        if request.method == "GET":
            stats = await self.counter.stats.remote() if path.rstrip("/") == "/stats" else {}
            return self.api.get(path, auth, lambda: stats)
        if request.method != "POST":
            return Reply.error(405, f"method {request.method} not allowed; GET or POST")
        if (refused := self.api.before_body(path, auth, request.headers.get("content-length"))) is not None:
            return refused  # token, path and Content-Length first: no body is read without a valid token
        body = b""
        async for chunk in request.stream():  # a body without Content-Length is cut off at the limit too
            body += chunk
            if (refused := self.api.too_large(len(body))) is not None:
                return refused
        inputs = self.api.parse(path, auth, request.headers.get("content-type"), body)
        if isinstance(inputs, Reply):
            return inputs
        labels = await self.labels(inputs.x)
        if isinstance(labels, RuntimeError):  # the model failed: the client may retry a 5xx
            return self.api.model_failed(labels)
        if isinstance(labels, Exception):
            raise labels
        return self.api.reply(inputs, labels)


def _response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, headers=reply.headers)


@dataclass
class ServeApp:
    """A running Serve application: its URLs, /stats, and `stop()` (deletes the application)."""

    url: str
    v2_url: str
    name: str = APP

    def stats(self) -> dict:
        return serve.get_deployment_handle("AnswerCounter", app_name=self.name).stats.remote().result()

    def stop(self) -> None:
        serve.delete(self.name)


def free_port(host: str, port: int = 0) -> int:
    """`port` (0: any free one) if it is free on `host` of this machine; OSError when it is taken."""
    with socket.socket() as s:
        s.bind((host, port))
        return s.getsockname()[1]


def deploy(make_oracle: Callable[[], LabelOracle], input_shape: tuple[int, ...] | None, *, host: str = "127.0.0.1",
           port: int = 0, path: str = "/predict", token: str | None = None, max_batch: int = 65536,
           model_name: str = "model", replicas: int = 1, max_replicas: int | None = None,
           replica_cpus: float = 1.0, batch_wait_s: float = 0.005, name: str = APP,
           request_seconds: float | None = None) -> ServeApp:
    """Run the app on the connected Ray cluster (Serve started on `host:port` if it is not running; port 0:
    a free one of this machine) and return once every replica is ready.

    request_seconds: how long Serve's proxy lets a request take from its headers to its answer before it sends
    408 (its body trickled, the model's answer included); None: the stdlib engine's body deadline for the largest
    body the API accepts (`body_deadline`). Set when Serve starts here: a Serve already running keeps its own."""
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # no INFO lines of Serve's start and deploys
    port = port or free_port(host)
    if not serve.status().proxies:  # Serve starts here: its proxy will listen on host:port (OSError if taken)
        free_port(host, port)
    if request_seconds is None:
        request_seconds = body_deadline(LabelApi(input_shape, max_batch=max_batch).max_bytes)
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": request_seconds},
                logging_config=QUIET)
    if name in serve.status().applications:  # serve.run would replace it
        raise ConfigError(f"Ray Serve already runs an application {name!r} on this cluster; stop that "
                          f"`shadowfarm serve` first (or `serve shutdown`)")
    scaling = ({"autoscaling_config": {"min_replicas": replicas, "max_replicas": max_replicas,
                                       "target_ongoing_requests": 8}}
               if max_replicas is not None and max_replicas > replicas else {"num_replicas": replicas})
    api = {"path": path, "token": token, "max_batch": max_batch, "model_name": model_name}
    counter = AnswerCounter.bind(None if input_shape is None else list(input_shape))
    app = LabelDeployment.options(ray_actor_options={"num_cpus": replica_cpus}, **scaling).bind(
        make_oracle, counter, api, batch_wait_s)
    serve.run(app, name=name, route_prefix="/", logging_config=QUIET)
    bound = _http_address() or (host, port)
    base = f"http://{bound[0]}:{bound[1]}"
    return ServeApp(base + path, base + LabelApi(input_shape, model_name=model_name).v2_model_paths[0], name)


def _http_address() -> tuple[str, int] | None:
    """(host, port) Serve's proxies really listen on: a Serve already running keeps its own HTTP options."""
    from ray.serve.context import _get_global_client

    config = getattr(_get_global_client(), "http_config", None)
    return (config.host, config.port) if config is not None else None
