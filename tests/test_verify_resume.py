"""Issue 9: corrupt or foreign files are named by `shadowfarm verify` (one line per problem, exit 1) and
redone by re-running `train`, which leaves valid models alone; a run of another config is refused."""

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from farm.config import load_config
from farm.driver import train_farm
from farm.plan import plan_run
from farm.shards import MEMBERSHIP, model_dir
from jobs import cli
from jobs.common import resolve_config

TINY = ["data.subsample=120", "membership.n_models=4", "train.epochs=2", "farm.group_size=2", "model.hidden=[16]",
        "queries=[clean, {kind: translate, d: 1}]"]


def _train(out, extra=()):
    plan = plan_run(load_config(resolve_config("quickstart"), TINY + list(extra)), str(out))
    return train_farm(plan, progress=False)


@pytest.fixture(scope="module")
def runs(farms):
    """A finished run of `train quickstart` with TINY's overrides, and one of another seed (its shards are foreign
    to the first): the session's, read only (each test damages a copy of its own)."""
    return Path(farms.shared(*TINY, config="quickstart")), Path(farms.shared(*TINY, "seed=1", config="quickstart"))


def _verify(run, capsys) -> tuple[int, list[str]]:
    code = cli.main(["verify", str(run)])
    return code, capsys.readouterr().out.splitlines()


def _mtimes(directory):
    return {p.relative_to(directory): p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}


def test_verify_names_bad_files_and_train_redoes_only_them(runs, tmp_path, capsys):
    good, other = runs
    run = tmp_path / "run"
    shutil.copytree(good, run)
    responses = run / model_dir(1) / "responses.parquet"
    responses.write_bytes(responses.read_bytes()[: responses.stat().st_size // 2])  # truncated
    shutil.rmtree(run / model_dir(2))
    shutil.copytree(other / model_dir(2), run / model_dir(2))  # a shard of another config
    (run / model_dir(3) / "_SUCCESS").unlink()  # died before _SUCCESS
    (run / MEMBERSHIP).write_bytes(b"not parquet")
    untouched = _mtimes(run / model_dir(0))

    code, lines = _verify(run, capsys)
    assert code == 1
    named = lambda part: [line for line in lines if part in line]  # noqa: E731
    truncated = named("model_id=00001/responses.parquet")
    assert len(truncated) == 2 and "_SUCCESS records" in truncated[0] and "unreadable" in truncated[1]
    assert "another config" in named("model_id=00002/_SUCCESS")[0]
    assert "labels differ" in named("model_id=00002/responses.parquet")[0]  # another seed: other examples
    assert named("model_id=00003/_SUCCESS") == [f"{run / model_dir(3)}/_SUCCESS: missing (model not finished)"]
    assert "membership.parquet: unreadable" in named(MEMBERSHIP)[0]
    assert not named("model_id=00000")
    assert all(line.startswith(str(run)) for line in lines)  # every line names a file

    assert _train(run) == [1, 2, 3]
    assert _mtimes(run / model_dir(0)) == untouched
    assert (run / MEMBERSHIP).read_bytes() == (good / MEMBERSHIP).read_bytes()
    for m in (1, 2, 3):
        assert sorted(os.listdir(run / model_dir(m))) == ["_SUCCESS", "metrics.json", "responses.parquet",
                                                          "weights.pt"]
        # the same labels as before the damage (other groups: logits may differ in the last bits)
        ours, theirs = (pd.read_parquet(r / model_dir(m) / "responses.parquet") for r in (run, good))
        assert np.array_equal(np.stack(ours["pred"]), np.stack(theirs["pred"]))
    assert _verify(run, capsys) == (0, [f"{run}: ok"])


def test_verify_names_a_model_the_run_does_not_have(runs, tmp_path, capsys):
    good, _ = runs
    run = tmp_path / "run"
    shutil.copytree(good, run)
    shutil.copytree(run / model_dir(0), run / model_dir(7))
    code, lines = _verify(run, capsys)
    assert code == 1 and lines == [f"{run / model_dir(7)}: not a model of this run (4 models)"]


def test_a_run_of_another_config_is_refused_and_new_run_moves_it_aside(runs, tmp_path, capsys):
    good, _ = runs
    run = tmp_path / "run"
    shutil.copytree(good, run)
    before = _mtimes(run)
    args = ["train", "quickstart", *[a for item in TINY for a in ("--set", item)], "--out", str(run), "--quiet"]
    assert cli.main([*args, "--new-run"]) == 0  # the same config: --new-run resumes, moves nothing
    assert '"trained_now": 0' in capsys.readouterr().out and _mtimes(run) == before
    other = [*args, "--set", "train.epochs=3"]
    assert cli.main(other) == 2
    err = capsys.readouterr().err
    assert "created with another config" in err and f"mv {run} {run}.old" in err
    assert _mtimes(run) == before  # refused without touching anything
    assert cli.main([*other, "--new-run"]) == 0
    out = capsys.readouterr().out
    (moved,) = tmp_path.glob("run.old-*")
    assert f"moved the run of another config aside: {moved}" in out and '"trained_now": 4' in out
    assert _mtimes(moved) == before  # the old run, whole and untouched
    assert cli.main(["verify", str(run)]) == 0
