"""MLServer's own virtual environment, created on first use: `mlserver_env()` -> its `mlserver` executable.

mlserver 1.7.1 needs fastapi<0.116 and ray[serve] 2.60 needs fastapi>=0.133, so MLServer cannot live in the
project's environment. It gets `.venv-mlserver/` at the repository root (or `path`): a venv of this Python
with only `REQUIREMENTS` pip-installed (no torch: the runtime, attacks/oracles/mlserver_runtime.py, is numpy;
MLServer's own scikit-learn runtime serves the tests' scikit-learn targets). A stamp
file, written last, marks a finished venv; later calls reuse it, concurrent calls wait on a lock file beside
it, and a venv without its stamp (an interrupted install) is removed and made again.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version as _version
from pathlib import Path

from farm.errors import ShadowfarmError

# mlserver-sklearn serves scikit-learn models with MLServer's own runtime; its scikit-learn is the project's, so
# that a model pickled here with joblib loads there
REQUIREMENTS = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", f"scikit-learn=={_version('scikit-learn')}", "joblib",
                "numpy>=2.0")
DEFAULT_PATH = Path(__file__).resolve().parents[1] / ".venv-mlserver"
STAMP = ".shadowfarm-ready"


class MlserverEnvError(ShadowfarmError):
    """MLServer's environment could not be made; `index_unreachable` when pip could not fetch mlserver at all."""

    def __init__(self, message: str, *, index_unreachable: bool = False):
        super().__init__(message)
        self.index_unreachable = index_unreachable


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("WARNING")]
    return lines[-1][:300] if lines else "(no output)"


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)


def _build(path: Path) -> None:
    """Make the venv at `path` (removing a half-made one), install REQUIREMENTS, write the stamp last."""
    shutil.rmtree(path, ignore_errors=True)
    made = subprocess.run([sys.executable, "-m", "venv", str(path)], capture_output=True, text=True)
    if made.returncode:
        raise MlserverEnvError(f"{path}: python -m venv failed: {_last_line(made.stderr)}")
    python = path / "bin" / "python"
    installed = _pip(python, "install", "--quiet", *REQUIREMENTS)
    if installed.returncode:
        with tempfile.TemporaryDirectory() as scratch:  # can pip reach an index at all? fetch mlserver alone
            probe = _pip(python, "download", "--quiet", "--no-deps", "--dest", scratch, REQUIREMENTS[0])
        raise MlserverEnvError(f"{path}: pip install {' '.join(REQUIREMENTS)} failed: "
                               f"{_last_line(installed.stderr + installed.stdout)}",
                               index_unreachable=probe.returncode != 0)
    (path / STAMP).write_text("\n".join(REQUIREMENTS) + "\n")


def mlserver_env(path: str | Path = DEFAULT_PATH) -> Path:
    """The `mlserver` executable of the venv at `path`, made first if it has no stamp for REQUIREMENTS."""
    path = Path(path)
    stamp, executable = path / STAMP, path / "bin" / "mlserver"

    def ready() -> bool:
        return stamp.is_file() and stamp.read_text().split() == list(REQUIREMENTS) and executable.is_file()

    if ready():
        return executable
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent caller waits here, then finds the stamp
        if not ready():
            _build(path)
    return executable
