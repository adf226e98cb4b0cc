"""Issue 30, point 1 for the attack stage: every output it reuses on a re-run (the boundary-distance and crafted-query
caches, attack results, tune's best.json, the audit journal, the studies) records its sha256 and size; `verify`
names one changed after it was written (`--quick`: sizes), a re-run computes a changed cache or result again (with
a one-line note) instead of reusing it, its readers refuse it, and outputs made before records are read with a note.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from attacks.compute.boundary import HsjaSettings, boundary_distances
from attacks.compute.crafting import CraftSettings
from attacks.compute.yoqo import crafted_inputs
from attacks.oracles.journal import Journal, row_keys
from attacks.tune.tuned import load_tuned
from farm.content import record_of, write_recorded
from farm.errors import RunError
from farm.plan import load_plan
from farm.storage import RunDir, json_bytes
from jobs import cli

SETTINGS = HsjaSettings(max_iter=1, init_evals=10, max_evals=20, budget=60, seed=1)
ATTACK = ["--attacks", "gap", "--bootstrap", "0", "--no-report", "--quiet"]


@pytest.fixture
def run(farms) -> Path:
    return Path(farms.run(*farms.SMALL))


def _flip(path: Path) -> bytes:
    """Flip 16 bytes in the middle of `path` (its size unchanged); returns its bytes before."""
    clean = path.read_bytes()
    middle = len(clean) // 2
    path.write_bytes(clean[:middle] + bytes(b ^ 0xFF for b in clean[middle:middle + 16]) + clean[middle + 16:])
    return clean


def _verify(run: Path, capsys, *args: str) -> list[str]:
    """verify's problem lines (exit 1), or [] (exit 0)."""
    code = cli.main(["verify", str(run), *args])
    lines = capsys.readouterr().out.splitlines()
    assert code in (0, 1) and (code == 1) == (f"{run}: ok" not in lines)
    return lines if code else []


def _distances(run: Path) -> np.ndarray:
    plan = load_plan(str(run))
    return boundary_distances(plan.run, x=plan.dataset.x, labels=plan.dataset.y, bounds=plan.dataset.info.bounds,
                              models=[1], n_models=8, settings=SETTINGS, chunk_examples=60, progress=False,
                              local=True)


def test_a_changed_boundary_part_is_named_by_verify_and_computed_again(run, capsys):
    first = _distances(run)
    part = sorted(run.glob("boundary/*/model_id=00001/part-*.parquet"))[0]
    clean = _flip(part)
    capsys.readouterr()
    assert _verify(run, capsys) == [f"{part}: sha256 differs from the one {record_of(part.name)} records "
                                    "(changed after it was written)"]
    assert _verify(run, capsys, "--quick") == []  # the same size
    again = _distances(run)
    assert part.read_bytes() == clean and np.array_equal(again, first, equal_nan=True)  # computed, not reused
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if str(part) in line] == [
        f"shadowfarm: note: {part}: sha256 differs from the one {record_of(part.name)} records (changed after "
        "it was written); computing it again"]
    part.write_bytes(clean[:-5])
    assert _verify(run, capsys, "--quick") == [f"{part}: {len(clean) - 5} bytes, {record_of(part.name)} "
                                               f"records {len(clean)} (changed after it was written)"]


def test_a_changed_crafted_part_is_named_by_verify_and_crafted_again(run, capsys):
    plan = load_plan(str(run))
    settings = CraftSettings(steps=2, n_queries=1)
    first = crafted_inputs(plan, plan.member, [2, 3], settings, local=True, progress=False)
    [part] = run.glob("crafted/*/part-*.parquet")
    clean = _flip(part)
    assert f"{part}: sha256 differs" in _verify(run, capsys)[0]
    np.testing.assert_array_equal(crafted_inputs(plan, plan.member, [2, 3], settings, local=True, progress=False),
                                  first)
    assert part.read_bytes() == clean
    assert f"{part}: sha256 differs" in capsys.readouterr().err


def test_a_changed_attack_result_is_named_refused_by_its_readers_and_computed_again(run, capsys):
    assert cli.main(["attack", str(run), *ATTACK]) == 0
    scores = run / "attacks" / "gap" / "scores.parquet"
    assert (run / "attacks" / "gap" / "_SUCCESS").read_text().count("\n") == 3  # settings hash, two records
    clean = _flip(scores)
    capsys.readouterr()
    assert _verify(run, capsys) == [f"{scores}: sha256 differs from the one _SUCCESS records (changed after it was "
                                    "written)"]
    assert cli.main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{scores}: content differs" in err[0] and "shadowfarm attack" in err[0]
    assert cli.main(["attack", str(run), *ATTACK]) == 0
    assert scores.read_bytes() == clean  # computed again (the same scores), not reused
    assert f"shadowfarm: note: {scores}: sha256 differs" in capsys.readouterr().err
    assert _verify(run, capsys) == []


def test_outputs_made_before_records_are_read_with_one_note(run, capsys):
    assert cli.main(["attack", str(run), *ATTACK]) == 0
    _distances(run)
    (run / "attacks" / "gap" / "_SUCCESS").unlink()
    for record in run.glob("boundary/**/.*.sha256"):
        record.unlink()
    metrics = (run / "attacks" / "gap" / "metrics.json").read_bytes()
    capsys.readouterr()
    assert _verify(run, capsys) == []
    _distances(run)
    assert cli.main(["attack", str(run), *ATTACK]) == 0
    assert (run / "attacks" / "gap" / "metrics.json").read_bytes() == metrics  # reused
    notes = [line for line in capsys.readouterr().err.splitlines() if "made before content hashes" in line]
    assert len(set(notes)) == 1 and str(run) in notes[0]


def test_a_changed_best_json_is_refused_by_tuned(run, capsys):
    store = RunDir(str(run))
    best = {"shadows": [3, 4, 5], "chosen": {"settings": {}, "queries": None}, "threshold": 0.5, "fpr": 0.01,
            "metric": "auc", "target_model_ids": [0]}
    write_recorded(store, "tune/gap/best.json", json_bytes(best))
    assert load_tuned(store, ["gap"], targets=[0])["gap"]["threshold"] == 0.5
    (run / "tune" / "gap" / "best.json").write_text(json.dumps({**best, "shadows": [1, 2]}))  # edited by hand
    with pytest.raises(RunError, match=r"tune/gap/best\.json: \d+ bytes, \.best\.json\.sha256 records .*re-tune"):
        load_tuned(store, ["gap"], targets=[0])
    assert "tune/gap/best.json: " in _verify(run, capsys)[0]


def test_a_changed_journal_part_is_left_out_and_its_rows_asked_again(tmp_path, capsys):
    store = RunDir(str(tmp_path))
    keys = row_keys(np.zeros((2, 3), np.float32) + np.arange(2, dtype=np.float32)[:, None])
    Journal(store, "journal").append(keys, np.array([4, 7]))
    assert Journal(store, "journal").get(keys).tolist() == [4, 7]
    [part] = (tmp_path / "journal").glob("part-*.parquet")
    _flip(part)
    assert Journal(store, "journal").get(keys).tolist() == [-1, -1]  # asked again, never a changed answer
    assert f"{part}: sha256 differs" in capsys.readouterr().err
