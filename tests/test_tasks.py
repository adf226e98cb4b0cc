"""`attacks.compute.tasks.map_tasks`, the attack stage's one Ray fan-out: results in the items' order, at most
`limit` in flight, and a task whose worker process dies runs again (with a line saying so), at most RETRIES times."""

import os
from pathlib import Path

import pytest
import ray

from attacks.compute.tasks import RETRIES, map_tasks, task


def _squares(dying: Path):
    """A `task`: i * i, but item 2 kills its worker process while the file `dying` holds a count above 0 (and
    decrements it, replacing the file whole: the other task in flight may read it meanwhile). Made inside a
    function so that Ray ships it by value (the tests are not a package)."""

    def square_or_die(i: int) -> int:
        left = int(dying.read_text())
        if i == 2 and left > 0:
            fresh = dying.with_suffix(".next")  # replaced whole: a task reading at once never sees an empty file
            fresh.write_text(str(left - 1))
            os.replace(fresh, dying)
            os._exit(1)  # the worker process dies, as on a lost node or under the OOM killer
        return i * i

    return task(square_or_die)


def test_results_in_order_and_a_lost_worker_runs_again(ray_local, tmp_path, capsys):
    dying = tmp_path / "dying"
    dying.write_text("2")
    squares = _squares(dying)
    got = map_tasks(lambda i: squares.remote(i), range(5), desc="squares", unit="item", limit=2,
                    progress=False)
    assert got == [0, 1, 4, 9, 16] and dying.read_text() == "0"
    err = capsys.readouterr().err
    assert err.count("squares: item 2 runs again: its worker or node was lost (WorkerCrashedError)") == 2


def test_a_task_lost_too_often_raises(ray_local, tmp_path):
    dying = tmp_path / "dying"
    dying.write_text(str(RETRIES + 1))
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        map_tasks(lambda i: _squares(dying).remote(i), range(3), desc="squares", progress=False)


def test_a_caller_that_started_no_ray_gets_one(ray_local, tmp_path, monkeypatch):
    """`study queries` crafted through `map_tasks` in a process where nothing had started Ray (a traceback: 'Ray
    has not been started yet'): map_tasks connects or starts Ray itself (`farm.cluster.ensure_ray`)."""
    from attacks.compute import tasks

    started = []
    monkeypatch.setattr(tasks, "ensure_ray", lambda: started.append(True))
    (tmp_path / "dying").write_text("0")
    squares = _squares(tmp_path / "dying")
    assert map_tasks(lambda i: squares.remote(i), [3], desc="squares", progress=False) == [9] and started == [True]
