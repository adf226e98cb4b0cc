"""Issue 9: the driver killed (SIGKILL) mid-farm and mid-attack; re-running the same command finishes the
work and redoes only what was unfinished (finished files keep their mtimes).

The jobs run as a user runs them: `python -m jobs.cli ...` in a subprocess, each in its own session with its
own local Ray (RAY_ADDRESS=local) under a fresh RAY_TMPDIR, which the re-run shares with the killed run, as
on a real machine. They are stopped at a known point by the test hook `farm.worker.hold_point`
(SHADOWFARM_TEST_HOLD_DIR): trainer actors wait before each group, the attack stage after each attack,
until the test creates a `go` file, so the kill never races the work. A killed driver's Ray leaves
agents behind (its GCS and raylet die with it): the test ends them by process id, through the session.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from polling import wait_for

from attacks.stage import AttackOptions, attack_run
from farm.config import load_config
from farm.driver import train_farm
from farm.plan import plan_run
from farm.shards import model_dir
from farm.worker import HOLD_ENV
from jobs import cli

pytestmark = pytest.mark.system  # `python -m jobs.cli` subprocesses, killed mid-run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.subsample=120", "membership.n_models=8", "train.epochs=2", "farm.group_size=2", "farm.num_actors=2",
        "model.hidden=[16]", "queries=[clean, {kind: translate, d: 1}, {kind: gaussian, sigma: 0.1, n: 3}]"]
TRAIN = ["train", "quickstart", *[arg for item in TINY for arg in ("--set", item)], "--quiet"]
ATTACK = ["--quiet", "--no-report", "--bootstrap", "0", "--pseudo-targets", "2"]


@pytest.fixture
def ray_tmp():
    path = tempfile.mkdtemp(prefix="sfkill-", dir="/tmp")  # short: Ray's sockets live under it
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(ray_tmp: str, hold: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != HOLD_ENV}
    env.update(RAY_ADDRESS="local", RAY_TMPDIR=ray_tmp, PYTHONPATH=str(ROOT), RAY_ACCEPT_CLUSTER_WITHOUT_LOCAL_GPU="1")
    if hold is not None:
        env[HOLD_ENV] = str(hold)
    return env


def _end_session(sid: int) -> None:
    """SIGKILL, by process id, whatever is left in the session of a job this test started."""
    if not Path("/proc").is_dir():
        return
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


class Job:
    """`python -m jobs.cli ARGS` in its own session, output to files."""

    def __init__(self, args: list[str], *, env: dict, log: Path):
        self.out, self.err = log.with_suffix(".out"), log.with_suffix(".err")
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "jobs.cli", *args], cwd=log.parent, env=env,
                                            stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        assert self.process.poll() is None, f"the job exited early ({self.process.returncode}):\n{self.output()}"
        return True

    def output(self) -> str:
        return self.out.read_text()[-3000:] + "\n" + self.err.read_text()[-5000:]

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _mtimes(directory: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}


def test_driver_killed_mid_farm_resumes(ray_local, tmp_path, ray_tmp, capsys):
    hold, run = tmp_path / "hold", tmp_path / "run"
    hold.mkdir()
    job = Job([*TRAIN, "--out", str(run)], env=_env(ray_tmp, hold), log=tmp_path / "killed")
    try:
        marker = wait_for(lambda: job.alive() and sorted(hold.glob("train-*")), "a group to start")[0]
        tag = marker.name.rsplit(".", 1)[0]
        first = int(tag.split("-")[1])
        _second_writers_refused(job, run, tmp_path, capsys)
        (hold / f"go.{tag}").touch()  # only this group may finish; the others wait
        group = [first, first + 1]
        wait_for(lambda: job.alive() and all((run / model_dir(m) / "_SUCCESS").exists() for m in group),
                 "the released group's _SUCCESS")
        job.kill()
    finally:
        _end_session(job.process.pid)
    done = [m for m in range(8) if (run / model_dir(m) / "_SUCCESS").exists()]
    assert done == group
    finished = {p: t for m in done for p, t in _mtimes(run / model_dir(m)).items()}

    assert cli.main(["verify", str(run)]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 6 and all("missing (model not finished)" in line for line in printed)

    # the same command again, in this process (its Ray is the session's: a subprocess would only add start-up)
    assert cli.main([*TRAIN, "--out", str(run)]) == 0
    out, err = capsys.readouterr()
    assert '"trained_now": 6' in out and '"already_done": 2' in out
    assert f"took over the lock of host {socket.gethostname()}, pid {job.process.pid}, since" in err
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert cli.main(["verify", str(run)]) == 0


def _second_writers_refused(job: Job, run: Path, tmp_path: Path, capsys) -> None:
    """Issue 30: while `job` trains `run`, another train (another config), --new-run and attack are refused at once,
    each with one line naming it; --new-run moves nothing."""
    capsys.readouterr()
    other = [*TRAIN, "--set", "train.epochs=3", "--out", str(run)]
    for argv in (other, [*other, "--new-run"], ["attack", str(run), *ATTACK]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "another writer holds the run" in err and f"pid {job.process.pid}, since" in err and "\n" not in err
    assert not list(tmp_path.glob("run.old-*"))


@pytest.fixture
def trained(ray_local, tmp_path):
    plan = plan_run(load_config(None, TINY), str(tmp_path / "run"))
    train_farm(plan, progress=False)
    return tmp_path / "run"


def test_driver_killed_mid_attack_resumes(trained, tmp_path, ray_tmp, capsys):
    hold = tmp_path / "hold"
    hold.mkdir()
    for tasks in ("whitebox-", "crafting-", "boundary-"):  # the attack stage's tasks pass; it holds between attacks
        (hold / f"go.{tasks}").touch()
    job = Job(["attack", str(trained), *ATTACK], env=_env(ray_tmp, hold), log=tmp_path / "killed")
    try:
        marker = wait_for(lambda: job.alive() and sorted(hold.glob("attack-*")), "an attack to finish")[0]
        job.kill()
    finally:
        _end_session(job.process.pid)
    first = marker.name.rsplit(".", 1)[0].removeprefix("attack-")
    attacks = trained / "attacks"
    assert [p.parent.name for p in attacks.glob("*/metrics.json")] == [first]
    assert (attacks / first / "scores.parquet").exists()
    finished = _mtimes(attacks / first)

    assert cli.main(["attack", str(trained), *ATTACK]) == 0  # the same command again, in this process
    out = capsys.readouterr().out
    assert _mtimes(attacks / first) == finished  # not redone
    names = {p.parent.name for p in attacks.glob("*/metrics.json")}
    assert first in names and {"gap", "noise", "calibrated", "transfer", "loss"} <= names
    assert all(name in out for name in names)
    # the same settings again (in this process) redo nothing and return the saved metrics
    before = _mtimes(attacks)
    results = attack_run(str(trained), AttackOptions(n_pseudo=2, bootstrap=0), progress=False)
    assert _mtimes(attacks) == before
    assert {r["attack"] for r in results if "skipped" not in r} == names
