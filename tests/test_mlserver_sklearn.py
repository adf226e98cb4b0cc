"""A runtime that is not ours: MLServer's own scikit-learn runtime (mlserver-sklearn 1.7.1, `predict` -> INT64
labels) serves a random forest trained on a tiny farm's data, and `shadowfarm audit` challenges it with the run's
torch shadows over the Open Inference Protocol, REST and gRPC. The same MLServer serves a model of the run with
our runtime (attacks.oracles.mlserver_runtime) for gRPC against the in-process audit.

Checked: the answers over REST and over gRPC equal the forest's `predict`; the audits over REST, over gRPC and of
the same forest under a name whose metadata declares no inputs (the run's shape sent as FP32, said in a note)
give the same scores; model 0 over gRPC gives the scores of `model:0`; a wrong model name and a declared shape
that is not the run's are one line and exit 2. Loopback only; the test starts and stops the server.
"""

import json

import joblib
import numpy as np
import pandas as pd
import pytest
from mlserver_serving import free_ports, mlserver_or_skip, serving
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from attacks.audit import target_key
from attacks.oracles.grpc_client import GrpcOracle
from attacks.oracles.http_client import HttpOracle, HttpSettings
from attacks.oracles.mlserver_export import export_mlserver
from farm.plan import load_plan
from jobs import cli

ATTACKS = ("gap", "noise", "augmentation")
COMMON = ["--attacks", ",".join(ATTACKS), "--pseudo-targets", "2", "--bootstrap", "0", "--quiet"]


def _sklearn_model(folder, name: str, estimator, inputs: list | None) -> None:
    """`estimator` pickled with joblib as MLServer model `name`, served by mlserver_sklearn.SKLearnModel."""
    (folder / name).mkdir(parents=True)
    joblib.dump(estimator, folder / name / "model.joblib")
    settings = {"name": name, "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "1"}, **({"inputs": inputs} if inputs else {})}
    (folder / name / "model-settings.json").write_text(json.dumps(settings))


def _scores(run: str, target: str, attack: str) -> pd.DataFrame:
    return pd.read_parquet(f"{run}/audit/{target_key(target)}/{attack}/scores.parquet")


def _forest_folder(run: str, folder, port: int, grpc_port: int) -> tuple[np.ndarray, object]:
    """The MLServer folder: model 0 of `run` (our runtime) and a forest on model 0's training examples, as `forest`
    (inputs declared flat: FP32 [-1, 64]), `forest-bare` (no inputs declared; a pipeline that flattens first) and
    `forest-narrow` (declared [-1, 63]); (the forest's members, the forest)."""
    export_mlserver(run, 0, str(folder), name="m0", port=port, grpc_port=grpc_port)
    plan = load_plan(run)
    x, y = plan.dataset.x.reshape(len(plan.dataset.x), -1), plan.dataset.y
    members = np.flatnonzero(plan.member[0])
    forest = RandomForestClassifier(n_estimators=25, random_state=0).fit(x[members], y[members])
    flatten = make_pipeline(FunctionTransformer(np.reshape, kw_args={"shape": (-1, x.shape[1])}), forest)
    _sklearn_model(folder, "forest", forest, [{"name": "input-0", "datatype": "FP32", "shape": [-1, x.shape[1]]}])
    _sklearn_model(folder, "forest-bare", flatten, None)
    _sklearn_model(folder, "forest-narrow", forest, [{"name": "input-0", "datatype": "FP32", "shape": [-1, 63]}])
    return members, forest


@pytest.mark.system
def test_mlservers_own_sklearn_runtime_audits_over_rest_and_grpc(farms, tmp_path, capsys):
    mlserver = mlserver_or_skip()
    run = farms.run(*farms.LOGITS)
    port, grpc_port = free_ports(2)
    members, forest = _forest_folder(run, tmp_path / "mlserver", port, grpc_port)
    (tmp_path / "members.txt").write_text("\n".join(map(str, members)))
    rest, grpc_base = f"http://127.0.0.1:{port}", f"grpc://127.0.0.1:{grpc_port}"
    x = load_plan(run).dataset.x.astype(np.float32)
    noisy = np.concatenate([x, x + np.random.default_rng(0).normal(0, 0.3, size=x.shape).astype(np.float32)])
    with open(tmp_path / "mlserver.log", "w") as log, serving(mlserver, tmp_path / "mlserver", port, log):
        expected = forest.predict(noisy.reshape(len(noisy), -1))
        over = {kind: cls(f"{base}/v2/models/forest", input_shape=(1, 8, 8), num_classes=10,
                          settings=HttpSettings(protocol=kind, retries=0)).predict_labels(noisy)
                for kind, cls, base in (("v2", HttpOracle, rest), ("v2-grpc", GrpcOracle, grpc_base))}
        np.testing.assert_array_equal(over["v2"], expected)
        np.testing.assert_array_equal(over["v2-grpc"], expected)
        for protocol, base, name in (("v2", rest, "forest"), ("v2-grpc", grpc_base, "forest"),
                                     ("v2", rest, "forest-bare"), ("v2-grpc", grpc_base, "m0")):
            capsys.readouterr()
            assert cli.main(["audit", run, "--target", base, "--protocol", protocol, "--model-name", name,
                             "--members", str(tmp_path / "members.txt"), *COMMON]) == 0
            assert ("declares no inputs" in capsys.readouterr().out) == (name == "forest-bare")
        for name, message in (("nope", "ModelMetadata NOT_FOUND"), ("forest-narrow", "has shape [-1, 63]")):
            assert cli.main(["audit", run, "--target", grpc_base, "--protocol", "v2-grpc", "--model-name", name,
                             "--retries", "0", *COMMON]) == 2
            err = capsys.readouterr().err.strip()
            assert message in err and "\n" not in err
    assert cli.main(["audit", run, "--target", "model:0", "--members", str(tmp_path / "members.txt"), *COMMON]) == 0
    for attack in ATTACKS:
        reference = _scores(run, f"{rest}/v2/models/forest", attack)
        assert len(reference) == 120 and reference["score"].std() > 0
        for other in (f"{grpc_base}/v2/models/forest", f"{rest}/v2/models/forest-bare"):
            pd.testing.assert_frame_equal(_scores(run, other, attack), reference)
        pd.testing.assert_frame_equal(_scores(run, f"{grpc_base}/v2/models/m0", attack),
                                      _scores(run, "model:0", attack))
