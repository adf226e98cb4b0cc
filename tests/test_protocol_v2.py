"""The Open Inference Protocol (v2): encode/decode, the oracle against `shadowfarm serve`'s v2 side, a scores
server (arg-max only, labels only in the journal), metadata shape and token errors, and a v2 audit end to end.

In-process, loopback only; a tiny stdlib handler stands in for a server that returns FP32 logits.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from attacks.oracles import protocol_v2
from attacks.oracles.http_client import HttpOracle, HttpSettings, TargetError
from attacks.oracles.journal import Journal, open_journal
from attacks.oracles.model import ModelOracle
from attacks.oracles.server import LabelServer
from farm.errors import ConfigError, DataError
from farm.storage import RunDir

SHAPE, CLASSES = (2, 3), 4
V2 = HttpSettings(batch_size=7, concurrency=3, backoff=0.0, retries=1, protocol="v2")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, CLASSES)).eval()


def _batch(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *SHAPE)).astype(np.float32)


def _journal(tmp_path):
    return Journal(RunDir(str(tmp_path / "run")), "audit/t/journal")


def test_encode_decode_round_trips():
    x = _batch(5)
    spec = protocol_v2.InputSpec("input", "FP32", SHAPE)
    body = json.loads(protocol_v2.encode_request(x, spec))
    assert body["inputs"][0]["shape"] == [5, 2, 3] and body["inputs"][0]["datatype"] == "FP32"
    np.testing.assert_array_equal(protocol_v2.decode_request(protocol_v2.encode_request(x, spec)), x)
    labels = np.array([3, 0, 1, 1, 2])
    np.testing.assert_array_equal(protocol_v2.decode_response(protocol_v2.encode_response(labels, "m"), 5), labels)
    nested = {"outputs": [{"name": "p", "shape": [2, 3], "datatype": "FP32", "data": [[0, 5, 1], [9, 0, 0]]},
                          {"name": "l", "shape": [2, 1], "datatype": "INT32", "data": [[2], [1]]}]}
    payload = json.dumps(nested).encode()
    assert protocol_v2.decode_response(payload, 2).tolist() == [1, 0]  # the first output: scores, arg-max
    assert protocol_v2.decode_response(payload, 2, output_name="l").tolist() == [2, 1]
    with pytest.raises(DataError, match="no output named 'x'"):
        protocol_v2.decode_response(payload, 2, output_name="x")
    with pytest.raises(DataError, match="2 answers for 3 inputs"):
        protocol_v2.decode_response(payload, 3)
    bad = {"outputs": [{"name": "s", "shape": [2], "datatype": "BYTES", "data": [1, 2]}]}
    with pytest.raises(DataError, match="expected labels"):
        protocol_v2.decode_response(json.dumps(bad).encode(), 2)
    meta = protocol_v2.metadata("m", SHAPE)
    assert protocol_v2.input_spec(meta, "m", SHAPE) == spec
    flat = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 6]}]}
    assert protocol_v2.input_spec(flat, "m", SHAPE) == protocol_v2.InputSpec("x", "FP64", (6,))
    int_input = {"inputs": [{"name": "x", "datatype": "INT8", "shape": [-1, 6]}]}
    with pytest.raises(DataError, match="datatype INT8; expected FP32"):
        protocol_v2.input_spec(int_input, "m", SHAPE)
    assert protocol_v2.model_urls("http://h:1/p/v2/models/a%20b/infer") == (
        "http://h:1/p/v2/models/a%20b", "http://h:1/p/v2/models/a%20b/infer", "a b")


def test_oracle_over_v2_gives_the_in_process_labels(model, tmp_path):
    direct = ModelOracle(model, input_shape=SHAPE)
    server = LabelServer(ModelOracle(model, input_shape=SHAPE), model_name="target-0").start()
    try:
        oracle = HttpOracle(server.v2_url, input_shape=SHAPE, num_classes=CLASSES, settings=V2,
                            journal=_journal(tmp_path))
        x = _batch(50)
        np.testing.assert_array_equal(oracle.predict_labels(x), direct.predict_labels(x))
        assert oracle.queries_used == server.stats()["inputs_answered"] == 50  # metadata is not a query
        assert server.stats()["requests_answered"] == 8  # ceil(50 / 7)
    finally:
        server.stop()


class _Logits(BaseHTTPRequestHandler):
    """A v2 server returning FP32 logits of `model` (class attribute); metadata input shape from `dims`."""

    model, dims, declare, versions, sent = None, [-1, *SHAPE], True, ["1"], []

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _json(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        self._json({"name": "logits", "versions": self.versions, "platform": "test",
                    "inputs": [{"name": "x", "datatype": "FP32", "shape": self.dims}] if self.declare else [],
                    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, CLASSES]}]})

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.sent.append(json.loads(body)["inputs"][0]["name"])
        x = protocol_v2.decode_request(body)
        with torch.no_grad():
            logits = self.model(torch.from_numpy(x)).numpy()
        self._json({"model_name": "logits", "outputs": [{"name": "logits", "shape": list(logits.shape),
                                                          "datatype": "FP32", "data": logits.tolist()}]})


@pytest.fixture
def logits_server(model):
    _Logits.model = model
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Logits)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_a_scores_server_gives_arg_max_labels_and_the_journal_holds_labels_only(model, logits_server, tmp_path):
    url = f"http://127.0.0.1:{logits_server.server_address[1]}/v2/models/logits"
    oracle = HttpOracle(url, input_shape=SHAPE, num_classes=CLASSES, settings=V2, journal=_journal(tmp_path))
    x = _batch(30, seed=1)
    np.testing.assert_array_equal(oracle.predict_labels(x), ModelOracle(model, input_shape=SHAPE).predict_labels(x))
    files = list((tmp_path / "run" / "audit/t/journal").rglob("*.parquet"))
    assert files
    for table in (pd.read_parquet(f) for f in files):
        assert list(table.columns) == ["input_sha256", "label"]  # no score, no logit: labels only
        assert table["label"].dtype.kind == "i" and table["label"].between(0, CLASSES - 1).all()


def test_a_wrong_metadata_shape_is_one_line_naming_the_model(logits_server, tmp_path, monkeypatch):
    monkeypatch.setattr(_Logits, "dims", [-1, 5])
    url = f"http://127.0.0.1:{logits_server.server_address[1]}/v2/models/logits"
    oracle = HttpOracle(url, input_shape=SHAPE, num_classes=CLASSES, settings=V2, journal=_journal(tmp_path))
    with pytest.raises(TargetError) as err:
        oracle.predict_labels(_batch(3))
    message = str(err.value)
    assert "'logits'" in message and "[-1, 5]" in message and "[B, 2, 3]" in message and "\n" not in message
    assert oracle.queries_used == 0
    with pytest.raises(ConfigError, match="--protocol v2 expected"):
        HttpOracle(f"http://127.0.0.1:{logits_server.server_address[1]}/predict", settings=V2)


def test_metadata_without_inputs_gets_the_runs_shape_as_fp32_and_says_so(model, logits_server, tmp_path,
                                                                         monkeypatch):
    """MLServer's scikit-learn runtime answers metadata with `inputs: []` unless its settings declare them."""
    monkeypatch.setattr(_Logits, "declare", False)
    monkeypatch.setattr(_Logits, "sent", [])
    url = f"http://127.0.0.1:{logits_server.server_address[1]}/v2/models/logits"
    x, direct = _batch(9, seed=2), ModelOracle(model, input_shape=SHAPE)
    oracle = HttpOracle(url, input_shape=SHAPE, num_classes=CLASSES, settings=V2, journal=_journal(tmp_path))
    np.testing.assert_array_equal(oracle.predict_labels(x), direct.predict_labels(x))
    assert set(_Logits.sent) == {"input-0"} and len(oracle.notes) == 1
    assert "declares no inputs" in oracle.notes[0] and "[-1, 2, 3]" in oracle.notes[0] and "\n" not in oracle.notes[0]
    named = HttpOracle(url, input_shape=SHAPE, settings=HttpSettings(protocol="v2", input_name="features"))
    named.predict_labels(x)
    assert _Logits.sent[-1] == "features"
    monkeypatch.setattr(_Logits, "declare", True)
    with pytest.raises(TargetError, match=r"no input named 'features' \(inputs: \['x'\]\)"):
        HttpOracle(url, input_shape=SHAPE, settings=HttpSettings(protocol="v2", input_name="features")).identity()


def test_a_new_model_version_gets_a_journal_of_its_own(model, logits_server, tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{logits_server.server_address[1]}/v2/models/logits"
    run, x = RunDir(str(tmp_path / "run")), _batch(12, seed=3)

    def opened():
        oracle = HttpOracle(url, input_shape=SHAPE, num_classes=CLASSES, settings=V2)
        journal, notes = open_journal(run, "audit/t/journal", oracle.identity())
        oracle.use_journal(journal)
        return oracle, notes

    first, notes = opened()
    first.predict_labels(x)
    assert notes == [] and len(first.journal) == 12
    again, notes = opened()
    assert notes == [] and again.journal.rel == first.journal.rel and again.queries_used == 12
    monkeypatch.setattr(_Logits, "versions", ["2"])  # a new version promoted behind the same URL
    second, notes = opened()
    assert second.journal.rel != first.journal.rel and len(second.journal) == 0 and second.queries_used == 0
    assert len(notes) == 1 and "identity" in notes[0] and "new journal" in notes[0]
    second.predict_labels(x)
    assert second.queries_used == 12 and len(Journal(run, first.journal.rel)) == 12  # the old one is kept


def test_a_bad_token_gives_todays_401_line(model, tmp_path):
    server = LabelServer(ModelOracle(model, input_shape=SHAPE), token="tok-1").start()
    try:
        lines = []
        for settings, url in ((V2, server.v2_url), (HttpSettings(retries=0), server.url)):
            oracle = HttpOracle(url, input_shape=SHAPE, settings=settings, token="wrong")
            with pytest.raises(TargetError) as err:
                oracle.predict_labels(_batch(2))
            lines.append(str(err.value).removeprefix(url + ": "))
        assert lines[0] == lines[1] == "HTTP 401 Unauthorized: missing or wrong bearer token"
        good = HttpOracle(server.v2_url, input_shape=SHAPE, settings=V2, token="tok-1")
        assert len(good.predict_labels(_batch(2))) == 2 and server.stats()["inputs_answered"] == 2
    finally:
        server.stop()


def test_cli_audit_over_v2_equals_the_in_process_scores(farms, capsys):
    from attacks.audit import journal_dir, target_key
    from jobs import cli

    run = farms.run(*farms.LOGITS)
    server = LabelServer(ModelOracle.from_run(run, 0), model_name="m0").start()
    base = server.url.removesuffix("/predict")
    common = ["--attacks", "augmentation,noise", "--pseudo-targets", "2", "--bootstrap", "0", "--quiet"]
    try:
        assert cli.main(["audit", run, "--target", base, "--protocol", "v2", "--model-name", "m0",
                         "--batch-size", "100", *common]) == 0
        assert cli.main(["audit", run, "--target", "model:0", *common]) == 0
    finally:
        server.stop()
    for attack in ("augmentation", "noise"):
        a = pd.read_parquet(f"{run}/audit/{target_key(server.v2_url)}/{attack}/scores.parquet")
        b = pd.read_parquet(f"{run}/audit/{target_key('model:0')}/{attack}/scores.parquet")
        assert len(a) == 120
        pd.testing.assert_frame_equal(a, b)
    (generation,) = [n for n in RunDir(run).listdir(journal_dir(server.v2_url)) if "-" in n]
    journal = Journal(RunDir(run), f"{journal_dir(server.v2_url)}/{generation}")
    assert len(journal) == server.stats()["inputs_answered"] > 0
    assert cli.main(["audit", run, "--target", base, "--model-name", "m0", *common]) == 2
    assert "--model-name/--output-name: only with --protocol v2" in capsys.readouterr().err
