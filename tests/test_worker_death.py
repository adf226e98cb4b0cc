"""Issue 9: a trainer actor killed (SIGKILL) while it trains a group; the farm still completes, unchanged.

Synchronised through the worker's test hook (`farm.worker.hold_point`): with SHADOWFARM_TEST_HOLD_DIR set,
every actor announces the group it starts (a marker file holding its Ray actor id) and waits for a `go`
file. The test kills the announcing process, then releases everyone. One kill is absorbed by Ray (actor
restart + task retry); two kills with farm.max_retries=1 exhaust Ray's restarts, so the driver replaces
the actor and retries its groups.
"""

import os
import signal
import threading
from pathlib import Path

import pytest
from polling import wait_for

from farm.config import load_config
from farm.driver import train_farm
from farm.plan import load_plan, plan_run
from farm.shards import load_weights, model_dir
from farm.storage import RunDir
from farm.verify import verify_plan
from farm.worker import HOLD_ENV

pytestmark = pytest.mark.system  # SIGKILLs Ray's trainer actors: the cluster's fault tolerance

TINY = ["data.subsample=120", "membership.n_models=6", "train.epochs=2", "farm.group_size=2", "farm.num_actors=2",
        "farm.max_retries=1", "model.hidden=[16]", "queries=[clean, {kind: translate, d: 1}]"]
FILES = {"weights.pt", "metrics.json", "responses.parquet", "_SUCCESS"}


def _pid(marker: Path) -> int:
    return int(marker.name.rsplit(".", 1)[1])


def _train(out: Path):
    plan = plan_run(load_config(None, TINY), str(out))
    return plan, train_farm(plan, progress=False)


@pytest.fixture(scope="module")
def undisturbed(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("undisturbed") / "run"
    _train(out)
    return RunDir(str(out))


def _killer(hold: Path, kills: int, errors: list) -> None:
    """Kill the first actor that announces a group, `kills` times (each restart of it again), then release."""
    try:
        first = sorted(wait_for(lambda: sorted(hold.glob("train-*")), "a group to start"))[0]
        actor_id, killed = first.read_text(), [_pid(first)]
        os.kill(killed[0], signal.SIGKILL)
        for _ in range(kills - 1):
            again = wait_for(lambda: [p for p in hold.glob("train-*")
                                      if p.read_text() == actor_id and _pid(p) not in killed], "the restarted actor")
            killed.append(_pid(again[0]))
            os.kill(killed[-1], signal.SIGKILL)
    except BaseException as exc:  # reported by the test's thread
        errors.append(exc)
    finally:
        (hold / "go").touch()


@pytest.mark.parametrize("kills", [1, 2], ids=["ray-restarts-the-actor", "driver-replaces-the-actor"])
def test_killed_trainer_actor(undisturbed, tmp_path, monkeypatch, capsys, kills):
    hold = tmp_path / "hold"
    hold.mkdir()
    monkeypatch.setenv(HOLD_ENV, str(hold))
    errors: list = []
    killer = threading.Thread(target=_killer, args=(hold, kills, errors), daemon=True)
    killer.start()
    try:
        plan, trained_now = _train(tmp_path / "run")
    finally:
        (hold / "go").touch()
        killer.join()
    assert not errors, errors
    assert trained_now == list(range(6))
    assert "were trained again: their trainer actor died" in capsys.readouterr().err  # the output says so
    # each kill interrupts a group, which is started once more; after two kills, by a new actor (the driver's).
    # Which group the restarted actor starts first is up to Ray (it retries both of the actor's queued
    # groups), so count the extra starts over all groups, not the starts of one.
    markers = list(hold.glob("train-*"))
    tags = [p.name.rsplit(".", 1)[0] for p in markers]
    assert len(tags) - len(set(tags)) >= kills
    assert len({p.read_text() for p in markers}) == (2 if kills == 1 else 3)

    run = plan.run
    assert run.listdir("models") == [model_dir(m).split("/")[1] for m in range(6)]
    for m in range(6):
        assert set(run.listdir(model_dir(m))) == FILES  # every model exactly once, no temp files left
        rel = f"{model_dir(m)}/responses.parquet"
        assert run.read_table(rel).equals(undisturbed.read_table(rel)), m
        ours, theirs = load_weights(run, m), load_weights(undisturbed, m)
        assert all((ours[k] == theirs[k]).all() for k in theirs), m
    assert verify_plan(load_plan(run.uri)) == []
