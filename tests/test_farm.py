"""The farm end to end on a local Ray: layout, determinism, resume, verify."""

import json
import os

import pandas as pd
import pytest

from farm.config import load_config
from farm.driver import train_farm
from farm.errors import RunError
from farm.plan import load_plan, plan_run
from farm.shards import membership_matrix, model_dir
from farm.storage import RunDir
from farm.verify import verify_plan
from jobs import cli

TINY = ["data.subsample=120", "membership.n_models=4", "train.epochs=2", "farm.group_size=2",
        "model.hidden=[16]", "queries=[clean, {kind: translate, d: 1}, {kind: gaussian, sigma: 0.1, n: 3}]"]


def _train(out, extra=()):
    plan = plan_run(load_config(None, TINY + list(extra)), str(out))
    return plan, train_farm(plan, progress=False)


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("farm") / "run"
    plan, trained_now = _train(out)
    return out, plan, trained_now


def test_layout_matches_design(trained):
    out, plan, trained_now = trained
    assert trained_now == [0, 1, 2, 3]
    assert {p.name for p in out.iterdir()} == {"run.json", "membership.parquet", "queries.parquet", "models",
                                               ".writer.lock"}  # the writer lock's file (farm.lock) stays
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["config_hash"] == plan.config_hash and "torch" in run_json["versions"]
    for m in range(4):
        d = out / model_dir(m)
        assert {p.name for p in d.iterdir()} == {"weights.pt", "metrics.json", "responses.parquet", "_SUCCESS"}
        assert (d / "_SUCCESS").read_text().splitlines()[0] == plan.config_hash  # then the files' sha256 and sizes
        metrics = json.loads((d / "metrics.json").read_text())
        assert {"train_accuracy", "test_accuracy", "train_loss", "test_loss", "epochs", "seconds"} <= set(metrics)
    frame = pd.read_parquet(out / model_dir(0) / "responses.parquet")
    assert len(frame) == 120 and len(frame["pred"][0]) == 1 + 5 + 3 and len(frame["logits"][0]) == 10
    queries = pd.read_parquet(out / "queries.parquet")
    assert list(queries["kind"]) == ["clean"] + ["translate"] * 5 + ["gaussian"] * 3
    member, _ = membership_matrix(RunDir(str(out)).read_table("membership.parquet"))
    assert (member.sum(0) == 2).all()
    assert verify_plan(load_plan(str(out))) == []


def test_rerun_trains_nothing_and_resume_trains_only_missing(trained):
    out, _, _ = trained
    before = {m: os.stat(out / model_dir(m) / "weights.pt").st_mtime_ns for m in range(4)}
    _, trained_now = _train(out)
    assert trained_now == []
    # an interrupted run: model 1 never finished, model 2 died before _SUCCESS
    RunDir(str(out)).delete(model_dir(1))
    (out / model_dir(2) / "_SUCCESS").unlink()
    _, trained_now = _train(out)
    assert trained_now == [1, 2]
    assert all(os.stat(out / model_dir(m) / "weights.pt").st_mtime_ns == before[m] for m in (0, 3))
    assert verify_plan(load_plan(str(out))) == []


def test_verify_names_bad_files(trained, tmp_path, capsys):
    out, _, _ = trained
    broken = tmp_path / "broken"
    os.system(f"cp -r {out} {broken}")
    shard = broken / model_dir(3) / "responses.parquet"
    shard.write_bytes(shard.read_bytes()[:100])
    (broken / model_dir(1) / "_SUCCESS").write_text("0000\n")
    assert cli.main(["verify", str(broken)]) == 1
    printed = capsys.readouterr().out
    assert "model_id=00003/responses.parquet" in printed and "model_id=00001/_SUCCESS" in printed
    assert cli.main(["verify", str(out)]) == 0


def test_foreign_run_directory_is_refused(trained):
    out, _, _ = trained
    with pytest.raises(RunError, match="another config"):
        _train(out, ["train.epochs=3"])
