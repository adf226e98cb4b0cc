"""The Open Inference Protocol over gRPC (`--protocol v2-grpc`): the messages against the .proto's numbering, the
oracle against an in-process v2 gRPC server (tests/grpc_v2_server.py): labels, raw and typed answers, scores
reduced to their arg-max, retries, budget, journal, token, metadata checks and one-line errors, and a gRPC audit
end to end equal to the in-process one. In-process, loopback only."""

import socket

import numpy as np
import pandas as pd
import pytest
import test_http_oracle as http_tests
import torch
from grpc_v2_server import GrpcV2Server
from test_http_oracle import CLASSES, SHAPE, Sleeps, _argmax, _batch

from attacks.oracles import v2_grpc
from attacks.oracles.base import QueryBudgetExceeded
from attacks.oracles.grpc_client import GrpcOracle
from attacks.oracles.http_settings import HttpSettings, TargetError
from attacks.oracles.journal import Journal
from attacks.oracles.model import ModelOracle
from farm.errors import ConfigError
from farm.storage import RunDir

model = http_tests.model  # the fixture: a linear model of SHAPE -> CLASSES
GRPC = HttpSettings(batch_size=7, concurrency=3, backoff=0.5, retries=2, protocol="v2-grpc")


def _oracle(url, tmp_path, **kwargs):
    journal = kwargs.pop("journal", Journal(RunDir(str(tmp_path / "run")), "audit/t/journal"))
    return GrpcOracle(url, input_shape=SHAPE, num_classes=CLASSES, settings=kwargs.pop("settings", GRPC),
                      journal=journal, sleep=kwargs.pop("sleep", Sleeps()), **kwargs)


@pytest.fixture
def serve(model):
    servers = []

    def start(**kwargs):
        servers.append(GrpcV2Server(ModelOracle(model, input_shape=SHAPE), input_shape=SHAPE, **kwargs).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_the_messages_are_numbered_as_in_the_proto():
    fields = {name: {f.name: f.number for f in cls.DESCRIPTOR.fields} for name, cls in v2_grpc.MESSAGES.items()}
    assert fields["ModelInferRequest"] == {"model_name": 1, "model_version": 2, "id": 3, "inputs": 5}
    assert fields["ModelInferResponse"] == {"model_name": 1, "model_version": 2, "id": 3, "outputs": 5,
                                            "raw_output_contents": 6}
    assert fields["InferTensor"] == {"name": 1, "datatype": 2, "shape": 3, "contents": 5}
    assert fields["ModelMetadataResponse"] == {"name": 1, "versions": 2, "platform": 3, "inputs": 4, "outputs": 5}
    assert fields["InferTensorContents"]["fp32_contents"] == 6 and fields["InferTensorContents"]["int64_contents"] == 3


@pytest.mark.parametrize("raw", [False, True])
def test_labels_typed_or_raw_equal_the_models_and_are_journaled_once(serve, model, tmp_path, raw):
    server = serve(raw=raw)
    x = np.concatenate([_batch(20), _batch(3)])  # 23 rows in 4 requests of at most 7
    oracle = _oracle(server.url, tmp_path)
    np.testing.assert_array_equal(oracle.predict_labels(x), _argmax(model, x))
    assert oracle.queries_used == len(oracle.journal) == 20 and sum(map(len, server.batches)) == 20
    assert all(b.shape[1:] == SHAPE for b in server.batches) and max(map(len, server.batches)) == 7
    again = _oracle(server.url, tmp_path)  # the journal answers; its re-check re-asks a sample
    np.testing.assert_array_equal(again.predict_labels(x), _argmax(model, x))
    assert again.rechecked == 20 and again.journal_hits == 23 and again.queries_used == 40
    assert repr(again).startswith("GrpcOracle(") and again.identity()["inputs"][0]["shape"] == [-1, *SHAPE]


def test_scores_give_their_arg_max_only(serve, model, tmp_path):
    server = serve(scores=lambda x: _argmax_logits(model, x), raw=True)
    x = _batch(9)
    oracle = _oracle(server.url, tmp_path)
    np.testing.assert_array_equal(oracle.predict_labels(x), _argmax(model, x))
    assert set(pd.read_parquet(oracle.journal.where).columns) == {"input_sha256", "label"}


def _argmax_logits(model, x):
    with torch.no_grad():
        return model(torch.as_tensor(x)).numpy()


def test_unavailable_is_retried_with_backoff_and_counted_against_the_budget(serve, model, tmp_path):
    server = serve(failures=2)
    sleeps = Sleeps()
    oracle = _oracle(server.url, tmp_path, sleep=sleeps)
    x = _batch(5)
    np.testing.assert_array_equal(oracle.predict_labels(x), _argmax(model, x))
    assert sleeps == [0.5, 1.0] and oracle.queries_used == 15  # each attempt counts, as over REST
    budgeted = _oracle(server.url, tmp_path / "b", budget=12)
    server.failures = 5
    with pytest.raises(QueryBudgetExceeded, match="retrying"):
        budgeted.predict_labels(_batch(6, seed=1))
    assert budgeted.queries_used == 12
    capped = _oracle(server.url, tmp_path / "c", budget=4)
    with pytest.raises(QueryBudgetExceeded, match="budget of 4"):
        capped.predict_labels(_batch(5, seed=2))
    assert capped.queries_used == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_errors_are_one_line(serve, tmp_path):
    server = serve(token="tok-1")
    cases = [
        (dict(url=f"grpc://127.0.0.1:{_free_port()}/v2/models/m"), r"ModelMetadata UNAVAILABLE.*after 3 attempts"),
        (dict(url=server.url.removesuffix("/m") + "/nope", token="tok-1"),
         "ModelMetadata NOT_FOUND: Model nope not found"),
        (dict(url=server.url, token="wrong"), "ModelMetadata UNAUTHENTICATED: missing or wrong bearer token"),
    ]
    for kwargs, message in cases:
        oracle = _oracle(kwargs.pop("url"), tmp_path, **kwargs)
        with pytest.raises(TargetError, match=message) as err:
            oracle.predict_labels(_batch(3))
        assert "\n" not in str(err.value) and len(oracle.journal) == 0
    assert {seen.get("authorization") for seen in server.seen} == {"Bearer tok-1", "Bearer wrong"}
    wrong = serve(inputs=[{"name": "x", "datatype": "FP32", "shape": [-1, 5]}])
    with pytest.raises(TargetError, match=r"input 'x' has shape \[-1, 5\], but the run's inputs have shape \[B, 2, 3"):
        _oracle(wrong.url, tmp_path).predict_labels(_batch(3))
    for url in ("grpc://127.0.0.1:1", "grpc://127.0.0.1/v2/models/m", "http://127.0.0.1:1/v2/models/m"):
        with pytest.raises(ConfigError, match="expected grpc://HOST:PORT"):
            _oracle(url, tmp_path)


def test_metadata_without_inputs_gets_the_runs_shape_as_fp32(serve, model, tmp_path):
    server = serve(inputs=[])
    oracle = _oracle(server.url, tmp_path, settings=HttpSettings(protocol="v2-grpc", input_name="features"))
    x = _batch(4)
    np.testing.assert_array_equal(oracle.predict_labels(x), _argmax(model, x))
    assert len(oracle.notes) == 1 and "declares no inputs" in oracle.notes[0] and "'features'" in oracle.notes[0]


def test_cli_audit_over_grpc_equals_the_in_process_scores(farms, capsys):
    from attacks.audit import target_key
    from jobs import cli

    run = farms.run(*farms.LOGITS)
    server = GrpcV2Server(ModelOracle.from_run(run, 0), name="m0", input_shape=(1, 8, 8)).start()
    base = f"grpc://127.0.0.1:{server.port}"
    common = ["--attacks", "augmentation,noise", "--pseudo-targets", "2", "--bootstrap", "0", "--quiet"]
    try:
        assert cli.main(["audit", run, "--target", base, "--protocol", "v2-grpc", "--model-name", "m0",
                         "--batch-size", "100", *common]) == 0
        assert cli.main(["audit", run, "--target", "model:0", *common]) == 0
        assert cli.main(["audit", run, "--target", base + "/v2/models/m0", *common]) == 2
        assert "a grpc:// target needs --protocol v2-grpc" in capsys.readouterr().err
    finally:
        server.stop()
    for attack in ("augmentation", "noise"):
        a = pd.read_parquet(f"{run}/audit/{target_key(server.url)}/{attack}/scores.parquet")
        b = pd.read_parquet(f"{run}/audit/{target_key('model:0')}/{attack}/scores.parquet")
        assert len(a) == 120
        pd.testing.assert_frame_equal(a, b)
    assert max(map(len, server.batches)) == 100
