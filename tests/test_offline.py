"""Audits of a model the auditor cannot call: the queries exported, answered by the model's owner with pandas,
read back; the same scores as the online audit, bit for bit; bad answers one line, exit 2, the journal intact."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attacks.audit import open_target, target_key
from attacks.oracles.model import ModelOracle
from farm.plan import load_plan
from jobs import cli

ATTACKS = "gap,augmentation,noise,calibrated,transfer"
COMMON = ["--attacks", ATTACKS, "--pseudo-targets", "2", "--bootstrap", "0", "--quiet"]


@pytest.fixture(scope="module")
def run(farms):
    return farms.run(*farms.LOGITS)


@pytest.fixture(scope="module")
def members_file(run, tmp_path_factory):
    path = tmp_path_factory.mktemp("members") / "members.txt"
    path.write_text("\n".join(map(str, np.flatnonzero(load_plan(run).member[0]))))
    return str(path)


def owner_answers(folder: Path, model) -> pd.DataFrame:
    """What the model's owner runs (docs/audit.md): the queries in, one label per query id out."""
    manifest = json.loads((folder / "manifest.json").read_text())
    queries = pd.read_parquet(folder / "queries.parquet")
    x = np.stack(queries["input"].to_numpy()).reshape(-1, *manifest["input"]["shape"]).astype(np.float32)
    return pd.DataFrame({"query_id": queries["query_id"], "label": model.predict_labels(x)})


@pytest.fixture(scope="module")
def exported(run, members_file, tmp_path_factory):
    """(folder, answers of model 0) of an export of the audit of ATTACKS, answered and written as answers.parquet."""
    folder = tmp_path_factory.mktemp("export")
    assert cli.main(["audit", run, "--export-queries", str(folder), *COMMON]) == 0
    answers = owner_answers(folder, ModelOracle.from_run(run, 0))
    answers.to_parquet(folder / "answers.parquet")
    return folder, answers


def _scores(run, target, attack):
    return pd.read_parquet(f"{run}/audit/{target_key(target)}/{attack}/scores.parquet")


def test_exported_queries_answered_offline_give_the_online_scores_bit_for_bit(run, members_file, exported, capsys):
    folder, answers = exported
    manifest = json.loads((folder / "manifest.json").read_text())
    queries = pd.read_parquet(folder / "queries.parquet")
    assert manifest["count"] == len(queries) == len(answers)
    assert queries["query_id"].tolist() == list(range(len(queries)))
    assert manifest["run_hash"] == load_plan(run).config_hash and manifest["input"]["shape"] == [1, 8, 8]
    assert set(queries["example_id"]) == set(range(120))  # every example, each distinct input once
    assert cli.main(["audit", run, "--target", "model:0", "--members", members_file, *COMMON]) == 0
    online = capsys.readouterr().out
    assert cli.main(["audit", run, "--answers", str(folder / "answers.parquet"), "--members", members_file,
                     *COMMON]) == 0
    offline = capsys.readouterr().out
    name = f"answers:{manifest['export_id']}"
    assert f"target {name}: 0 queries used (budget: none, " in offline
    assert f"{len(answers)} of {len(answers)} answers from {folder / 'answers.parquet'} added" in offline
    for attack in ATTACKS.split(","):
        a, b = _scores(run, name, attack), _scores(run, "model:0", attack)
        np.testing.assert_array_equal(a["score"], b["score"])
        assert a["example_id"].tolist() == b["example_id"].tolist() and a["member"].tolist() == b["member"].tolist()
    assert online.split("\nthresholds chosen")[0] == offline.split("\nthresholds chosen")[0].split("\n", 1)[1]


def test_answers_go_to_the_journal_of_the_target_so_an_online_audit_asks_none_again(run, exported, tmp_path):
    pytest.importorskip("onnxruntime")
    from attacks.oracles.onnx_model import export_onnx

    folder, _ = exported
    path = tmp_path / "model-0.onnx"
    export_onnx(run, 0, path)
    assert cli.main(["audit", run, "--answers", str(folder / "answers.parquet"), "--target", str(path), *COMMON]) == 0
    oracle, _ = open_target(run, str(path))
    assert len(oracle.journal) == json.loads((folder / "manifest.json").read_text())["count"]
    assert cli.main(["audit", run, "--target", str(path), *COMMON]) == 0
    again, _ = open_target(run, str(path))
    assert len(again.journal) == len(oracle.journal)  # the online audit found every answer there
    saved = json.loads((Path(run) / "audit" / target_key(str(path)) / "target.json").read_text())
    assert saved["queries_used"] == 64 and saved["journal_hits"] > len(oracle.journal)  # only the re-checked rows


def test_answers_put_in_a_served_model_s_journal_leave_the_online_audit_only_the_recheck(run, exported):
    from attacks.oracles.server import LabelServer

    folder, _ = exported
    server = LabelServer(ModelOracle.from_run(run, 0), path="/offline/predict").start()
    try:
        assert cli.main(["audit", run, "--answers", str(folder / "answers.parquet"), "--target", server.url,
                         *COMMON]) == 0
        assert server.stats()["inputs_answered"] == 0  # the answers came from the file
        assert cli.main(["audit", run, "--target", server.url, *COMMON]) == 0
        assert server.stats()["inputs_answered"] == 64  # the re-check of the journal, nothing else
    finally:
        server.stop()


def _snapshot(run):
    root = Path(run) / "audit"
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _bad_cases(answers: pd.DataFrame, manifest: dict) -> dict:
    """name -> (answers or raw bytes, manifest, part of the one error line)."""
    duplicated = pd.concat([answers, answers.iloc[[5]]]).reset_index(drop=True)
    out_of_range = answers.copy()
    out_of_range.loc[7, "label"] = 10
    changed = answers.copy()
    changed.loc[3, "label"] = (changed.loc[3, "label"] + 1) % 10
    return {
        "missing": (answers.drop(index=11), manifest, f"query id 11 has no answer (1 of {len(answers)} unanswered)"),
        "duplicated": (duplicated, manifest, f"row {len(answers)}: query id 5 answered again (first at row 5)"),
        "label-out-of-range": (out_of_range, manifest, "row 7: label 10 of query id 7 is not in [0, 10)"),
        "foreign-manifest": (answers, {**manifest, "run_hash": "0123456789abcdef"}, "exported from another run"),
        "other-inputs": (answers, {**manifest, "export_id": "0123456789abcdef"}, "other inputs than this audit asks"),
        "corrupted": (b"PAR1 not really", manifest, "not a Parquet file of answers"),
        "no-label-column": (answers.rename(columns={"label": "class"}), manifest, "no column 'label'"),
        "differs-from-the-journal": (changed, manifest, "row 3: query id 3 answered"),
    }


def test_bad_answers_are_one_line_exit_2_and_leave_the_journal_intact(run, exported, tmp_path, capsys):
    folder, answers = exported
    manifest = json.loads((folder / "manifest.json").read_text())
    assert cli.main(["audit", run, "--answers", str(folder / "answers.parquet"), *COMMON]) == 0  # a journal to keep
    before = _snapshot(run)
    for name, (given, given_manifest, expected) in _bad_cases(answers, manifest).items():
        case = tmp_path / name
        case.mkdir()
        (case / "manifest.json").write_text(json.dumps(given_manifest))
        if isinstance(given, bytes):
            (case / "answers.parquet").write_bytes(given)
        else:
            given.to_parquet(case / "answers.parquet")
        capsys.readouterr()
        assert cli.main(["audit", run, "--answers", str(case / "answers.parquet"), *COMMON]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("shadowfarm: error: ") and err.count("\n") == 1 and expected in err, (name, err)
        assert _snapshot(run) == before, name
    assert cli.main(["audit", run, "--answers", str(folder / "answers.parquet"), "--target", "model:0", *COMMON]) == 2
    assert "--target model:0 with --answers: it keeps no journal" in capsys.readouterr().err
    assert _snapshot(run) == before


def test_adaptive_attacks_are_refused_without_a_target_to_call(run, tmp_path, capsys):
    assert cli.main(["audit", run, "--export-queries", str(tmp_path / "q"), "--attacks", "noise,boundary"]) == 2
    assert "--attacks boundary: cannot be audited from exported queries: HopSkipJump chooses each probe" in \
        capsys.readouterr().err
    assert not (tmp_path / "q").exists()
