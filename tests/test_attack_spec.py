"""An attack is its methods file plus its registry entry (`attacks.spec.AttackSpec`): no other module names it,
and an attack registered at run time runs through the attack stage, the audit, the OOD study and tune."""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from attacks.audit import AuditOptions, audit_run, open_target
from attacks.loader import load_responses
from attacks.registry import ATTACKS, register, run_attack, unregister
from attacks.spaces import choice
from attacks.spec import AttackSpec, Ood, SearchSpace
from attacks.stage import AttackOptions, attack_run
from attacks.studies.game import attack_games
from attacks.studies.ood.study import OodOptions, offline_scores, ood_study
from attacks.tune.trials import tune_attack
from farm.storage import RunDir
from jobs.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("farm", "attacks", "jobs")
# Benchmarks are left out, as configs are: they pin the attack lists and settings of recorded figures.
EXCLUDED = ("jobs/bench/",)
# Words that are attack names and also mean something else where they appear (never the attack there).
HOMONYMS = {
    "loss": {"attacks/compute/transfer.py": "a transfer score (minus the loss)",
             "attacks/methods/transfer.py": "a transfer score (minus the loss)",
             "attacks/compute/whitebox.py": "the per-example loss statistic",
             "attacks/methods/whitebox.py": "the per-example loss statistic"},
    "calibrated": {"attacks/methods/boundary.py": "boundary's per-example calibration variant",
                   "attacks/methods/transfer.py": "transfer's per-example calibration variant",
                   "attacks/methods/whitebox.py": "gradient_norm's per-example calibration variant"},
    "gap": {"attacks/report/core.py": "the models' train-test accuracy gap",
            "attacks/report/results.py": "the models' train-test accuracy gap"},
    "augmentation": {"farm/config.py": "train.augmentation, training-time data augmentation"},
}


def _relative(path: str) -> str:
    return str(Path(path).resolve().relative_to(ROOT))


def own_files(spec: AttackSpec) -> set[str]:
    """The files allowed to name attack `spec`: the registry, its methods file and its compute module."""
    files = {"attacks/registry.py", _relative(inspect.getsourcefile(spec.fn))}
    for ref in (spec.statistic.prepare, spec.statistic.audit) if spec.statistic else ():
        if isinstance(ref, str):
            files.add(ref.partition(":")[0].replace(".", "/") + ".py")
    return files


def string_constants(path: Path) -> list[tuple[int, str]]:
    """(line, value) of every string constant of a module but its docstrings."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(node.lineno, node.value) for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


def named_attacks(root: Path, attacks: dict[str, AttackSpec]) -> list[str]:
    """"file:line names attack X" for every string literal equal to an attack's name outside its own files."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = str(path.relative_to(root))
            if rel.startswith(EXCLUDED):
                continue
            for line, value in string_constants(path):
                if value in attacks and rel not in own_files(attacks[value]) and rel not in HOMONYMS.get(value, {}):
                    found.append(f"{rel}:{line} names attack {value!r}")
    return sorted(found)


def test_no_module_but_its_own_names_an_attack():
    assert named_attacks(ROOT, ATTACKS) == []


def test_a_planted_name_fails_and_a_docstring_does_not(tmp_path):
    (tmp_path / "attacks").mkdir()
    (tmp_path / "attacks" / "x.py").write_text('"""The calibrated attack, named in a docstring."""\n\n'
                                              'DEFAULT = "calibrated"\n')
    assert named_attacks(tmp_path, ATTACKS) == ["attacks/x.py:3 names attack 'calibrated'"]
    (tmp_path / "attacks" / "x.py").write_text('"""The calibrated attack, named in a docstring."""\n')
    assert named_attacks(tmp_path, ATTACKS) == []


def test_the_registry_holds_every_fact_the_side_tables_held():
    assert {n for n, s in ATTACKS.items() if s.needs_in_shadows} == {
        "calibrated", "lira_confidence", "boundary", "transfer", "gradient_norm", "stolen_memories", "fixed_direction",
        "yoqo", "oslo"}
    assert [n for n, s in ATTACKS.items() if s.explicit_only] == ["boundary", "fixed_direction", "yoqo", "oslo"]
    assert [n for n, s in ATTACKS.items() if s.target_statistics] == ["transfer", "boundary"]
    assert {n: s.ood.how for n, s in ATTACKS.items() if s.ood} == {
        **dict.fromkeys(("gap", "augmentation", "noise", "transfer", "boundary", "loss", "confidence_classifier"),
                        "as run"), "calibrated": "offline", "lira_confidence": "offline"}
    assert {n for n, s in ATTACKS.items() if s.tune} == {
        "augmentation", "noise", "calibrated", "boundary", "transfer", "confidence_classifier", "lira_confidence",
        "fixed_direction", "yoqo", "oslo"}


def test_the_registry_imports_neither_torch_nor_ray():
    """Every process that touches an attack imports the registry (Ray task workers too): the compute callables on
    the specs are named lazily, so importing it stays cheap (commit 01c365e)."""
    code = "import sys, attacks.registry; print(sorted({'torch', 'ray', 'sklearn'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def run(farms):
    return farms.run(*farms.SMALL)


@pytest.fixture
def toy():
    """One function and one AttackSpec, registered for the test only. Defined here, inside the fixture, so that
    Ray workers (Tune's trials) receive the function by value: they cannot import this test module."""
    def stability(responses, *, target, shadows, weight: float = 1.0):
        """The fraction of the target's answers that are right, times `weight` (a monotone map: same ROC)."""
        return (responses.pred[target] == responses.labels[:, None]).mean(axis=1) * weight

    spec = register(AttackSpec("toy_stability", stability, label_only=True, needs=("clean",),
                               defaults={"weight": 1.0}, description="toy: fraction of right answers",
                               ood=Ood("as run"),
                               tune=SearchSpace(lambda info: {"weight": choice([1.0, 2.0])})))
    yield spec
    unregister(spec.name)


def test_a_toy_attack_runs_through_attack_audit_ood_and_tune(run, toy, capsys):
    assert cli(["attack", run, "--attacks", toy.name, "--pseudo-targets", "2", "--bootstrap", "0"]) == 0
    metrics = json.loads(Path(run, "attacks", toy.name, "metrics.json").read_text())
    assert metrics["attack"] == toy.name and metrics["settings"] == {"weight": 1.0} and 0 <= metrics["auc"] <= 1

    oracle, target = open_target(run, "model:0")
    [audited] = audit_run(run, oracle, target=target, options=AuditOptions(attacks=(toy.name,), n_pseudo=2,
                                                                           bootstrap=0), progress=False)
    assert audited["attack"] == toy.name and audited["n_examples"] == 120

    rows = ood_study(run, OodOptions(n_inputs=10, attacks=(toy.name,), families=("uniform",)))
    assert {r["attack"] for r in rows} == {toy.name} and {r["scoring"] for r in rows} == {"as run"}

    best = tune_attack(run, attack=toy.name, num_samples=2, n_pseudo=2, max_concurrent=1, verbose=0)
    assert best["failed_trials"] == 0 and len(best["trials"]) == 2
    assert {t["config"]["weight"] for t in best["trials"]} <= {1.0, 2.0}


@pytest.mark.parametrize("name", ["calibrated", "lira_confidence"])
def test_ood_offline_scores_are_the_attacks_offline_scores(run, name):
    """The OOD study scores inputs no shadow trained on with the attack's own offline test: on the population,
    with every shadow taken as OUT, its scores are run_attack's (variant offline). run_attack needs a member among
    the shadows: one extra shadow, IN everywhere, which the offline test does not read."""
    attack_run(run, AttackOptions(attacks=(name,), n_pseudo=2, bootstrap=0), progress=False)
    responses = load_responses(RunDir(run))
    [game] = attack_games(RunDir(run), n_models=responses.n_models, names=(name,))
    extra = responses.n_models
    member = np.zeros((extra + 1, responses.n_examples), dtype=bool)
    member[extra] = True
    copy = int(game.shadows[0])
    extended = replace(responses, member=member, pred=np.concatenate([responses.pred, responses.pred[[copy]]]),
                       logits=None if responses.logits is None else np.concatenate([responses.logits,
                                                                                    responses.logits[[copy]]]),
                       model_ids=None)
    for target in game.targets:
        scores = offline_scores(game, responses, target, labels=responses.labels, pred=responses.pred,
                                logits=responses.logits)
        expected = run_attack(name, extended, target=target, shadows=np.r_[game.shadows, extra],
                              settings={**game.settings, "variant": "offline"})
        np.testing.assert_array_equal(scores, expected)
