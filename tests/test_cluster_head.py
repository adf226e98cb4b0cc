"""Running on a cluster (issue 7), for real: the smoke train, attack, tune and study jobs run through
`ray job submit` against a real `ray start --head` on this machine (cluster.yaml and the run location are
checked in tests/test_cluster.py).

The head is kept apart from the session's in-process Ray (tests/conftest.py) and from any other Ray on the
machine: its own temp dir (so `ray.init()` elsewhere never finds it through /tmp/ray/ray_current_cluster),
its own free port for every server it opens, its own token file for Ray's token authentication, and
RAY_ADDRESS only in the environment of the subprocesses. It is stopped by terminating the `ray start --block`
process this test started (which stops the processes it launched), not with `ray stop`: `ray stop` kills
every Ray process on the machine by name, the session's Ray and other users' included. Processes of the head
still alive after that (their command line or working directory inside its temp dir) are terminated by pid.

Set SHADOWFARM_SKIP_RAY_HEAD=1 to skip the head test on a machine that cannot start one.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from farm.plan import load_plan
from farm.shards import model_dir
from farm.verify import verify_plan

pytestmark = pytest.mark.system  # a Ray head and `ray job submit` subprocesses

ROOT = Path(__file__).resolve().parents[1]
SKIP_HEAD = os.environ.get("SHADOWFARM_SKIP_RAY_HEAD") == "1"
HEAD_START_SECONDS = 180  # bounds of the polling loops: generous for a loaded 2-core machine
JOB_SECONDS = 900
POLL_SECONDS = 1.0


def free_ports(n: int) -> list[int]:
    """n distinct ports free on every interface right now (Ray's gRPC servers bind all interfaces)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Head:
    """A `ray start --head --block` this test owns, and the Jobs REST API on its loopback dashboard."""

    def __init__(self, temp_dir: Path):
        self.temp_dir = temp_dir
        self.token = secrets.token_hex(32)
        token_file = temp_dir / "auth_token"
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        venv_bin = str(Path(sys.executable).parent)  # not resolved: the venv's bin, not the base interpreter's
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env = {**env, "PATH": venv_bin + os.pathsep + env.get("PATH", ""), "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN_PATH": str(token_file), "RAY_ACCEPT_CLUSTER_WITHOUT_LOCAL_GPU": "1"}
        names = ("port", "dashboard-port", "ray-client-server-port", "node-manager-port", "object-manager-port",
                 "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
                 "metrics-export-port")
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.url = f"http://127.0.0.1:{self.ports['dashboard-port']}"
        self.log = temp_dir / "head.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = ["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                   "--num-gpus=0", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                   f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
                   *(f"--{name}={port}" for name, port in self.ports.items())]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, env=self.env, cwd=self.temp_dir, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        deadline = time.monotonic() + HEAD_START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HeadExited(f"ray start exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            if "Ray runtime started" in self.log.read_text(errors="replace") and self._ready():
                return
            time.sleep(POLL_SECONDS)
        pytest.fail(f"the head was not ready after {HEAD_START_SECONDS} s:\n{self.log.read_text()[-3000:]}")

    def _request(self, path: str, method: str = "GET"):
        request = urllib.request.Request(self.url + path, method=method,
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def _ready(self) -> bool:
        try:
            self._request("/api/version")
            return True
        except (OSError, ValueError):
            return False

    def submit(self, submission_id: str, entrypoint: list[str]) -> None:
        """`ray job submit --working-dir . --no-wait` from the repository, RAY_ADDRESS in its env only."""
        command = ["ray", "job", "submit", "--working-dir", ".", "--submission-id", submission_id, "--no-wait",
                   "--", *entrypoint]
        done = subprocess.run(command, cwd=ROOT, env={**self.env, "RAY_ADDRESS": self.url}, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"ray job submit failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    def wait(self, submission_id: str) -> str:
        """Poll the job's status until it is terminal (bounded); returns it."""
        deadline = time.monotonic() + JOB_SECONDS
        while time.monotonic() < deadline:
            status = self._request(f"/api/jobs/{submission_id}")["status"]
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                return status
            time.sleep(POLL_SECONDS)
        return "TIMEOUT"

    def logs(self, submission_id: str) -> str:
        return self._request(f"/api/jobs/{submission_id}/logs")["logs"]

    def stop(self) -> None:
        """Stop unfinished jobs, terminate `ray start --block`, then any process of this head still alive."""
        if self.process is None:
            return
        try:
            for job in self._request("/api/jobs/") or []:
                if job.get("status") in ("PENDING", "RUNNING") and job.get("submission_id"):
                    self._request(f"/api/jobs/{job['submission_id']}/stop", method="POST")
        except (OSError, ValueError):
            pass  # the head is already gone: nothing to stop through it
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # our own process group (start_new_session)
                self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while (left := self.leftovers()) and time.monotonic() < deadline:
            for pid in left:
                _signal(pid, signal.SIGTERM if time.monotonic() < deadline - 10 else signal.SIGKILL)
            time.sleep(POLL_SECONDS)

    def leftovers(self) -> list[int]:
        """Pids whose command line or working directory lies inside this head's temp dir (Linux /proc)."""
        marker, found = str(self.temp_dir), []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                cwd = os.readlink(proc / "cwd")
            except OSError:
                continue
            if int(proc.name) != os.getpid() and (marker in cmdline or cwd.startswith(marker)):
                found.append(int(proc.name))
        return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class HeadExited(Exception):
    """`ray start` exited before the head was ready (e.g. a port taken between picking and binding)."""


@contextmanager
def ray_head(attempts: int = 2):
    """A started head; a second attempt with fresh ports and dir if `ray start` exits early."""
    for attempt in range(attempts):
        # A short path: Ray's Unix sockets live under it and socket paths are limited to ~107 bytes.
        head = Head(Path(tempfile.mkdtemp(prefix="sfhead-", dir="/tmp")))
        try:
            head.start()
            break
        except HeadExited as exc:
            _stop(head)
            if attempt == attempts - 1:
                pytest.fail(str(exc))
        except BaseException:  # not ready in time, interrupted: never leave a head running
            _stop(head)
            raise
    try:
        yield head
    finally:
        _stop(head)


def _stop(head: Head) -> None:
    head.stop()
    left = head.leftovers()
    shutil.rmtree(head.temp_dir, ignore_errors=True)
    assert not left, f"processes of the test head still alive: {left}"


@pytest.mark.skipif(SKIP_HEAD, reason="SHADOWFARM_SKIP_RAY_HEAD=1: this machine cannot start a Ray head")
@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux /proc to find the head's processes")
def test_smoke_jobs_through_ray_job_submit(tmp_path):
    run = tmp_path / "run"  # absolute: the job runs in a temporary copy of the working directory
    train = ["python", "-m", "jobs.train", "--smoke-test", "--out", str(run), "--quiet",
             # the attack job's smoke farm (8 models), so that it attacks this run instead of refusing it
             "--set", "membership.n_models=8"]
    attack = ["python", "-m", "jobs.attack", "--smoke-test", "--run", str(run), "--quiet",
              "--attacks", "gap,augmentation,calibrated"]
    tune = ["python", "-m", "jobs.tune", "--smoke-test", "--run", str(run), "--attack", "noise", "--num-samples", "2"]
    study = ["python", "-m", "jobs.study", "calibration", "--smoke-test", "--run", str(run)]
    # no --out: the smoke test picks a directory a job may use (jobs.common.smoke_out), not a relative one
    default = ["python", "-m", "jobs.train", "--smoke-test", "--quiet"]
    default_run = Path(tempfile.gettempdir()) / "shadowfarm-smoke" / "quickstart-smoke"
    existed = default_run.exists()  # a user's smoke run there is kept; the test's own is removed
    suffix = secrets.token_hex(4)
    logs = {}
    with ray_head() as head:
        # Two waves of concurrent jobs: the farms, then three jobs that read the train job's run (each writes
        # its own folder of it: attacks/ and report/, tune/, studies/).
        for wave in ((("default", default), ("train", train)), (("attack", attack), ("tune", tune), ("study", study))):
            for name, entrypoint in wave:
                head.submit(f"sf-{name}-{suffix}", entrypoint)
            for name, _ in wave:
                status = head.wait(f"sf-{name}-{suffix}")
                logs[name] = head.logs(f"sf-{name}-{suffix}")
                assert status == "SUCCEEDED", f"{name}:\n{logs[name][-5000:]}"
    train_logs, attack_logs = logs["train"], logs["attack"]

    default_summary = json.loads(next(line for line in logs["default"].splitlines() if line.startswith("{")))
    assert default_summary["run"] == str(default_run) and default_summary["models"] == 8
    assert f"the smoke run directory is {default_run}" in logs["default"]
    assert verify_plan(load_plan(str(default_run))) == []
    if not existed:
        shutil.rmtree(default_run)

    summary = json.loads(next(line for line in train_logs.splitlines() if line.startswith("{")))
    assert summary["run"] == str(run) and summary["models"] == 8 and summary["trained_now"] == 8
    resumed = json.loads(next(line for line in attack_logs.splitlines() if line.startswith("{")))
    assert resumed["trained_now"] == 0 and resumed["already_done"] == 8  # the attack job used the train job's run
    assert f"report: {run}/report/index.html" in attack_logs
    assert "noise: 2 trials (0 failed)" in logs["tune"]
    assert json.loads((run / "tune" / "noise" / "best.json").read_text())["chosen"]["score"] >= 0
    assert f"wrote {run}/studies/calibration.parquet" in logs["study"]
    assert {p.name for p in run.iterdir()} >= {"run.json", "membership.parquet", "queries.parquet", "models",
                                                "attacks", "report", "tune", "studies"}
    for m in range(8):
        assert (run / model_dir(m) / "_SUCCESS").read_text().splitlines()[0] == summary["config_hash"]
    for name in ("gap", "augmentation", "calibrated"):
        assert (run / "attacks" / name / "scores.parquet").is_file()
        assert 0 <= json.loads((run / "attacks" / name / "metrics.json").read_text())["auc"] <= 1
    assert (run / "report" / "index.html").is_file() and (run / "report" / "roc.png").is_file()
    assert verify_plan(load_plan(str(run))) == []
