"""Issue 30: content-checked runs (sha256 and size of every shard file in its `_SUCCESS`) and one writer per run
(`farm.lock`): a changed file is named by verify, retrained by resume and refused by its readers; a second writer
is refused naming the holder; a lock left by a dead writer is taken over."""

import json
import os
import time
from pathlib import Path

import pytest
from filelock import FileLock

from farm.config import load_config
from farm.driver import train_farm
from farm.errors import RunError
from farm.lock import HOLDER, LOCK, run_lock
from farm.plan import load_plan, plan_run
from farm.shards import load_weights, model_dir
from farm.storage import RunDir
from farm.verify import missing_models
from jobs import cli
from jobs.train import move_aside


@pytest.fixture
def run(farms) -> Path:
    return Path(farms.run(*farms.SMALL))


def _resume(run: Path, farms) -> list[int]:
    return train_farm(plan_run(load_config(None, farms.SMALL), str(run)), progress=False)


def _flip(path: Path, offset: int, n: int = 16) -> None:
    data = bytearray(path.read_bytes())
    data[offset:offset + n] = bytes(b ^ 0xFF for b in data[offset:offset + n])
    path.write_bytes(bytes(data))


def test_flipped_weight_bytes_named_refused_and_retrained(run, farms, capsys):
    weights = run / model_dir(5) / "weights.pt"
    _flip(weights, weights.stat().st_size // 2)  # inside the tensor data: torch would load it without a word
    damaged = weights.read_bytes()
    assert cli.main(["verify", str(run)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{weights}: sha256 differs from the one _SUCCESS records (changed after it was written)"]
    assert cli.main(["verify", str(run), "--quick"]) == 0  # sizes only: the same size
    with pytest.raises(RunError, match=r"weights\.pt: content differs from its _SUCCESS record.*shadowfarm train"):
        load_weights(RunDir(str(run)), 5)
    assert cli.main(["serve", str(run), "--model-id", "5", "--engine", "stdlib"]) == 2
    assert "weights.pt: content differs" in capsys.readouterr().err
    assert missing_models(load_plan(str(run))) == [5]
    (run / "models" / ".model_id=00005.0a1b2c3d.tmp").mkdir()  # left by a writer killed while writing it
    assert _resume(run, farms) == [5]
    assert sorted(os.listdir(run / "models"))[0] == "model_id=00000"
    assert weights.read_bytes() != damaged  # retrained alone: equal to the first up to float rounding
    assert cli.main(["verify", str(run)]) == 0


def test_changed_responses_refused_by_attack_with_one_line(run, capsys):
    responses = run / model_dir(2) / "responses.parquet"
    _flip(responses, 8)
    assert cli.main(["attack", str(run), "--attacks", "gap", "--bootstrap", "0", "--no-report", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{responses}: content differs" in err[0] and "shadowfarm train" in err[0]
    responses.write_bytes(responses.read_bytes()[:-10])
    assert cli.main(["verify", str(run), "--quick"]) == 1
    assert "bytes, _SUCCESS records" in capsys.readouterr().out


def test_run_without_content_records_still_verifies_attacks_and_resumes(run, farms, capsys):
    for success in run.glob("models/*/_SUCCESS"):
        success.write_text(success.read_text().splitlines()[0] + "\n")  # as written before content records
    assert cli.main(["verify", str(run)]) == 0
    assert _resume(run, farms) == []
    assert cli.main(["attack", str(run), "--attacks", "gap", "--bootstrap", "0", "--no-report", "--quiet"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "made before content hashes" in line]
    assert notes and all(line == notes[0] for line in notes)  # one line, naming the run
    assert str(run) in notes[0]


def test_content_records_through_a_pyarrow_filesystem():
    """An object store (pyarrow's mock filesystem): the same records, checks and refusals as a local path."""
    import pyarrow as pa

    from farm.shards import check_model_shard, write_model_shard
    from tests.test_shards import shard_inputs

    store = RunDir("mock:///bucket/run")
    state, table = shard_inputs()
    write_model_shard(store, model_id=1, state_dict=state, metrics={"a": 1}, responses=table, config_hash="abc")
    ok = dict(config_hash="abc", n_examples=4, n_queries=2, n_classes=3)
    assert check_model_shard(store, 1, **ok) == []
    rel = f"{model_dir(1)}/weights.pt"
    data = bytearray(store.read_bytes(rel))
    data[-40] ^= 0xFF
    with store.fs.open_output_stream(store.path(rel)) as out:
        out.write(pa.py_buffer(bytes(data)))
    assert "sha256 differs" in check_model_shard(store, 1, **ok)[0]
    assert check_model_shard(store, 1, **ok, quick=True) == []
    with pytest.raises(RunError, match="content differs"):
        load_weights(store, 1)


def _hold(run: Path, pid: int = 4242) -> FileLock:
    """Another writer's hold on the run: the flock and its holder record."""
    lock = FileLock(str(run / LOCK), timeout=0)
    lock.acquire()
    (run / HOLDER).write_text(json.dumps({"host": "node-7", "pid": pid, "started": 0, "command": "train"}))
    return lock


def test_a_second_writer_is_refused_at_once_naming_the_holder(run, farms, capsys):
    held = _hold(run)
    try:
        with pytest.raises(RunError, match=r"another writer holds the run: host node-7, pid 4242, since 1970"):
            _resume(run, farms)
        assert cli.main(["attack", str(run), "--attacks", "gap", "--bootstrap", "0", "--no-report"]) == 2
        assert "pid 4242" in capsys.readouterr().err
        with pytest.raises(RunError, match="pid 4242"):
            move_aside(str(run), "another-config")
        assert (run / "run.json").is_file()  # not moved: it is being written
    finally:
        held.release()
    assert _resume(run, farms) == []  # free again


def test_writers_of_other_areas_run_together_two_of_one_area_do_not(run, capsys):
    """attack, tune and a study write apart (concurrent jobs on a cluster); two attacks, or --new-run under an
    attack, refuse; an attack refuses while train holds the run (tests above)."""
    other = FileLock(str(run / ".writer-attack.lock"), timeout=0)  # another process's attack
    other.acquire()
    (run / ".writer-attack.json").write_text(json.dumps({"host": "node-3", "pid": 77, "started": 0,
                                                         "command": "attack"}))
    try:
        with run_lock(str(run), command="tune", area="tune"), run_lock(str(run), command="ood", area="ood"):
            assert (run / ".writer-tune.json").is_file() and (run / ".writer-ood.json").is_file()
        assert cli.main(["attack", str(run), "--attacks", "gap", "--bootstrap", "0", "--no-report"]) == 2
        assert "host node-3, pid 77" in capsys.readouterr().err
        with pytest.raises(RunError, match="pid 77"):
            move_aside(str(run), "another-config")
    finally:
        other.release()


def test_a_lock_left_by_a_dead_writer_is_taken_over(run, farms, capsys):
    (run / HOLDER).write_text(json.dumps({"host": "node-7", "pid": 999999, "started": 0, "command": "train"}))
    assert _resume(run, farms) == []  # no flock held: its process is gone
    assert "took over the lock of host node-7, pid 999999" in capsys.readouterr().err
    assert not (run / HOLDER).exists()  # released


def test_a_lease_on_an_object_store_refuses_until_it_expires(capsys):
    store = RunDir("mock:///bucket/run")
    store.write_text("run.json", "{}")
    lease = {"host": "node-7", "pid": 4242, "started": 0, "command": "train", "token": "t"}
    store.write_json(HOLDER, {**lease, "expires": time.time() + 600})
    with pytest.raises(RunError, match="pid 4242"), run_lock(store, command="attack"):
        pass
    store.write_json(HOLDER, {**lease, "expires": time.time() - 1})
    with run_lock(store, command="attack"):
        held = store.read_json(HOLDER)
        assert held["pid"] == os.getpid() and held["expires"] > time.time()
    assert "its lease expired" in capsys.readouterr().err
    assert not store.is_file(HOLDER)


def test_a_shard_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """A rewrite that dies midway leaves the old shard as it was, never a mix (temp folder, then rename)."""
    import farm.storage
    from farm.shards import write_model_shard
    from tests.test_shards import shard_inputs

    store = RunDir(str(tmp_path))
    state, table = shard_inputs()
    write_model_shard(store, model_id=0, state_dict=state, metrics={"a": 1}, responses=table, config_hash="abc")
    before = {p.name: p.read_bytes() for p in (tmp_path / model_dir(0)).iterdir()}
    written = []

    def dies_on_third(path, data):
        written.append(path)
        if len(written) == 3:
            raise OSError("disk full")
        Path(path).write_bytes(data)

    monkeypatch.setattr(farm.storage, "_write_synced", dies_on_third, raising=False)
    with pytest.raises(OSError, match="disk full"):
        write_model_shard(store, model_id=0, state_dict=state, metrics={"a": 2}, responses=table, config_hash="new")
    assert {p.name: p.read_bytes() for p in (tmp_path / model_dir(0)).iterdir()} == before


def test_a_changed_cache_part_of_the_attack_stage_is_computed_again(run):
    """requery/ (as boundary/ and whitebox/): each part has its sha256 and size beside it; a changed one is redone."""
    from attacks.compute.requery import requery
    from farm.config import QuerySpec

    plan = load_plan(str(run))
    data = plan.dataset

    def answers():
        return requery(plan.run, specs=[QuerySpec("flip")], info=data.info, x=data.x, labels=data.y, models=[1],
                       n_models=8, seed=0, local=True)[1]

    first = answers()
    [part] = list(run.glob("requery/*/model_id=00001/part-*.parquet"))
    assert part.with_name(f".{part.name}.sha256").is_file()
    clean = part.read_bytes()
    _flip(part, len(clean) // 2)
    assert (answers() == first).all() and part.read_bytes() == clean  # computed again, the same answers
