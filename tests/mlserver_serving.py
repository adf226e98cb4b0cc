"""Serving a folder with MLServer in the tests: its venv (tests/mlserver_env.py) or a skip when no package index
can be reached, free loopback ports, and `serving(...)`: `mlserver start FOLDER` until a block ends."""

import socket
import subprocess
import urllib.request
from contextlib import contextmanager

import pytest
from mlserver_env import MlserverEnvError, mlserver_env
from polling import wait_for


def mlserver_or_skip():
    """MLServer's executable (its venv made on first use); the test is skipped only when pip reaches no index."""
    try:
        return mlserver_env()
    except MlserverEnvError as exc:
        if exc.index_unreachable:
            pytest.skip(f"pip cannot fetch mlserver==1.7.1 from a package index: {exc}")
        raise


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an http_proxy


def ready(url: str) -> bool:
    try:
        with LOOPBACK.open(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def serving(executable, folder, port: int, log):
    """`mlserver start folder` until the block ends; fails with the log's tail if it exits or is not ready."""
    process = subprocess.Popen([str(executable), "start", str(folder)], cwd=folder, stdout=log, stderr=log)
    try:
        def up():
            assert process.poll() is None, f"mlserver exited {process.returncode}: {log.name}"
            return ready(f"http://127.0.0.1:{port}/v2/health/ready")
        wait_for(up, "MLServer to be ready", limit=180)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
