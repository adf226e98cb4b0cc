"""The attack stage end to end on tiny farms: files, label-only runs, shadows only, CLI, smoke job."""


import numpy as np
import pandas as pd
import pytest

from attacks.registry import ATTACKS
from attacks.stage import AttackOptions, attack_run
from farm.errors import ConfigError
from farm.shards import MEMBERSHIP, membership_matrix, membership_table
from farm.storage import RunDir
from jobs import attack as attack_job
from jobs import cli

FAST = dict(n_pseudo=2, bootstrap=10)


@pytest.fixture(scope="module")
def run_with_logits(farms):
    return farms.run(*farms.LOGITS)


@pytest.fixture(scope="module")
def run_label_only(farms):
    return farms.run(*farms.LABELS)


def test_label_only_attacks_run_without_logits(run_label_only):
    assert "logits" not in pd.read_parquet(f"{run_label_only}/models/model_id=00000/responses.parquet").columns
    results = attack_run(run_label_only, AttackOptions(**FAST), progress=False)
    ran = {r["attack"] for r in results if "skipped" not in r}
    skipped = {r["attack"] for r in results if "skipped" in r}
    explicit = {n for n, s in ATTACKS.items() if s.explicit_only}
    assert ran == {n for n, s in ATTACKS.items() if s.kind != "confidence"} - explicit  # white-box: weights
    assert skipped == {n for n, s in ATTACKS.items() if s.kind == "confidence"} | explicit
    with pytest.raises(ConfigError, match="no logits"):
        attack_run(run_label_only, AttackOptions(attacks=("loss",), **FAST), progress=False)


def test_permuting_the_targets_membership_changes_nothing_fitted(run_with_logits, tmp_path):
    names = ("gap", "augmentation", "noise", "calibrated", "transfer", "confidence_classifier", "lira_confidence")
    options = AttackOptions(attacks=names, n_pseudo=2, bootstrap=0)
    run = RunDir(run_with_logits)
    before = {r["attack"]: r for r in attack_run(run_with_logits, options, progress=False)}
    scores_before = {n: pd.read_parquet(f"{run_with_logits}/attacks/{n}/scores.parquet") for n in names}
    original = run.read_bytes(MEMBERSHIP)
    member, pool = membership_matrix(run.read_table(MEMBERSHIP))
    member[0] = np.random.default_rng(1).permutation(member[0])
    run.write_table(MEMBERSHIP, membership_table(member, pool))
    try:
        after = {r["attack"]: r for r in attack_run(run_with_logits, options, progress=False)}
    finally:
        run.write_bytes(MEMBERSHIP, original)
    for name in names:
        scores_after = pd.read_parquet(f"{run_with_logits}/attacks/{name}/scores.parquet")
        assert np.array_equal(scores_before[name]["score"], scores_after["score"]), name
        thresholds = lambda r: {k: v["threshold"] for k, v in r["at_shadow_thresholds"].items()}  # noqa: E731
        assert thresholds(before[name]) == thresholds(after[name]), name
        assert not np.array_equal(scores_before[name]["member"], scores_after["member"])


def test_transfer_from_the_cli(run_with_logits, capsys):
    assert cli.main(["attack", run_with_logits, "--attacks", "transfer", "--pseudo-targets", "2",
                     "--bootstrap", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "transfer" in out and "report:" in out
    assert (RunDir(run_with_logits).is_file("report/index.html"))
    assert cli.main(["report", run_with_logits]) == 0


def test_attack_cli_errors(run_with_logits, capsys):
    assert cli.main(["attack", run_with_logits, "--attacks", "nope"]) == 2
    assert "unknown attack 'nope'" in capsys.readouterr().err
    assert cli.main(["attack", run_with_logits, "--targets", "99"]) == 2
    assert "--targets" in capsys.readouterr().err
    assert cli.main(["attack", run_with_logits, "--setting", "calibrated.bogus=1", "--attacks", "calibrated"]) == 2
    assert "bogus" in capsys.readouterr().err


@pytest.mark.system  # a job's --smoke-test end to end
def test_attack_job_smoke_test(farms, capsys):
    smoke = farms.smoke()  # trained once per session; the job resumes it (test_ood's smoke test trains one)
    assert attack_job.main(["--smoke-test", "--run", smoke, "--quiet"]) == 0
    assert "calibrated" in capsys.readouterr().out
    assert RunDir(smoke).is_file("report/roc.png")
