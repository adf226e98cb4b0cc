"""The report's sections are a registry that `write_report` calls itself: every command that rewrites
report/index.html keeps every study's section (the worst-case and OOD jobs once dropped calibration and
defenses, passing only their own sections)."""

import math

import pyarrow as pa
import pytest

from attacks.artifacts import MATRIX, MATRIX_SCHEMA
from attacks.report.sections import SECTIONS
from farm.storage import RunDir
from jobs import cli

TITLES = ["Results", "ROC curves", "Attacks", "Models", "Calibration study", "Worst case: outliers",
          "Out-of-distribution non-members", "Defenses", "Provenance"]


def _matrix() -> pa.Table:
    """A one-farm defense matrix, as the undefended farm of a defense study holds a copy of it."""
    rows = [{"defense": "none", "training_defense": "none", "strength": math.nan, "output_defense": "none",
             "attack": attack, "label_only": label_only, "auc": 0.55, "tpr_at_fpr_0.01": 0.02,
             "tpr_at_fpr_0.001": 0.0, "balanced_accuracy": 0.52, "n_members": 75, "n_nonmembers": 75,
             "same_as_undefended": label_only, "test_accuracy": 0.8, "train_accuracy": 0.9, "epsilon": math.nan,
             "run": "none"} for attack, label_only in (("gap", True), ("loss", False))]
    return pa.Table.from_pylist(rows, schema=MATRIX_SCHEMA)


def _titles(run: RunDir) -> list[str]:
    page = run.read_text("report/index.html")
    return [title for title in TITLES if f"<h2>{title}</h2>" in page]


@pytest.fixture(scope="module")
def studied_run(farms):
    """A tiny farm with attack results, a calibration study and a defense matrix."""
    run = farms.run(*farms.LOGITS)
    assert cli.main(["attack", run, "--attacks", "gap,loss", "--bootstrap", "0", "--pseudo-targets", "2",
                     "--quiet"]) == 0
    assert cli.main(["study", "calibration", run, "--shadows", "1,2"]) == 0
    RunDir(run).write_table(MATRIX, _matrix())
    return RunDir(run)


def test_the_registry_keeps_the_report_order():
    assert list(SECTIONS) == ["calibration", "worst_case", "ood", "defenses", "queries"]


@pytest.mark.system  # jobs end to end through the CLI: report, study worst-case, study ood
def test_every_study_command_keeps_every_section(studied_run, capsys):
    run = studied_run.uri
    assert cli.main(["report", run]) == 0
    assert _titles(studied_run) == [t for t in TITLES if t not in ("Worst case: outliers",
                                                                     "Out-of-distribution non-members")]
    assert cli.main(["study", "worst-case", run, "--quiet"]) == 0
    assert _titles(studied_run) == [t for t in TITLES if t != "Out-of-distribution non-members"]
    assert cli.main(["study", "ood", run, "--families", "uniform", "--n-inputs", "10", "--quiet"]) == 0
    assert _titles(studied_run) == TITLES
    for figure in ("roc.png", "calibration.png", "defenses.png"):
        assert studied_run.is_file(f"report/{figure}"), figure
    assert "report:" in capsys.readouterr().out
