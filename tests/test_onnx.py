"""ONNX files as audit targets: a run's model exported to ONNX audits to the scores of the in-process model, a
scikit-learn classifier converted with skl2onnx audits end to end with its own `predict`'s labels, and the
answers are journaled under the file's hash."""

import numpy as np
import pandas as pd
import pytest

from attacks.audit import AuditOptions, audit_run, open_target, target_key
from attacks.oracles.model import ModelOracle
from attacks.oracles.onnx_model import OnnxOracle, export_onnx
from farm.errors import DataError
from farm.plan import load_plan
from jobs import cli

pytest.importorskip("onnxruntime")
ATTACKS = ("gap", "augmentation", "noise", "boundary")  # boundary: HopSkipJump's probes through the journaled file


@pytest.fixture(scope="module")
def run(farms):
    return farms.run(*farms.LOGITS)


@pytest.fixture(scope="module")
def members(run):  # model 0's training set
    return tuple(np.flatnonzero(load_plan(run).member[0]).tolist())


def _scores(run, target, attack):
    return pd.read_parquet(f"{run}/audit/{target_key(target)}/{attack}/scores.parquet")


def _options(members):
    return AuditOptions(attacks=ATTACKS, members=members, n_pseudo=2, bootstrap=0,
                        settings={"boundary": {"max_iter": 2, "init_evals": 8, "max_evals": 8}})


def test_a_run_model_exported_to_onnx_audits_to_the_in_process_scores(run, members, tmp_path):
    path = tmp_path / "model-0.onnx"
    export_onnx(run, 0, path)
    x = load_plan(run).dataset.x[:50]
    np.testing.assert_array_equal(OnnxOracle(path, input_shape=x.shape[1:]).predict_labels(x),
                                  ModelOracle.from_run(run, 0).predict_labels(x))
    direct = {r["attack"]: r for r in audit_run(run, open_target(run, "model:0")[0], target="model:0",
                                                options=_options(members), progress=False)}
    oracle, name = open_target(run, str(path))
    assert name == str(path) and oracle.identity()["format"] == "onnx"
    onnx = {r["attack"]: r for r in audit_run(run, oracle, target=name, options=_options(members), progress=False)}
    for attack in ATTACKS:
        np.testing.assert_array_equal(_scores(run, name, attack)["score"], _scores(run, "model:0", attack)["score"])
        assert onnx[attack]["auc"] == direct[attack]["auc"]
    assert len(oracle.journal) == oracle.queries_used > 0 and oracle.journal_hits > 0
    again, _ = open_target(run, str(path))  # a re-run asks only the 64 re-checked rows
    audit_run(run, again, target=name, options=_options(members), progress=False)
    assert again.queries_used == again.rechecked == 64  # HopSkipJump asks the same probes again: all journaled


def test_a_scikit_learn_classifier_audits_end_to_end_with_its_own_labels(run, members, tmp_path, capsys):
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.linear_model import LogisticRegression

    data = load_plan(run).dataset
    x, y = data.x.reshape(len(data.x), -1), np.asarray(data.y)
    member = np.zeros(len(x), bool)
    member[list(members)] = True
    classifier = LogisticRegression(max_iter=300).fit(x[member], y[member])
    path = tmp_path / "logistic.onnx"
    path.write_bytes(skl2onnx.to_onnx(classifier, x[:1], target_opset=17).SerializeToString())
    oracle = OnnxOracle(path, input_shape=data.x.shape[1:], num_classes=10)
    np.testing.assert_array_equal(oracle.predict_labels(data.x), classifier.predict(x))
    (tmp_path / "members.txt").write_text("\n".join(map(str, members)))
    capsys.readouterr()
    assert cli.main(["audit", run, "--target", str(path), "--members", str(tmp_path / "members.txt"),
                     "--attacks", ",".join(ATTACKS[:3]), "--pseudo-targets", "2", "--bootstrap", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"target {path}: " in out and all(f"\n{attack} " in out for attack in ATTACKS[:3])
    scores = _scores(run, str(path), "gap")
    correct = classifier.predict(x)[scores["example_id"]] == y[scores["example_id"]]
    np.testing.assert_array_equal(scores["score"], correct.astype(float))  # gap: 1 where its label is correct


def test_onnx_inputs_are_checked_against_the_run(tmp_path):
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.tree import DecisionTreeClassifier

    x = np.random.default_rng(0).random((20, 5)).astype(np.float32)
    path = tmp_path / "tree.onnx"
    path.write_bytes(skl2onnx.to_onnx(DecisionTreeClassifier().fit(x, np.arange(20) % 3), x[:1]).SerializeToString())
    with pytest.raises(DataError, match=r"input 'X' tensor\(float\) \['\?', 5\] does not fit: the run's inputs are "
                                        r"float32 \[B, 1, 8, 8\]"):
        OnnxOracle(path, input_shape=(1, 8, 8))
    assert OnnxOracle(path, input_shape=(5,)).predict_labels(x).shape == (20,)
    with pytest.raises(DataError, match="file not found"):
        OnnxOracle(tmp_path / "none.onnx", input_shape=(5,))
