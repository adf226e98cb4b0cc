"""The label-only HTTP API and its oracle: both encodings, journal, budget, retries, rate limit, clear errors.

No Ray, no sleeps: backoff and rate-limit waits go to a recording `sleep`; the one timeout test waits 2 x 50 ms.
"""

import json
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from torch import nn

from attacks.oracles import protocol
from attacks.oracles.base import LabelOracle, QueryBudgetExceeded
from attacks.oracles.http_client import HttpOracle, HttpSettings, TargetError
from attacks.oracles.journal import COMPACT_AFTER, Journal, row_keys
from attacks.oracles.model import ModelOracle
from attacks.oracles.server import LabelServer
from farm.errors import ConfigError, DataError
from farm.storage import RunDir

SHAPE, CLASSES = (2, 3), 4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, CLASSES)).eval()


def _batch(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *SHAPE)).astype(np.float32)


def _argmax(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).argmax(1).numpy()


@pytest.fixture
def server(model):
    server = LabelServer(ModelOracle(model, input_shape=SHAPE)).start()
    yield server
    server.stop()


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def _oracle(url, tmp_path, **kwargs):
    settings = kwargs.pop("settings", HttpSettings(batch_size=7, concurrency=3, backoff=0.5))
    journal = kwargs.pop("journal", Journal(RunDir(str(tmp_path / "run")), "audit/t/journal"))
    return HttpOracle(url, input_shape=SHAPE, num_classes=CLASSES, settings=settings, journal=journal,
                      sleep=kwargs.pop("sleep", Sleeps()), **kwargs)


def _post(url, body, content_type, token=None):
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10) as response:
        return response.read()


def _stats(server):
    return server.stats()["inputs_answered"]


def test_both_encodings_answer_the_models_labels(server, model):
    x = _batch(20)
    binary = protocol.decode_labels(_post(server.url, protocol.encode_batch(x), protocol.BATCH), 20)
    answer = json.loads(_post(server.url, protocol.encode_json_batch(x), protocol.JSON))
    flat = json.loads(_post(server.url, json.dumps({"inputs": x.reshape(20, -1).tolist()}).encode(), protocol.JSON))
    np.testing.assert_array_equal(binary, _argmax(model, x))
    assert answer["labels"] == flat["labels"] == _argmax(model, x).tolist()
    stats = json.loads(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        server.url.replace("/predict", "/stats")).read())
    assert stats == {"inputs_answered": 60, "requests_answered": 3, "input_shape": list(SHAPE)}


def test_oracle_matches_the_model_and_journals_every_answer(server, model, tmp_path):
    oracle = _oracle(server.url, tmp_path)
    assert isinstance(oracle, LabelOracle)
    x = _batch(50)
    np.testing.assert_array_equal(oracle.predict_labels(x), _argmax(model, x))
    assert oracle.queries_used == _stats(server) == len(oracle.journal) == 50
    assert server.stats()["requests_answered"] == 8  # ceil(50 / 7)
    again = _oracle(server.url, tmp_path, settings=HttpSettings(encoding="json"))  # pays new rows + RECHECK rows
    mixed = np.concatenate([x[::-1], _batch(3, seed=1), x[:2]])
    np.testing.assert_array_equal(again.predict_labels(mixed), _argmax(model, mixed))
    again.predict_labels(mixed)  # the 50 distinct journaled rows are re-asked once per oracle, not per call
    assert _stats(server) == again.queries_used == 103 == len(again.journal) + again.rechecked == 53 + 50


def test_duplicate_rows_are_sent_once(server, model, tmp_path):
    x = np.repeat(_batch(4), 5, axis=0)
    oracle = _oracle(server.url, tmp_path, journal=None)
    np.testing.assert_array_equal(oracle.predict_labels(x), _argmax(model, x))
    assert oracle.queries_used == _stats(server) == 4


def test_budget_is_never_exceeded(server, tmp_path):
    oracle = _oracle(server.url, tmp_path, budget=10)
    oracle.predict_labels(_batch(8))
    with pytest.raises(QueryBudgetExceeded, match="budget of 10"):
        oracle.predict_labels(_batch(5, seed=1))
    assert oracle.queries_used == _stats(server) == 8  # refused before sending anything
    oracle.predict_labels(np.concatenate([_batch(8), _batch(2, seed=1)]))  # 8 journaled + 2 new = the budget
    assert oracle.queries_used == _stats(server) == 10
    restarted = _oracle(server.url, tmp_path, budget=10)  # the journal's answers count against the budget
    assert restarted.queries_used == 10
    with pytest.raises(QueryBudgetExceeded):
        restarted.predict_labels(_batch(1, seed=2))
    assert _stats(server) == 10


class Flaky:
    """A label oracle whose first `failures` calls fail (the server answers 500)."""

    def __init__(self, model, failures):
        self.inner, self.failures, self.input_shape = ModelOracle(model), failures, SHAPE

    def predict_labels(self, x):
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("overloaded")
        return self.inner.predict_labels(x)


def test_5xx_is_retried_with_exponential_backoff(model, tmp_path):
    server = LabelServer(Flaky(model, failures=2)).start()
    try:
        sleeps = Sleeps()
        oracle = _oracle(server.url, tmp_path, sleep=sleeps)
        x = _batch(5)
        np.testing.assert_array_equal(oracle.predict_labels(x), _argmax(model, x))
        assert sleeps == [0.5, 1.0] and oracle.queries_used == 15 and _stats(server) == 5  # each attempt counts
        budgeted = _oracle(server.url, tmp_path / "b", budget=12, sleep=Sleeps())
        server.oracle.failures = 5
        with pytest.raises(QueryBudgetExceeded, match="retrying"):
            budgeted.predict_labels(_batch(6, seed=1))
        assert budgeted.queries_used == 12
    finally:
        server.stop()


def test_refused_connection_gives_one_line_after_retries(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    sleeps = Sleeps()
    oracle = _oracle(f"http://127.0.0.1:{port}/predict", tmp_path, sleep=sleeps,
                     settings=HttpSettings(retries=2, backoff=1.0))
    with pytest.raises(TargetError, match=r"connection failed.*after 3 attempts") as info:
        oracle.predict_labels(_batch(3))
    assert "\n" not in str(info.value) and sleeps == [1.0, 2.0] and len(oracle.journal) == 0


def test_timeout_is_a_clear_error(tmp_path):
    with socket.socket() as listener:  # accepts connections (the kernel's backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/predict"
        oracle = _oracle(url, tmp_path, settings=HttpSettings(timeout=0.05, retries=1))
        with pytest.raises(TargetError, match=r"no answer within 0.05 s.*after 2 attempts"):
            oracle.predict_labels(_batch(2))


def test_4xx_is_not_retried_and_names_the_cause(model, tmp_path, monkeypatch):
    server = LabelServer(ModelOracle(model, input_shape=SHAPE), token="s3cret-token", max_batch=5).start()
    try:
        sleeps = Sleeps()
        with pytest.raises(TargetError, match="HTTP 401.*bearer token") as info:
            _oracle(server.url, tmp_path, sleep=sleeps).predict_labels(_batch(2))
        assert "\n" not in str(info.value) and sleeps == []
        oracle = _oracle(server.url, tmp_path, token="s3cret-token", settings=HttpSettings(batch_size=50))
        assert "s3cret" not in repr(oracle)
        with pytest.raises(TargetError, match="HTTP 413.*at most 5"):
            oracle.predict_labels(_batch(6))
        oracle.predict_labels(_batch(5))
        wrong = HttpOracle(server.url, token="s3cret-token", sleep=sleeps)  # no shape check on the client side
        with pytest.raises(TargetError, match=r"HTTP 400.*shape \[4\], expected \[2, 3\]"):
            wrong.predict_labels(np.zeros((2, 4), np.float32))
        with pytest.raises(TargetError, match="HTTP 404"):
            HttpOracle(server.url.replace("predict", "nope"), token="s3cret-token").predict_labels(_batch(1))
        assert sleeps == [] and _stats(server) == 5
        for path in (tmp_path / "run").rglob("*"):
            assert not path.is_file() or b"s3cret" not in path.read_bytes()
    finally:
        server.stop()


class Garbage(BaseHTTPRequestHandler):
    """Answers the first request properly (one label per input), then `answers` in turn."""

    answers: list = []

    def do_POST(self):  # noqa: N802
        x = protocol.decode_batch(self.rfile.read(int(self.headers["Content-Length"])))
        body = protocol.encode_labels(np.zeros(len(x))) if not self.answers else self.answers.pop(0)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("answer, message", [
    (b"\x01\x00\x00\x00", "expected 3 int32 labels"),
    (protocol.encode_labels(np.array([0, 9, 1])), r"labels outside \[0, 4\)"),
    (b'{"labels": [0, 1, 2]}', "expected 3 int32 labels"),
])
def test_malformed_answers_keep_the_journal(tmp_path, answer, message):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/predict"
        Garbage.answers = [protocol.encode_labels(np.zeros(2)), answer]
        oracle = _oracle(url, tmp_path, settings=HttpSettings(concurrency=1, batch_size=3))
        oracle.predict_labels(_batch(2))
        with pytest.raises(TargetError, match=f"malformed response: {message}") as info:
            oracle.predict_labels(_batch(3, seed=1))
        assert "\n" not in str(info.value)
        assert len(Journal(RunDir(str(tmp_path / "run")), "audit/t/journal")) == 2
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_json_answers_are_checked(tmp_path):
    with pytest.raises(DataError, match="3 integers"):
        protocol.decode_json_labels(b'{"labels": [0, 1.5, 2]}', 3)
    with pytest.raises(DataError, match='"labels"'):
        protocol.decode_json_labels(b"[0, 1, 2]", 3)
    with pytest.raises(DataError, match="SFB1"):
        protocol.decode_batch(b"nope")


def test_rate_limit_spaces_requests(server, tmp_path):
    sleeps = Sleeps()
    oracle = _oracle(server.url, tmp_path, sleep=sleeps, clock=lambda: 100.0,
                     settings=HttpSettings(batch_size=2, concurrency=1, rate=4.0))
    oracle.predict_labels(_batch(6))
    assert sleeps == [0.25, 0.5]  # three requests at 100.0, 100.25, 100.5 by the (frozen) clock


def test_requests_run_concurrently_up_to_the_limit(model, tmp_path):
    lock, in_flight, peak, both = threading.Lock(), [0], [0], threading.Barrier(2, timeout=10)

    class Gate(LabelServer):
        def answer(self, x):
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
                first_two = self.requests_answered + in_flight[0] <= 2
            try:
                if first_two:
                    both.wait()  # two requests in flight at once, or BrokenBarrierError
                return super().answer(x)
            finally:
                with lock:
                    in_flight[0] -= 1

    server = Gate(ModelOracle(model, input_shape=SHAPE)).start()
    try:
        x = _batch(40)
        oracle = _oracle(server.url, tmp_path, settings=HttpSettings(batch_size=3, concurrency=2))
        np.testing.assert_array_equal(oracle.predict_labels(x), _argmax(model, x))
        assert peak[0] == 2 and server.stats()["requests_answered"] == 14
    finally:
        server.stop()


def test_credentials_in_the_url_are_refused():
    for url in ("http://user:pw@127.0.0.1:1/predict", "http://127.0.0.1:1/predict?token=abc", "ftp://host/x"):
        with pytest.raises(ConfigError) as info:
            HttpOracle(url)
        assert "pw" not in str(info.value) and "abc" not in str(info.value)


def test_journal_compacts_and_keys_are_exact(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    journal = Journal(run, "j")
    x = _batch(COMPACT_AFTER + 1)
    for row, key in zip(x, row_keys(x), strict=True):
        journal.append([key], np.array([int(row[0, 0] > 0)]))
    assert len(run.listdir("j")) == 2 * (COMPACT_AFTER + 1)  # each part with its hidden sha256 record
    reopened = Journal(run, "j")
    assert len(run.listdir("j")) == 2 and len(reopened) == COMPACT_AFTER + 1
    np.testing.assert_array_equal(reopened.get(row_keys(x)), (x[:, 0, 0] > 0).astype(int))
    nudged = x[:1].copy()
    nudged[0, 1, 2] = np.nextafter(nudged[0, 1, 2], np.float32(9))
    assert reopened.get(row_keys(nudged))[0] == -1 and row_keys(x[:1].reshape(1, 6)) != row_keys(x[:1])
