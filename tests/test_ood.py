"""OOD non-members: seeded, bounded input families; exact substitution of the target's answers; the study end
to end on a tiny farm (every attack, counts, the gap attack's documented 100% at its balanced threshold)."""

import argparse
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from attacks.artifacts import OOD, OOD_SCHEMA, POPULATION
from attacks.compute.transfer import transfer_statistic
from attacks.loader import load_responses
from attacks.registry import get_attack, resolve_settings, run_attack
from attacks.report.ood import TITLE as OOD_TITLE
from attacks.report.ood import format_ood, ood_section
from attacks.responses import Responses
from attacks.stage import AttackOptions, attack_run
from attacks.studies.game import AttackGame
from attacks.studies.ood.inputs import OOD_FAMILIES, ood_inputs
from attacks.studies.ood.query import transfer_ood
from attacks.studies.ood.study import other_dataset, substituted_scores
from farm.data import DatasetInfo
from farm.errors import ConfigError
from farm.plan import load_plan
from farm.storage import RunDir
from jobs.study import ood as study_ood

IMAGE = DatasetInfo(name="img", kind="image", shape=(1, 4, 4), num_classes=3, bounds=(0.0, 1.0))
TABULAR = DatasetInfo(name="tab", kind="tabular", shape=(5,), num_classes=2,
                      binary_features=(False, False, True, True, False), bounds=(-3.0, 3.0))


def _population(info, n=50, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(*info.bounds, size=(n, *info.shape)).astype(np.float32)
    if info.binary_features:
        x[:, np.array(info.binary_features)] = rng.integers(0, 2, (n, sum(info.binary_features)))
    return x


@pytest.mark.parametrize("info", [IMAGE, TABULAR], ids=["image", "tabular"])
def test_families_are_seeded_shaped_and_bounded(info):
    x = _population(info)
    other = _population(info, n=12, seed=5)
    first = ood_inputs(x=x, info=info, n=30, seed=1, other_x=other)
    assert list(first) == list(OOD_FAMILIES)
    again = ood_inputs(x=x, info=info, n=30, seed=1, other_x=other)
    moved = ood_inputs(x=x, info=info, n=30, seed=2, other_x=other)
    for family, values in first.items():
        assert values.dtype == np.float32 and values.shape == ((12 if family == "other" else 30), *info.shape)
        assert values.min() >= info.bounds[0] and values.max() <= info.bounds[1]
        assert np.array_equal(values, again[family])
        assert family == "other" or not np.array_equal(values, moved[family])
    if info.binary_features:
        binary = np.array(info.binary_features)
        for family in ("uniform", "gaussian", "scaled_up", "scaled_down"):
            assert set(np.unique(first[family][:, binary])) <= {0.0, 1.0}, family
    assert "other" not in ood_inputs(x=x, info=info, n=5, seed=1)


def test_family_errors():
    x = _population(IMAGE)
    with pytest.raises(ConfigError, match="unknown OOD family 'sine'"):
        ood_inputs(x=x, info=IMAGE, n=5, seed=0, families=["sine"])
    with pytest.raises(ConfigError, match="--other-data"):
        ood_inputs(x=x, info=IMAGE, n=5, seed=0, families=["other"])
    with pytest.raises(ConfigError, match=r"shape \(1, 2, 2\)"):
        ood_inputs(x=x, info=IMAGE, n=5, seed=0, families=["other"], other_x=np.zeros((3, 1, 2, 2), np.float32))
    with pytest.raises(ConfigError, match="--n-inputs"):
        ood_inputs(x=x, info=IMAGE, n=0, seed=0)


def test_other_family_defaults():
    plan = SimpleNamespace(dataset=SimpleNamespace(info=TABULAR), cfg=SimpleNamespace(seed=0))
    x, source = other_dataset(None, plan=plan, n=20)
    assert x.shape == (20, 5) and "synthetic" in source
    x, source = other_dataset(None, plan=SimpleNamespace(dataset=SimpleNamespace(info=IMAGE), cfg=plan.cfg), n=20)
    assert x is None and "no other registered data set of shape (1, 4, 4)" in source


def _responses(seed=0, n_models=8, n=60, n_classes=4, queries=("clean",) + ("flip",) * 3 + ("gaussian",) * 4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    member = rng.random((n_models, n)).argsort(0) < n_models // 2
    right = rng.random((n_models, n, len(queries))) < 0.6 + 0.3 * member[:, :, None]
    pred = np.where(right, labels[None, :, None], rng.integers(0, n_classes, (n_models, n, len(queries))))
    logits = rng.normal(size=(n_models, n, n_classes)).astype(np.float32)
    stats = {"transfer": rng.normal(size=(n_models, n)), "boundary": rng.random((n_models, n))}
    return Responses(member=member, pred=pred.astype(np.int16), labels=labels, query_kinds=queries,
                     query_params=tuple({} for _ in queries), logits=logits, statistics=stats)


@pytest.mark.parametrize("name", ["gap", "augmentation", "noise", "loss", "confidence_classifier", "transfer",
                                  "boundary"])
def test_substitution_is_exact_under_relabelled_classes(name):
    """The target's own answers, with every class renamed per input, score exactly as the originals."""
    responses = _responses()
    settings = resolve_settings(name, {"max_iter": 10} if name == "confidence_classifier" else {})
    game = AttackGame(name=name, label_only=get_attack(name).label_only, settings=settings,
                      targets=(0,), shadows=np.arange(1, 8), n_pseudo=2, requested_fpr=0.01)
    expected = run_attack(name, responses, target=0, shadows=game.shadows, settings=settings)
    rng = np.random.default_rng(1)
    rename = np.stack([rng.permutation(4) for _ in range(responses.n_examples)])  # per input: class -> class
    rows = np.arange(responses.n_examples)
    logits = np.empty_like(responses.logits[0])
    logits[rows[:, None], rename] = responses.logits[0]
    pred = rename[rows[:, None], responses.pred[0].astype(int)]
    twice = np.r_[rows, rows]  # more inputs than examples: scored in two substitutions
    scores = substituted_scores(game, responses, 0, labels=rename[rows, responses.labels][twice], pred=pred[twice],
                                logits=logits[twice], statistics={k: v[0][twice] for k, v in
                                                                  responses.statistics.items() if k == name})
    assert np.allclose(scores, np.r_[expected, expected], rtol=0, atol=1e-12)


ATTACKS = ("gap", "augmentation", "noise", "calibrated", "transfer", "boundary", "loss", "confidence_classifier",
           "lira_confidence")


@pytest.fixture(scope="module")
def tiny_run(farms):
    plan = load_plan(farms.run(*farms.LOGITS))
    settings = {"boundary": {"max_iter": 2, "init_evals": 10, "max_evals": 20}, "transfer": {"n_models": 2},
                "confidence_classifier": {"max_iter": 10}}
    attack_run(plan.run.uri, AttackOptions(attacks=ATTACKS, settings=settings, n_pseudo=2, bootstrap=0),
               progress=False)
    return plan


def test_ood_study_scores_every_attack_with_counts(tiny_run, capsys):
    run = tiny_run.run.uri
    assert study_ood.main(["--run", run, "--n-inputs", "30", "--boundary-inputs", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "OOD false positives" in out and "report:" in out
    table = pd.read_parquet(f"{run}/{OOD}")
    assert list(table.columns) == OOD_SCHEMA.names
    meta = json.loads(tiny_run.run.read_schema(OOD).metadata[b"shadowfarm.study"])
    families = ["uniform", "gaussian", "permuted", "scaled_up", "scaled_down"]
    assert list(meta["families"]) == families and "(1, 8, 8)" in meta["skipped_families"]["other"]
    assert set(table["attack"]) == set(ATTACKS)
    assert set(table["threshold"]) == {"0.001", "0.01", "balanced_accuracy"}
    nonmembers = int((~load_responses(tiny_run.run).member[0]).sum())
    for (attack, family), rows in table.groupby(["attack", "family"]):
        expected = nonmembers if family == POPULATION else (4 if attack == "boundary" else 30)  # one target
        assert (rows["n_inputs"] == expected).all(), (attack, family)
        assert (rows["fpr"] == rows["false_positives"] / rows["n_inputs"]).all()
    scoring = table.drop_duplicates("attack").set_index("attack")["scoring"]
    assert scoring["calibrated"] == scoring["lira_confidence"] == "offline" and scoring["gap"] == "as run"
    gap = table[(table["attack"] == "gap") & (table["threshold"] == "balanced_accuracy")]
    threshold = gap["threshold_value"].iloc[0]
    assert threshold <= 1.0 and (gap[gap["family"] != POPULATION]["fpr"] == 1.0).all()  # labelled by the target
    html = open(f"{run}/report/index.html").read()
    assert OOD_TITLE in html and "population non-members" in html and "no other registered data set" in html
    assert "confidence_classifier" in format_ood(table.to_dict("records"), threshold="balanced_accuracy")


def test_transfer_ood_reproduces_the_attack_stages_statistic(tiny_run):
    responses = load_responses(tiny_run.run)
    clean = responses.pred[0, :, responses.queries_of("clean")[0]].astype(np.int64)
    expected = transfer_statistic(responses, cfg=tiny_run.cfg, info=tiny_run.dataset.info, x=tiny_run.dataset.x,
                                  models=[0], n_models=2, seed=0)[0]
    x_ood = tiny_run.dataset.x[:5]
    got = transfer_ood(cfg=tiny_run.cfg, info=tiny_run.dataset.info, x=tiny_run.dataset.x, truth=responses.labels,
                       target_labels={0: clean},
                       x_ood=x_ood, ood_labels={0: clean[:5]}, n_models=2, seed=0)
    assert np.array_equal(got[0][0], expected) and got[0][1].shape == (5,)


def test_study_subcommands_as_wired_in_the_cli(tiny_run, capsys):
    from jobs.study import worst_case as study_worst_case

    parser = argparse.ArgumentParser(prog="shadowfarm")
    studies = parser.add_subparsers(dest="command").add_parser("study").add_subparsers(dest="study", required=True)
    for name, job in (("worst-case", study_worst_case), ("ood", study_ood)):
        job.add_arguments(studies.add_parser(name, help=job.HELP), positional=True)
        studies.choices[name].set_defaults(func=job.run)
    args = parser.parse_args(["study", "ood", tiny_run.run.uri, "--attacks", "gap,loss", "--families", "uniform",
                              "--n-inputs", "10", "--no-report", "--quiet"])
    assert args.func(args) == 0 and "uniform" in capsys.readouterr().out
    args = parser.parse_args(["study", "worst-case", tiny_run.run.uri, "--attacks", "gap", "--no-report", "--quiet"])
    assert args.func(args) == 0 and "outliers" in capsys.readouterr().out.lower()


def test_a_study_file_of_another_version_gets_a_note_not_a_failed_report(tmp_path):
    import pyarrow as pa

    run = RunDir(str(tmp_path))
    run.write_table(OOD, pa.table({"attack": ["gap"], "fpr": [0.5]}))
    title, body = ood_section(run)
    assert title == OOD_TITLE and "shadowfarm study ood RUN" in body


@pytest.mark.system  # a job's --smoke-test end to end (trains the smoke farm)
def test_ood_smoke_test(ray_local, tmp_path_factory, capsys):
    smoke = tmp_path_factory.getbasetemp() / "study-smoke"  # shared by both studies' smoke tests: trained once
    assert study_ood.main(["--smoke-test", "--run", str(smoke), "--quiet"]) == 0
    assert "gaussian" in capsys.readouterr().out
    assert (smoke / "studies" / "ood.parquet").is_file()
