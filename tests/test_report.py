"""Report: summary rows, terminal table, HTML page and ROC plot of a small fake run."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from attacks.report import core as report
from attacks.report import sections
from attacks.report.page import write_report
from attacks.stats import metrics
from farm.errors import RunError
from farm.storage import RunDir

CONFIG_HASH = "0123abcd4567ef89"
TARGETS = [0, 1]
# name -> (label_only, member shift of the score, discrete scores)
ATTACKS = {"gap": (True, 0.6, True), "calibrated": (True, 1.0, False), "loss": (False, 1.6, False)}
TRAIN_ACCURACY, TEST_ACCURACY = (0.99, 0.97, 0.98), (0.90, 0.91, 0.89)


def _scores(rng, n: int, shift: float, discrete: bool):
    member = rng.random(n) < 0.5
    score = rng.normal(size=n) + shift * member
    return (score > 0.5).astype(float) if discrete else score, member


def _write_attack(run: RunDir, name: str, *, label_only: bool, shift: float, discrete: bool, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    per_target = [_scores(rng, 500, shift, discrete) for _ in TARGETS]
    scores, member = metrics.pool(per_target)
    shadow_scores, shadow_member = _scores(rng, 4000, shift, discrete)
    thresholds = metrics.shadow_thresholds(shadow_scores, shadow_member)
    result = metrics.evaluate(scores, member, thresholds=thresholds)
    result.update(
        attack=name, label_only=label_only, settings={"k": 3},
        description=f"{name}: a fake attack whose scores are Gaussian with a member shift <fake>",
        target_model_ids=TARGETS, seconds=1.25, requested_fpr=0.01,
        auc_ci=list(metrics.bootstrap_ci(scores, member, metric_fn=metrics.auc, n=20)),
        tpr_at_fpr_ci={key: list(metrics.bootstrap_ci(
            scores, member, n=20, metric_fn=lambda s, m, f=fpr: metrics.tpr_at_fpr(s, m, fpr=f).tpr))
            for key, fpr in (("0.001", 0.001), ("0.01", 0.01))})
    table = pa.table({
        "target_model_id": pa.array(np.repeat(np.array(TARGETS, dtype=np.int32), 500)),
        "example_id": pa.array(np.tile(np.arange(500, dtype=np.int32), len(TARGETS))),
        "member": pa.array(member), "score": pa.array(scores, type=pa.float64())})
    run.write_table(f"attacks/{name}/scores.parquet", table)
    run.write_json(f"attacks/{name}/metrics.json", result)
    return result


def _fake_run(uri: str, *, with_attacks: bool = True) -> tuple[RunDir, dict]:
    run = RunDir(uri)
    config = {"seed": 0, "data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [256]},
              "train": {"epochs": 30, "lr": 0.001},
              "membership": {"mode": "lira", "n_models": 3, "p_in": 0.5, "target_ids": TARGETS},
              "queries": [{"kind": "clean"}, {"kind": "translate", "d": 1}], "farm": {"group_size": 16}}
    run.write_json("run.json", {
        "config": config, "config_hash": CONFIG_HASH, "n_queries": 6, "git_sha": "deadbeef",
        "created": "2026-01-02T03:04:05Z",
        "dataset": {"name": "digits", "kind": "image", "shape": [1, 8, 8], "num_classes": 10, "n_examples": 1797},
        "versions": {"python": "3.11.7", "shadowfarm": "0.1.0", "torch": "2.14.1", "ray": "2.60.0",
                     "pyarrow": "26.0.1", "numpy": "2.4.6"}})
    for model_id, (train, test) in enumerate(zip(TRAIN_ACCURACY, TEST_ACCURACY, strict=True)):
        run.write_json(f"models/model_id={model_id:05d}/metrics.json", {
            "train_accuracy": train, "test_accuracy": test, "train_loss": 0.05, "test_loss": 0.3, "seconds": 2.0})
    results = {}
    if with_attacks:
        for seed, (name, (label_only, shift, discrete)) in enumerate(ATTACKS.items()):
            results[name] = _write_attack(run, name, label_only=label_only, shift=shift, discrete=discrete, seed=seed)
    else:
        run.makedirs("attacks")
    return run, results


@pytest.fixture
def fake_run(tmp_path):
    return _fake_run(str(tmp_path / "exp1"))


def test_summary_rows_order_and_values(fake_run):
    run, results = fake_run
    rows = report.summary_rows(run)
    assert [r["attack"] for r in rows] == ["calibrated", "gap", "loss"]  # label-only by AUC, then baselines
    for row in rows:
        m = results[row["attack"]]
        assert row["auc"] == m["auc"] and row["auc_ci"] == tuple(m["auc_ci"])
        assert row["tpr_at_fpr_0.01"] == m["tpr_at_fpr"]["0.01"]
        assert row["tpr_at_fpr_0.001_ci"] == tuple(m["tpr_at_fpr_ci"]["0.001"])
        assert row["balanced_accuracy"] == m["balanced_accuracy"]
        assert row["n_nonmembers"] == m["n_nonmembers"] and row["requested_fpr"] == 0.01
        assert row["realized_fpr"] == m["at_shadow_thresholds"]["0.01"]["fpr"]
        assert row["realized_tpr"] == m["at_shadow_thresholds"]["0.01"]["tpr"]
        assert row["false_positives_allowed_0.001"] == 0  # ~500 non-members: 0.1% of them is < 1


def test_format_table(fake_run):
    run, results = fake_run
    text = report.format_table(report.summary_rows(run))
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100
    assert lines[0].split()[:3] == ["attack", "type", "AUC"]
    for name, m in results.items():
        line = next(line for line in lines if line.startswith(name + " "))
        assert ("label-only" if ATTACKS[name][0] else "confidence") in line
        assert f"{m['auc']:.3f}" in line
        assert f"{100 * m['tpr_at_fpr']['0.01']:.1f}%" in line
        assert f"{100 * m['tpr_at_fpr']['0.001']:.1f}%*" in line  # rests on zero false positives
        assert f"{100 * m['balanced_accuracy']:.1f}%" in line
        assert f"{m['n_nonmembers']:,}" in line
    assert "* rests on zero allowed false positives" in text


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_write_report(tmp_path, scheme, monkeypatch):
    run, results = _fake_run(scheme + str(tmp_path / "exp1"))
    monkeypatch.setitem(sections.SECTIONS, "extra", lambda run: ("Defenses <matrix>", "<p>EXTRA-SECTION</p>"))
    monkeypatch.setitem(sections.SECTIONS, "absent", lambda run: None)
    path = write_report(run)
    assert path == run.path("report/index.html")
    page = run.read_text("report/index.html")
    assert page.lower().startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "exp1" in page and "digits" in page
    for name, m in results.items():
        assert f"<b>{name}</b>" in page and f"{m['auc']:.3f}" in page
        assert f"{m['auc_ci'][0]:.3f}–{m['auc_ci'][1]:.3f}" in page
    assert '<img src="roc.png"' in page
    assert CONFIG_HASH in page and "deadbeef" in page and "&quot;hidden&quot;" in page  # config as escaped JSON
    assert "&lt;fake&gt;" in page and "<fake>" not in page  # text is escaped
    assert page.index("Defenses &lt;matrix&gt;") < page.index("EXTRA-SECTION") < page.index("<h2>Provenance")
    assert "† rests on zero allowed false positives" in page
    assert "98.00% ± 1.00%" in page and "90.00% ± 1.00%" in page and "8.00% ± 1.73%" in page  # models
    assert "<script" not in page and "http" not in page.replace(run.uri, "")  # no external assets
    png = run.read_bytes("report/roc.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_no_attack_results_is_a_run_error(tmp_path):
    run, _ = _fake_run(str(tmp_path / "empty"), with_attacks=False)
    with pytest.raises(RunError, match="shadowfarm attack"):
        report.summary_rows(run)
    with pytest.raises(RunError, match="shadowfarm attack"):
        write_report(run)
    assert not run.exists("report/index.html")
    with pytest.raises(RunError, match="shadowfarm attack"):
        report.summary_rows(RunDir(str(tmp_path / "no_attacks_dir")))


def test_missing_keys_and_scores_are_run_errors(fake_run):
    run, _ = fake_run
    run.delete("attacks/gap/scores.parquet")
    with pytest.raises(RunError, match="gap/scores.parquet"):
        write_report(run)
    run.write_json("attacks/gap/metrics.json", {"attack": "gap"})
    with pytest.raises(RunError, match="missing auc"):
        report.summary_rows(run)


@pytest.mark.system
def test_import_has_no_side_effects():
    code = "import sys, attacks.report.page; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
