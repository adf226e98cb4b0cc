"""Label oracles: same labels as the model, exact query counting, budgets, TorchScript, no logits."""

import io
import threading

import numpy as np
import pytest
import torch

from attacks.oracles.base import CountingOracle, LabelOracle, QueryBudgetExceeded
from attacks.oracles.model import ModelOracle, TorchScriptOracle, export_torchscript
from farm.config import config_hash, load_config, to_dict
from farm.data import DatasetInfo
from farm.errors import DataError, RunError
from farm.models import build_model
from farm.shards import RUN_JSON, model_dir
from farm.storage import RunDir

SHAPE = (1, 8, 8)


@pytest.fixture
def run_with_model(tmp_path):
    """A hand-made run: run.json for digits and the weights of model 0 (no data loaded, no Ray)."""
    cfg = load_config(None, ["model.hidden=[8]"])
    run = RunDir(str(tmp_path / "run"))
    run.write_json(RUN_JSON, {
        "config": to_dict(cfg), "config_hash": config_hash(cfg),
        "dataset": {"name": "digits", "kind": "image", "shape": list(SHAPE), "num_classes": 10, "n_examples": 20},
    })
    torch.manual_seed(1234)
    model = build_model(cfg.model, info=DatasetInfo(name="digits", kind="image", shape=SHAPE, num_classes=10)).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    run.write_bytes(f"{model_dir(0)}/weights.pt", buffer.getvalue())
    return run, model


def _batch(n, seed=0):
    return np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)


def _argmax(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).argmax(1).numpy()


def test_from_run_matches_in_memory_model(run_with_model):
    run, model = run_with_model
    x = _batch(200)
    expected = _argmax(model, x)
    assert len(np.unique(expected)) > 1  # a non-degenerate check
    for oracle in (ModelOracle.from_run(run, 0, batch_size=7), ModelOracle.from_run(run.uri, 0)):
        labels = oracle.predict_labels(x)
        assert labels.dtype == np.int64 and labels.shape == (200,)
        np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(ModelOracle(model).predict_labels(torch.from_numpy(x)), expected)


def test_counts_every_example(run_with_model):
    oracle = ModelOracle.from_run(run_with_model[0], 0)
    oracle.predict_labels(_batch(5))
    oracle.predict_labels(_batch(7))
    assert oracle.queries_used == 12 and oracle.remaining is None
    assert oracle.predict_labels(_batch(0)).shape == (0,) and oracle.queries_used == 12
    oracle.reset_count()
    assert oracle.queries_used == 0


def test_budget_is_checked_before_spending(run_with_model):
    oracle = ModelOracle.from_run(run_with_model[0], 0, budget=10)
    oracle.predict_labels(_batch(6))
    with pytest.raises(QueryBudgetExceeded, match="budget of 10.*6|6.*budget of 10"):
        oracle.predict_labels(_batch(5))
    assert oracle.queries_used == 6 and oracle.remaining == 4
    oracle.predict_labels(_batch(4))  # exactly the budget
    assert oracle.queries_used == 10 and oracle.remaining == 0
    with pytest.raises(QueryBudgetExceeded):
        oracle.predict_labels(_batch(1))
    assert oracle.queries_used == 10


def test_wrong_shape_is_rejected_without_spending(run_with_model):
    oracle = ModelOracle.from_run(run_with_model[0], 0, budget=100)
    with pytest.raises(DataError, match="1, 8, 8"):
        oracle.predict_labels(np.zeros((3, 64), dtype=np.float32))
    assert oracle.queries_used == 0


def test_torchscript_export_gives_identical_labels(run_with_model, tmp_path):
    run, model = run_with_model
    path = tmp_path / "target.pt"
    export_torchscript(run, 0, path)
    oracle = TorchScriptOracle(path, budget=1000, batch_size=64)
    x = _batch(300, seed=3)
    np.testing.assert_array_equal(oracle.predict_labels(x), _argmax(model, x))
    np.testing.assert_array_equal(oracle.predict_labels(x[:1]), _argmax(model, x[:1]))
    assert oracle.queries_used == 301


def test_torchscript_bad_files_name_the_file(tmp_path, run_with_model):
    missing = tmp_path / "nope.pt"
    with pytest.raises(DataError, match="nope.pt") as info:
        TorchScriptOracle(missing)
    assert "\n" not in str(info.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    with pytest.raises(DataError, match="garbage.pt.*not a TorchScript") as info:
        TorchScriptOracle(garbage)
    assert "\n" not in str(info.value)
    state_dict = tmp_path / "weights.pt"  # a zip written by torch.save, but not TorchScript
    state_dict.write_bytes(run_with_model[0].read_bytes(f"{model_dir(0)}/weights.pt"))
    with pytest.raises(DataError, match="weights.pt.*not a TorchScript"):
        TorchScriptOracle(state_dict)


def test_run_errors_name_the_file(tmp_path, run_with_model):
    with pytest.raises(RunError, match="run.json"):
        ModelOracle.from_run(str(tmp_path / "empty"), 0)
    with pytest.raises(RunError, match="model_id=00003/weights.pt"):
        ModelOracle.from_run(run_with_model[0], 3)


def test_oracles_are_label_only(run_with_model, tmp_path):
    run, _ = run_with_model
    export_torchscript(run, 0, tmp_path / "target.pt")
    for oracle in (ModelOracle.from_run(run, 0), TorchScriptOracle(tmp_path / "target.pt")):
        assert isinstance(oracle, LabelOracle) and isinstance(oracle, CountingOracle)
        assert not [name for name in dir(oracle) if "logit" in name.lower()]


def test_counter_is_thread_safe(run_with_model):
    oracle = ModelOracle.from_run(run_with_model[0], 0)
    x = _batch(3)

    def worker():
        for _ in range(50):
            oracle.predict_labels(x)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert oracle.queries_used == 1200


def test_budget_holds_under_concurrency(run_with_model):
    oracle = ModelOracle.from_run(run_with_model[0], 0, budget=100)
    refused = []

    def worker():
        for _ in range(20):
            try:
                oracle.predict_labels(_batch(3))
            except QueryBudgetExceeded:
                refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert oracle.queries_used == 99 and len(refused) == 8 * 20 - 33
