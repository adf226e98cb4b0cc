"""A real MLServer (mlserver==1.7.1 from PyPI, in its own venv made on first use by tests/mlserver_env.py) serving
models of a tiny farm exported by `shadowfarm export-mlserver`: the labels and the arg-max of the scores it
answers over the Open Inference Protocol equal the in-process oracle's, and `shadowfarm audit --protocol v2`
of it writes the same scores as the audit of model:0.

Loopback only; the test starts and stops the server. Skipped (with the reason) only when pip cannot fetch
mlserver from any package index; any other failure to make the venv fails the test.
"""

import json
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
from mlserver_serving import LOOPBACK, free_ports, mlserver_or_skip, serving

from attacks.oracles.http_client import HttpOracle, HttpSettings
from attacks.oracles.mlserver_export import export_mlserver, layer_arrays
from attacks.oracles.model import ModelOracle, _load_run_model
from farm.errors import ConfigError
from farm.readers import read_digits
from jobs import cli

V2 = HttpSettings(batch_size=1024, concurrency=2, backoff=0.0, retries=1, protocol="v2")


@pytest.fixture(scope="module")
def mlserver():
    return mlserver_or_skip()


@pytest.fixture(scope="module")
def run(farms):
    return farms.run(*farms.LOGITS)


def _queries() -> np.ndarray:
    """Digits and noisy copies: 1797 x 3 inputs float32[1, 8, 8], many near decision boundaries."""
    x = read_digits()[0].astype(np.float32)
    noisy = x[None] + np.random.default_rng(0).normal(0, 0.3, size=(2, *x.shape)).astype(np.float32)
    return np.concatenate([x, *noisy])


@pytest.mark.system
def test_a_real_mlserver_over_v2_gives_the_in_process_labels_and_audit_scores(mlserver, run, tmp_path):
    folder = tmp_path / "mlserver"
    port, grpc_port = free_ports(2)
    assert cli.main(["export-mlserver", run, str(folder), "--model-id", "0", "--name", "m0", "--port", str(port),
                     "--grpc-port", str(grpc_port)]) == 0
    export_mlserver(run, 0, str(folder), name="m0-scores", output="scores", port=port, grpc_port=grpc_port)
    meta = json.loads((folder / "m0" / "model-settings.json").read_text())
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    base = f"http://127.0.0.1:{port}"
    common = ["--attacks", "augmentation,noise", "--pseudo-targets", "2", "--bootstrap", "0", "--quiet"]
    with open(tmp_path / "mlserver.log", "w") as log, serving(mlserver, folder, port, log):
        x = _queries()
        expected = ModelOracle.from_run(run, 0).predict_labels(x)
        for name in ("m0", "m0-scores"):
            got = HttpOracle(f"{base}/v2/models/{name}", input_shape=(1, 8, 8), num_classes=10,
                             settings=V2).predict_labels(x)
            # float32 numpy vs torch logits differ by ~4e-7 here, the smallest top-2 margin is ~1e-5: no flips
            assert int((got != expected).sum()) == 0, f"{name}: labels differ from torch's on some of {len(x)}"
        bad = {"inputs": [{"name": "input", "shape": [1, 1, 8, 7], "datatype": "FP32", "data": [0.5] * 56}]}
        with pytest.raises(urllib.error.HTTPError) as err:
            LOOPBACK.open(urllib.request.Request(f"{base}/v2/models/m0/infer", data=json.dumps(bad).encode(),
                                                 headers={"Content-Type": "application/json"}), timeout=30)
        assert err.value.code == 400 and "FP32 of shape [B, 1, 8, 8]" in json.loads(err.value.read())["error"]
        assert cli.main(["audit", run, "--target", base, "--protocol", "v2", "--model-name", "m0", *common]) == 0
    assert cli.main(["audit", run, "--target", "model:0", *common]) == 0
    from attacks.audit import target_key

    for attack in ("augmentation", "noise"):
        a = pd.read_parquet(f"{run}/audit/{target_key(f'{base}/v2/models/m0')}/{attack}/scores.parquet")
        b = pd.read_parquet(f"{run}/audit/{target_key('model:0')}/{attack}/scores.parquet")
        assert len(a) == 120
        pd.testing.assert_frame_equal(a, b)


def test_only_flatten_linear_relu_dropout_models_export(run, tmp_path):
    from torch import nn

    model, _ = _load_run_model(run, 0)
    arrays = layer_arrays(model)
    assert arrays["layers"].tolist() == ["flatten", "linear", "relu", "linear"]
    assert arrays["weight1"].dtype == np.float32 and arrays["weight1"].shape == (32, 64)
    with pytest.raises(ConfigError, match="layer Conv2d cannot be exported"):
        layer_arrays(nn.Sequential(nn.Flatten(), nn.Conv2d(1, 2, 3)))
    with pytest.raises(ConfigError, match="--output: expected labels or scores"):
        export_mlserver(run, 0, str(tmp_path / "x"), output="probs")
    assert not (tmp_path / "x").exists()


def test_the_venv_is_made_once_and_reused_by_its_stamp(tmp_path, monkeypatch):
    import shutil
    import threading

    import mlserver_env as env

    built = []

    def build(path):  # stands in for venv + pip: what a finished build leaves
        built.append(path)
        shutil.rmtree(path, ignore_errors=True)
        (path / "bin").mkdir(parents=True)
        (path / "bin" / "mlserver").write_text("")
        (path / env.STAMP).write_text("\n".join(env.REQUIREMENTS) + "\n")

    monkeypatch.setattr(env, "_build", build)
    venv = tmp_path / "venv"
    threads = [threading.Thread(target=env.mlserver_env, args=(venv,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert env.mlserver_env(venv) == venv / "bin" / "mlserver" and len(built) == 1  # one build, under the lock
    (venv / env.STAMP).write_text("mlserver==1.6.0\n")  # another version's stamp: made again
    env.mlserver_env(venv)
    (venv / env.STAMP).unlink()  # an interrupted build (no stamp): made again
    env.mlserver_env(venv)
    assert len(built) == 3 and env.mlserver_env(venv) and len(built) == 3


@pytest.mark.system  # runs python -m venv and pip in subprocesses
def test_pip_without_any_index_is_told_apart(tmp_path, monkeypatch):
    import mlserver_env as env

    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # the environment reaches pip: no index, no local wheels
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    with pytest.raises(env.MlserverEnvError) as err:
        env.mlserver_env(tmp_path / "venv")
    assert err.value.index_unreachable and "pip install mlserver==1.7.1" in str(err.value)
    assert "\n" not in str(err.value) and not (tmp_path / "venv" / env.STAMP).exists()
