"""The defense × attack matrix: defense settings, the matrix file, its table and figure, the smoke job."""

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from attacks.artifacts import MATRIX, MATRIX_SCHEMA, read_matrix
from attacks.report.defense_matrix import defense_section, defenses_section, matrix_png
from attacks.report.defenses import format_matrix
from attacks.studies.defenses import TRAINING_DEFENSES, parse_defenses
from farm.errors import ConfigError, RunError
from farm.storage import RunDir
from jobs.study import defenses as defenses_job


def test_defense_settings_expand_to_one_farm_each():
    settings = parse_defenses(["none", "weight_decay=0.01:0.1", "dp_sgd"], set_for=["dp_sgd:train.lr=0.02"])
    assert [s.label for s in settings] == ["none", "weight_decay=0.01", "weight_decay=0.1", "dp_sgd=8"]
    assert settings[0].overrides == () and settings[2].overrides == ("train.weight_decay=0.1",)
    assert settings[3].overrides[-2:] == ("train.dp_sgd.epsilon=8.0", "train.lr=0.02")
    assert len(parse_defenses(["weight_decay"])) >= 4  # the default sweep for the report's trend
    assert set(TRAINING_DEFENSES) == {"none", "weight_decay", "label_smoothing", "dropout", "mixup",
                                      "early_stopping", "train_augmentation", "dp_sgd"}


@pytest.mark.parametrize("items, set_for, message", [
    (["adversarial"], [], "unknown training defense 'adversarial' (valid: dp_sgd"),
    (["mixup=lots"], [], "NAME=V1:V2"),
    (["none=1"], [], "takes no value"),
    (["mixup=1", "mixup=1.0"], [], "repeats"),
    (["none"], ["dp_sgd"], "DEFENSE:KEY=VALUE"),
])
def test_bad_defense_settings_are_config_errors(items, set_for, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_defenses(items, set_for=set_for)


def _matrix() -> pa.Table:
    rows = []
    for label, name, strength, test_accuracy, eps in (("none", "none", math.nan, 0.97, math.nan),
                                                     ("weight_decay=0.01", "weight_decay", 0.01, 0.95, math.nan),
                                                     ("weight_decay=0.1", "weight_decay", 0.1, 0.78, math.nan),
                                                     ("dp_sgd=8", "dp_sgd", 8.0, 0.92, 7.99)):
        for output in ("none", "top1"):
            for attack, label_only, auc in (("gap", True, 0.52), ("loss", False, 0.56)):
                auc = auc if output == "none" or label_only else 0.52
                rows.append({"defense": label if output == "none" else f"{label} + {output}",
                             "training_defense": name, "strength": strength, "output_defense": output,
                             "attack": attack, "label_only": label_only, "auc": auc - 0.1 * np.nan_to_num(strength),
                             "tpr_at_fpr_0.01": 0.02, "tpr_at_fpr_0.001": 0.0, "balanced_accuracy": 0.51,
                             "n_members": 889, "n_nonmembers": 908, "same_as_undefended": label_only,
                             "test_accuracy": test_accuracy, "train_accuracy": test_accuracy + 0.02,
                             "epsilon": eps, "run": label})
    return pa.Table.from_pylist(rows, schema=MATRIX_SCHEMA)


def test_matrix_file_round_trips_and_is_checked(tmp_path):
    study = RunDir(str(tmp_path / "study"))
    with pytest.raises(RunError, match="not found"):
        read_matrix(study)
    study.write_table(MATRIX, _matrix())
    read = read_matrix(study)
    assert read.schema.equals(MATRIX_SCHEMA, check_metadata=True)
    assert read.to_pandas().equals(_matrix().to_pandas())  # NaN-aware
    assert pd.read_parquet(tmp_path / "study" / MATRIX).shape == (16, len(MATRIX_SCHEMA))
    study.write_table(MATRIX, _matrix().drop(["epsilon"]))
    with pytest.raises(RunError, match="not a defenses matrix"):
        read_matrix(study)


def test_table_section_and_figure():
    text = format_matrix(_matrix())
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["defense", "test", "acc", "ε", "gap"]
    assert any(line.startswith("dp_sgd=8 + top1") and "7.99" in line for line in lines)
    title, html = defense_section(_matrix())
    assert title == "Defenses" and '<img src="defenses.png"' in html and "weight_decay=0.1 + top1" in html
    assert html.count("<tr>") == 1 + 8 and "0.5 ± 0.027" in html
    assert matrix_png(_matrix())[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.system  # a job's --smoke-test end to end (trains 3 farms)
def test_defenses_job_smoke_test(ray_local, tmp_path, capsys):
    out = tmp_path / "study"
    assert defenses_job.main(["--smoke-test", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "dp_sgd=8 + memguard" in printed and "report:" in printed
    frame = read_matrix(RunDir(str(out))).to_pandas()
    farms = list(dict.fromkeys(frame["run"]))
    assert farms == [s.label for s in parse_defenses(defenses_job.SMOKE_DEFENSES)]
    assert set(frame["output_defense"]) == {"none", "memguard", "flatten", "top1", "round"}
    assert len(frame) == len(farms) * 5 * len(defenses_job.MATRIX_SMOKE_ATTACKS)
    for _, group in frame[frame["label_only"]].groupby(["run", "attack"]):
        assert group["same_as_undefended"].all() and group["auc"].nunique() == 1
    dp = frame[frame["training_defense"] == "dp_sgd"]
    assert (dp["epsilon"] <= 8.0 + 1e-6).all() and (dp["epsilon"] > 7).all()
    assert frame.loc[frame["training_defense"] != "dp_sgd", "epsilon"].isna().all()
    metrics = json.loads((out / "dp_sgd=8" / "models" / "model_id=00000" / "metrics.json").read_text())
    assert metrics["epsilon"] == metrics["dp_sgd"]["epsilon"] and metrics["vectorized"] is False
    assert metrics["defense"]["dp_sgd"]["target_epsilon"] == 8.0
    for page in ("report/index.html", "report/defenses.png", "none/report/index.html", "none/report/defenses.png"):
        assert (out / page).is_file(), page
    assert "Defenses" in (out / "none" / "report" / "index.html").read_text()
    assert defenses_section(RunDir(str(out / "none")))[0] == "Defenses"
    assert defenses_section(RunDir(str(out / "dp_sgd=8"))) is None
    assert np.isfinite(frame["test_accuracy"]).all()
    study = json.loads((out / "study.json").read_text())
    assert set(study["farms"]) == set(farms) and study["seconds"]["total"] > 0
