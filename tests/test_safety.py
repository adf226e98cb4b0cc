"""Safety: nothing a user did not produce is unpickled, and secrets never reach a run's files or output.

- Weights load with torch.load(weights_only=True) everywhere; a weights.pt holding a pickled object is
  refused without running it. Data files are never unpickled (np.load(allow_pickle=False)).
- A run URI carrying credentials is refused without echoing them (farm/storage.py); credentials in the
  environment (AWS_SECRET_ACCESS_KEY, a bearer-token variable) never appear in run.json, metrics, scores,
  the report or the command's output: run.json records the config, dataset, versions and git sha only.
"""

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from attacks.oracles.model import ModelOracle
from farm.config import DataConfig, config_hash, load_config, to_dict
from farm.data import DatasetInfo, load_dataset
from farm.errors import DataError, RunError
from farm.models import build_model
from farm.shards import RUN_JSON, load_weights, model_dir
from farm.storage import RunDir
from jobs import cli

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for package in ("farm", "attacks", "jobs") for p in (ROOT / package).rglob("*.py"))
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-EXAMPLEKEY"
TOKEN = "sf-bearer-5f1c9d0e7a2b4c68"


class _WritesAFile:
    """A pickle payload: unpickling it calls open(path, "w"), creating the file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _call_text(source: str, start: int) -> str:
    """The text of the call whose '(' is at `start`, up to its matching ')'."""
    depth = 0
    for i in range(start, len(source)):
        depth += {"(": 1, ")": -1}.get(source[i], 0)
        if depth == 0:
            return source[start : i + 1]
    return source[start:]


def test_every_torch_load_is_weights_only_and_nothing_is_unpickled():
    assert SOURCES
    for path in SOURCES:
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            call = _call_text(text, match.end() - 1)
            assert "weights_only=True" in call, f"{path.relative_to(ROOT)}: {call}"
        for unsafe in ("pickle.load", "pickle.loads", "read_pickle", "joblib.load", "allow_pickle=True",
                       "weights_only=False", "cloudpickle.load", "dill.load", "shelve.open"):
            assert unsafe not in text, f"{path.relative_to(ROOT)}: {unsafe}"


@pytest.fixture
def run_with_weights(tmp_path):
    """A hand-made run (run.json + model 0's weights.pt), no data loaded, no Ray."""
    cfg = load_config(None, ["model.hidden=[8]"])
    run = RunDir(str(tmp_path / "run"))
    run.write_json(RUN_JSON, {
        "config": to_dict(cfg), "config_hash": config_hash(cfg),
        "dataset": {"name": "digits", "kind": "image", "shape": [1, 8, 8], "num_classes": 10, "n_examples": 20},
    })
    model = build_model(cfg.model, info=DatasetInfo(name="digits", kind="image", shape=(1, 8, 8), num_classes=10))
    return run, model.state_dict()


def _write_weights(run: RunDir, obj) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    run.write_bytes(f"{model_dir(0)}/weights.pt", buffer.getvalue())


def test_a_state_dict_loads(run_with_weights):
    run, state = run_with_weights
    _write_weights(run, state)
    assert all(torch.equal(v, state[k]) for k, v in load_weights(run, 0).items())
    assert ModelOracle.from_run(run, 0).predict_labels(np.zeros((2, 1, 8, 8), np.float32)).shape == (2,)


def test_weights_holding_a_pickled_object_are_refused_without_running_it(run_with_weights, tmp_path):
    run, state = run_with_weights
    marker = tmp_path / "written-by-the-payload"
    _write_weights(run, {**state, "extra": _WritesAFile(marker)})
    with pytest.raises(RunError, match=r"weights.pt: refused: it holds a pickled io.open") as info:
        load_weights(run, 0)
    assert "\n" not in str(info.value)
    with pytest.raises(Exception):  # noqa: B017 - whatever the type, it must not load
        ModelOracle.from_run(run, 0)
    assert not marker.exists()


def test_refused_weights_are_a_one_line_error_naming_the_file(run_with_weights, tmp_path):
    run, state = run_with_weights
    _write_weights(run, {**state, "extra": _WritesAFile(tmp_path / "marker")})
    with pytest.raises(RunError, match=r"model_id=00000/weights\.pt") as info:
        ModelOracle.from_run(run, 0)
    assert "\n" not in str(info.value)


def test_an_npz_holding_pickled_objects_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "written-by-the-payload"
    x = np.empty((4, 1), dtype=object)
    x[:, 0] = [_WritesAFile(marker)] * 4
    with open(tmp_path / "evil.npz", "wb") as f:
        np.savez(f, x=x, y=np.arange(4) % 2)
    with pytest.raises(DataError, match="evil.npz: array 'x' holds Python objects"):
        load_dataset(DataConfig(name="npz", path=str(tmp_path / "evil.npz")), seed=0)
    assert not marker.exists()


@pytest.mark.parametrize("uri", [
    f"s3://AKIAIOSFODNN7EXAMPLE:{SECRET}@bucket/run",
    f"s3://bucket/run?access_key=AKIAIOSFODNN7EXAMPLE&secret_key={SECRET}",
    f"s3://bucket/run?session_token={SECRET}",
    f"gs://bucket/run?credentials={SECRET}",
])
def test_a_run_uri_with_credentials_is_refused_without_echoing_them(uri, capsys):
    with pytest.raises(RunError, match="credentials in a run URI") as info:
        RunDir(uri)
    assert SECRET not in str(info.value)
    assert cli.main(["verify", uri]) == 2
    err = capsys.readouterr().err
    assert "credentials in a run URI" in err and SECRET not in err


@pytest.mark.system  # jobs end to end through the CLI: train and attack, every file and line read
def test_environment_secrets_never_reach_the_run_or_the_output(ray_local, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("SHADOWFARM_TARGET_TOKEN", TOKEN)
    out = tmp_path / "run"
    tiny = ["data.subsample=60", "membership.n_models=6", "train.epochs=1", "farm.group_size=3", "model.hidden=[8]",
            "queries=[clean]"]
    args = [a for item in tiny for a in ("--set", item)]
    assert cli.main(["train", "quickstart", *args, "--out", str(out), "--quiet"]) == 0
    assert cli.main(["attack", str(out), "--attacks", "gap,loss", "--pseudo-targets", "2", "--bootstrap", "0",
                     "--quiet"]) == 0
    printed = capsys.readouterr()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"run.json", "metrics.json", "scores.parquet", "index.html"} <= {p.name for p in files}
    for secret in (SECRET, TOKEN, "AKIAIOSFODNN7EXAMPLE"):
        assert secret not in printed.out and secret not in printed.err
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
    saved = RunDir(str(out)).read_json(RUN_JSON)
    assert "environ" not in saved and "env" not in saved and "environment" not in saved
