"""A deployed model behind a label-only HTTP API (attacks.oracles.protocol) as a `LabelOracle` (DESIGN §5).

`HttpOracle.predict_labels(x)` hashes every row, takes the rows the journal (attacks.oracles.journal) already holds
from there, and asks the target only for the others (each distinct row once), in requests of
`batch_size` rows, at most `concurrency` in flight, at most `rate` requests per second. Each answered
request is journaled before its labels are used, so a crash or a re-run never pays twice for a row.

Budget (hard): `queries_used` counts the rows of every request *sent* (each retry again, since a server may
have answered a request whose answer was lost), plus the journal's rows at start (answered in earlier
runs). A call whose new rows would take it past `budget` raises `QueryBudgetExceeded` before sending
anything; each request (and retry) reserves its rows under a lock before it is sent, so concurrency
never overshoots.

Failures: a 5xx, a refused/reset connection or a timeout is retried `retries` times after
backoff * 2**k seconds (k = 0, 1, ...; at most 60 s); then, or at once for a 4xx or a malformed answer
(wrong count, not integers, labels outside [0, num_classes)), `TargetError` with one line naming the
target and the cause. Requests already answered stay journaled.

Protocol (`HttpSettings.protocol`): "shadowfarm" (attacks.oracles.protocol, `shadowfarm serve`'s /predict) or
"v2", the Open Inference Protocol of KServe, Triton, MLServer and Seldon (attacks.oracles.protocol_v2; over gRPC:
"v2-grpc", `GrpcOracle` in attacks.oracles.grpc_client, which reuses all of this but the transport): the URL
names the model (`.../v2/models/NAME`); its metadata is read once (not a query) to find the input's name,
datatype (FP32, or FP64) and shape (checked against the run's); answers are labels (an integer output) or
scores (a float output [B, C]) of which only the arg-max is kept, so the attack stays label-only and the
journal holds labels only. `output_name` picks the output (default: the first). Metadata that declares no
inputs (MLServer's scikit-learn runtime unless its settings list them) gets the run's input shape as FP32 under
`input_name` (default "input-0"), said in `notes`. Only the URL, the body and the decoding differ: retries,
rate, concurrency, budget and journal are the same.

A journal written in an earlier run is trusted only after `RECHECK` of its rows, re-asked (and counted as
queries) on the first call that would reuse it, get the same answers: otherwise `TargetChanged` (see
attacks.oracles.journal: journals are kept per model identity).

Token: given as a string (the CLI reads it from an environment variable); sent as `Authorization: Bearer`;
never stored in files, messages or the repr. A target URL with credentials in it is refused.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import partial

import numpy as np

from attacks.oracles import protocol, protocol_v2
from attacks.oracles.base import QueryBudgetExceeded
from attacks.oracles.http_settings import HttpSettings, Retryable, TargetChanged, TargetError, server_message
from attacks.oracles.http_settings import check_target_url as check_target_url
from attacks.oracles.journal import Journal, row_keys
from farm.errors import ConfigError, DataError

__all__ = ["HttpOracle", "HttpSettings", "TargetChanged", "TargetError", "check_target_url"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# The quickstart's models agree on 91% of their answers to the run's queries (97% on clean inputs): 64 re-asked
# rows miss a swap of two such models with probability 0.91**64 = 0.3% (0.97**64 = 19% were every row clean).
RECHECK = 64
_MAX_BACKOFF = 60.0
_DEFAULT = HttpSettings()


class HttpOracle:
    """A label-only HTTP target (see the module docstring). input_shape: the example shape sent (checked
    before sending); num_classes: labels outside [0, num_classes) are malformed answers. A transport other than
    HTTP (attacks.oracles.grpc_client) overrides SCHEMES, `_connect`, `_exchange` and `_metadata`."""

    SCHEMES = ("http", "https")

    def __init__(self, url: str, *, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
                 budget: int | None = None, settings: HttpSettings = _DEFAULT, token: str | None = None,
                 journal: Journal | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise ConfigError(f"budget: expected None or an integer >= 0, got {budget!r}")
        self.url, self.settings, self.budget = check_target_url(url, self.SCHEMES), settings, budget
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.num_classes, self.notes, self.rechecked = num_classes, [], 0
        self.use_journal(journal)
        self.journal_hits = 0
        self._token, self._sleep, self._clock = token, sleep, clock
        self._lock, self._next_start = threading.Lock(), 0.0
        self._spec, self._spec_lock = None, threading.Lock()
        self._connect(url)

    def _connect(self, url: str) -> None:
        """Where requests go: an opener (no proxy on loopback) and, for v2, the model's metadata and infer URLs."""
        loopback = urllib.parse.urlsplit(url).hostname in _LOOPBACK
        self._opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if loopback else []))
        self._infer_url = url
        if self.settings.protocol == "v2":
            try:
                self._meta_url, self._infer_url, self._model = protocol_v2.model_urls(url)
            except DataError as exc:
                raise ConfigError(str(exc)) from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, queries_used={self.queries_used}, budget={self.budget})"

    def use_journal(self, journal: Journal | None) -> None:
        """Answer from (and append to) `journal`; its rows count as used queries; re-check it before reuse."""
        self.journal, self.queries_used = journal, len(journal) if journal is not None else 0
        self._checked = journal is None or not len(journal)

    def identity(self) -> dict:
        """What identifies the model behind the URL where its protocol states it (read once, not a query): v2,
        its metadata's name, versions, platform, inputs and outputs; our own protocol states nothing."""
        if not self.settings.protocol.startswith("v2"):
            return {"protocol": self.settings.protocol}
        self._v2_input()
        stated = ("name", "versions", "platform", "inputs", "outputs")
        return {"protocol": "v2", **{k: self._meta.get(k) for k in stated}}

    def predict_labels(self, x) -> np.ndarray:
        """x float32[B, *shape] -> int64[B]; journaled rows cost nothing, each new distinct row one query."""
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        if x.ndim < 1 or (self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape):
            raise DataError(f"oracle input: expected [B, *shape] with shape {self.input_shape}, got {tuple(x.shape)}")
        keys = row_keys(x)
        labels = self.journal.get(keys) if self.journal is not None else np.full(len(keys), -1, dtype=np.int64)
        first: dict[bytes, int] = {}
        for i in np.flatnonzero(labels < 0):
            first.setdefault(keys[i], int(i))
        recheck = self._recheck_rows(keys, labels)
        with self._lock:
            self.journal_hits += int((labels >= 0).sum())
            if self.budget is not None and self.queries_used + len(first) + len(recheck) > self.budget:
                raise QueryBudgetExceeded(
                    f"query budget exceeded: this call needs {len(first) + len(recheck)} new queries but "
                    f"{self.queries_used} of the budget of {self.budget} are used; answers so far are journaled, "
                    "raise --budget to go on")
        if len(recheck):
            self._recheck(x[recheck], labels[recheck])
        if not first:
            return labels
        rows = np.fromiter(first.values(), dtype=np.intp, count=len(first))
        answers = self._ask(x[rows], [keys[i] for i in rows])
        fresh = dict(zip((keys[i] for i in rows), answers.tolist(), strict=True))
        missing = labels < 0
        labels[missing] = [fresh[keys[i]] for i in np.flatnonzero(missing)]
        return labels

    def _recheck_rows(self, keys: list[bytes], labels: np.ndarray) -> np.ndarray:
        """Indices of up to RECHECK distinct journaled rows to re-ask, on the first call that reuses the journal."""
        with self._lock:
            if self._checked or not (labels >= 0).any():
                return np.empty(0, dtype=np.intp)
            self._checked = True
        hits = np.fromiter({keys[i]: i for i in np.flatnonzero(labels >= 0)[::-1]}.values(), dtype=np.intp)
        return np.sort(np.random.default_rng(0).choice(hits, size=min(RECHECK, len(hits)), replace=False))

    def _recheck(self, x: np.ndarray, journaled: np.ndarray) -> None:
        answers = self._request(x, None)
        self.rechecked += len(x)
        if (differ := int((answers != journaled).sum())):
            raise TargetChanged(f"{self.url}: the target changed since its journal {self.journal.where} was written: "
                                f"{differ} of {len(x)} journaled answers re-asked differ; run again with --new-journal "
                                "to start a new journal (the old one is kept)")

    # ------------------------------------------------------------ requests
    def _ask(self, x: np.ndarray, keys: list[bytes]) -> np.ndarray:
        """Labels int64[len(x)] of distinct rows, in concurrent requests; the first failure is raised once
        every request in flight has ended (those answered are journaled), and the rest are not sent."""
        out = np.empty(len(x), dtype=np.int64)
        size = self.settings.batch_size
        starts = range(0, len(x), size)
        if len(starts) == 1:
            out[:] = self._request(x, keys)
            return out
        error = None
        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            futures = {pool.submit(self._request, x[s:s + size], keys[s:s + size]): s for s in starts}
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                if future.exception() is not None:
                    if error is None:
                        error = future.exception()
                        for other in futures:
                            other.cancel()
                    continue
                s = futures[future]
                out[s:s + size] = future.result()
        if error is not None:
            raise error
        return out

    def _request(self, x: np.ndarray, keys: list[bytes] | None) -> np.ndarray:
        send, decode = self._exchange(x)
        payload = self._send(send, len(x))
        try:
            labels = decode(payload, len(x))
        except DataError as exc:
            raise TargetError(f"{self.url}: malformed response: {exc}") from None
        if self.num_classes is not None and len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise TargetError(f"{self.url}: malformed response: labels outside [0, {self.num_classes}) "
                              f"(got {labels.min()}..{labels.max()})")
        if self.journal is not None and keys is not None:
            self.journal.append(keys, labels)
        return labels

    def _exchange(self, x: np.ndarray) -> tuple[Callable[[], bytes], Callable[[bytes, int], np.ndarray]]:
        """(send() -> payload, decode(payload, n) -> labels) of a request for `x` in the target's protocol."""
        if self.settings.protocol == "v2":
            decode = partial(protocol_v2.decode_response, output_name=self.settings.output_name)
            body, content_type = protocol_v2.encode_request(x, self._v2_input()), protocol.JSON
        elif self.settings.encoding == "binary":
            body, content_type, decode = protocol.encode_batch(x), protocol.BATCH, protocol.decode_labels
        else:
            body, content_type, decode = protocol.encode_json_batch(x), protocol.JSON, protocol.decode_json_labels
        return partial(self._post, body, content_type, self._infer_url), decode

    def _metadata(self) -> dict:
        """The v2 model's metadata (GET, retried like a request, not counted as queries)."""
        payload = self._send(partial(self._post, None, None, self._meta_url), 0)
        try:
            return json.loads(payload)
        except ValueError:
            raise TargetError(f"{self.url}: malformed metadata from GET {self._meta_url}: not JSON") from None

    def _v2_input(self) -> protocol_v2.InputSpec:
        """The v2 model's input, from its metadata (read once, retried like a request, not counted as queries)."""
        with self._spec_lock:
            if self._spec is None:
                meta = self._metadata()
                try:
                    self._spec = protocol_v2.input_spec(meta, self._model, self.input_shape, self.settings.input_name)
                except DataError as exc:
                    raise TargetError(f"{self.url}: {exc}") from None
                self._meta = meta
                if not meta.get("inputs"):
                    self.notes.append(f"{self.url}: the model's metadata declares no inputs; sending FP32 "
                                      f"{[-1, *self._spec.shape]} as input {self._spec.name!r} (the run's shape; "
                                      "--input-name names the input)")
            return self._spec

    def _send(self, send: Callable[[], bytes], n: int) -> bytes:
        """send()'s answer, retried after a Retryable failure; each attempt first reserves `n` queries."""
        for attempt in range(self.settings.retries + 1):
            if n:
                self._reserve(n, retry=attempt > 0)
            self._wait_for_rate()
            try:
                return send()
            except Retryable as exc:
                if attempt == self.settings.retries:
                    raise TargetError(f"{self.url}: {exc} (gave up after {attempt + 1} attempts)") from None
                self._sleep(min(self.settings.backoff * 2 ** attempt, _MAX_BACKOFF))
        raise AssertionError("unreachable")

    def _reserve(self, n: int, *, retry: bool) -> None:
        with self._lock:
            if self.budget is not None and self.queries_used + n > self.budget:
                raise QueryBudgetExceeded(
                    f"query budget exceeded: {'retrying' if retry else 'sending'} a request of {n} queries would "
                    f"pass the budget of {self.budget} ({self.queries_used} used); answers so far are journaled")
            self.queries_used += n

    def _wait_for_rate(self) -> None:
        if self.settings.rate is None:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.settings.rate
        if start > now:
            self._sleep(start - now)

    def _post(self, body: bytes | None, content_type: str | None, url: str) -> bytes:
        """POST `body` to `url` (GET when body is None); Retryable or TargetError on failure."""
        headers = {"Content-Type": content_type} if content_type else {}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(url, data=body, headers=headers, method="GET" if body is None else "POST")
        try:
            with self._opener.open(request, timeout=self.settings.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            message = f"HTTP {exc.code} {exc.reason}{server_message(exc)}"
            if exc.code >= 500:
                raise Retryable(message) from None
            raise TargetError(f"{self.url}: {message}") from None
        except TimeoutError:
            raise Retryable(f"no answer within {self.settings.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:  # URLError (refused, DNS), resets, cut answers
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise Retryable(f"no answer within {self.settings.timeout:g} s") from None
            raise Retryable(f"connection failed ({type(reason).__name__}: {reason})") from None

