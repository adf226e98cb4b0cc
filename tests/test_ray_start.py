"""Starting Ray outside a job (farm.cluster.ensure_ray): a stale cluster file does not make a command hang,
and Ray's token-authentication note does not reach the user.

A head killed without `ray stop` leaves `<ray temp dir>/ray_current_cluster` naming its dead GCS; a bare
`ray.init()` joins that address and waits on it. The command runs in a subprocess whose Ray temp dir
(RAY_TMPDIR, which Ray reads before /tmp) holds such a file, so the machine's real /tmp/ray and the session's
in-process Ray (tests/conftest.py) are never touched.
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

pytestmark = pytest.mark.system  # a `shadowfarm train` subprocess with a Ray of its own

ROOT = Path(__file__).resolve().parents[1]
COMMAND_SECONDS = 300  # a smoke farm on a loaded 2-core machine; a hang on the dead GCS never ends
BANNER = "Token authentication is enabled for this Ray cluster"
# Ray's error line when an actor's constructor takes object-store arguments and may restart (the trainer actors
# get the data with each group instead)
RESTART_NOTE = "has constructor arguments in the object store"


def dead_address() -> str:
    """host:port where nothing listens (a port just freed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _leftovers(marker: str) -> list[int]:
    """Pids whose command line names `marker` (the Ray processes of the subprocess's local cluster)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and int(proc.name) != os.getpid():
            found.append(int(proc.name))
    return found


def _clean(ray_tmp: Path) -> None:
    """Kill the processes of the Ray that a test's subprocess started under `ray_tmp` (only those), remove it."""
    for pid in _leftovers(str(ray_tmp)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux /proc to find leftover processes")
def test_a_stale_cluster_file_neither_hangs_train_nor_prints_rays_notes():
    # A short path: Ray's Unix sockets live under it and socket paths are limited to ~107 bytes.
    ray_tmp = Path(tempfile.mkdtemp(prefix="sfst-", dir="/tmp"))
    try:
        stale = ray_tmp / "ray" / "ray_current_cluster"
        stale.parent.mkdir()
        address = dead_address()
        stale.write_text(address)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # the user asks for no cluster
        env["RAY_TMPDIR"] = str(ray_tmp)
        shadowfarm = str(Path(sys.executable).parent / "shadowfarm")
        command = [shadowfarm, "train", "quickstart", "--smoke-test", "--out", str(ray_tmp / "run")]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=COMMAND_SECONDS,
                              stdin=subprocess.DEVNULL)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-5000:]
        assert '"trained_now": 8' in done.stdout
        assert BANNER not in output and RESTART_NOTE not in output, output[-3000:]
        assert stale.read_text() == address  # left as the user had it
        assert any((ray_tmp / "ray").glob("session_*")), "the command should have started its own local Ray"
    finally:
        _clean(ray_tmp)


def test_session_ray_probe(ray_local):
    """What the next test runs in a subprocess: the test suite's session Ray (tests/conftest.py) is up, local."""
    assert ray_local.is_initialized() and ray_local.cluster_resources()["CPU"] == 2


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux /proc to find leftover processes")
def test_the_test_suites_ray_starts_locally_whatever_a_stale_cluster_file_says():
    """`make test` on a machine where a Ray head was killed without `ray stop`: the session Ray must not join the
    dead cluster that /tmp/ray/ray_current_cluster names (ray.init(address="local"))."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="sfsp-", dir="/tmp"))
    try:
        stale = ray_tmp / "ray" / "ray_current_cluster"
        stale.parent.mkdir()
        stale.write_text(dead_address())
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env["RAY_TMPDIR"] = str(ray_tmp)
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                   f"{Path(__file__).relative_to(ROOT)}::test_session_ray_probe"]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=COMMAND_SECONDS,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        assert any((ray_tmp / "ray").glob("session_*")), "the session should have started its own local Ray"
    finally:
        _clean(ray_tmp)
