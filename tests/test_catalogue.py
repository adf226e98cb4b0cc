"""The bad-input catalogue: every malformed input a user can hand shadowfarm, one case each (the cases are
in tests/catalogue_cases.py, the malformed files they name in tests/catalogue_files.py).

Configs (types, ranges, unknown keys), data sets (the user-supplied npz and CSV files), command-line
arguments and oracle answers. Every case must give exit code 2 and ONE line on stderr,
``shadowfarm: error: ...``, naming the field or file and what was expected, and leave nothing half
written: no run directory is created, and an existing run stays byte-identical.

Argument-syntax errors caught by argparse (`kind="argparse"`) exit 2 through argparse (SystemExit),
with the same one line (`jobs.common.ArgumentParser`). Oracle answers go through `check_labels`
(attacks.oracles.base), the validation every `CountingOracle` applies, and are reported by the same `run_cli`.

docs/errors.md is this list: each case's row there must equal the line it printed; with
SHADOWFARM_ERRORS_PAGE=write the cases write the page instead (`python tests/errors_page.py`, tests/errors_page.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import errors_page
import numpy as np
import pytest
from catalogue_cases import CASES, SECRET, Case
from catalogue_files import make_files

from attacks.oracles.base import CountingOracle
from farm.resources import MEMORY_ENV
from jobs import cli
from jobs.common import run_cli


class _Answers(CountingOracle):
    """An oracle that answers whatever it is told to (a stand-in for a misbehaving target)."""

    def __init__(self, answer):
        super().__init__(num_classes=10)
        self._answer_given = answer

    def _answer(self, x):
        return self._answer_given


@dataclass
class Context:
    files: str
    out: str
    request: pytest.FixtureRequest | None = None
    run_dir: str | None = None

    @property
    def run(self) -> str:
        if self.run_dir is None:
            self.run_dir = self.request.getfixturevalue("tiny_run")
        return self.run_dir


def snapshot(root: str | Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (None) under `root`, but the writers' empty lock files (`farm.lock`:
    `filelock` leaves them behind; the holder records beside them must be gone)."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))
            if not (p.name.startswith(".writer") and p.name.endswith(".lock"))}


def invoke(case: Case, ctx: Context) -> int:
    """The exit code of one case, run in process (its message goes to stderr)."""
    if case.kind == "oracle":
        return run_cli(lambda: _Answers(case.argv(ctx)).predict_labels(np.zeros((4, 3), np.float32)))
    if case.kind == "argparse":
        with pytest.raises(SystemExit) as info:
            cli.main(case.argv(ctx))
        return info.value.code
    return cli.main(case.argv(ctx))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("catalogue")
    make_files(path)
    return path


@pytest.fixture(scope="module")
def tiny_run(farms) -> str:
    return farms.run(*farms.SMALL)  # any trained run: every case fails before it reads or writes one


@pytest.fixture(scope="module")
def page_rows() -> dict[str, str]:
    """docs/errors.md's rows as the cases print them, written as the page when asked (errors_page.writing)."""
    rows: dict[str, str] = {}
    yield rows
    if errors_page.writing():
        errors_page.write(rows, [c.id for c in CASES])


def test_catalogue_is_large_and_ids_are_unique():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_one_clear_line_exit_2_nothing_written(case, files, page_rows, tmp_path, request, capsys,
                                                         monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, str(8 * 2**30))  # the memory checks' bound: the same lines on every machine
    ctx = Context(files=str(files), out=str(tmp_path / "out"), request=request)
    before = snapshot(ctx.run) if case.kind == "run" else None
    files_before = snapshot(files)
    capsys.readouterr()  # drop what setting up the tiny run printed (Ray's start-up notes)
    code = invoke(case, ctx)
    err = capsys.readouterr().err.strip()
    expected = case.expected.format(files=files)
    assert code == 2, err
    assert err.startswith("shadowfarm: error: ") and "\n" not in err and expected in err, err
    assert "Traceback" not in err
    assert SECRET not in err
    assert not Path(ctx.out).exists()
    assert snapshot(files) == files_before
    if before is not None:
        assert snapshot(ctx.run) == before
    printed = errors_page.row(case, err, files=files, run=ctx.run_dir, out=ctx.out)
    if errors_page.writing():
        page_rows[case.id] = printed
    else:
        assert errors_page.documented_rows().get(case.id) == printed, \
            f"docs/errors.md is out of sync: regenerate it (python tests/errors_page.py)\n{printed}"


def test_a_user_error_raised_inside_a_ray_task_is_still_one_line(ray_local, capsys):
    """Ray wraps it (RayTaskError(DataError), whose text holds the remote traceback): print the cause only."""
    from farm.errors import DataError

    @ray_local.remote
    def fails():
        raise DataError("part.parquet: a user error raised on a worker")

    assert run_cli(lambda: ray_local.get(fails.remote())) == 2
    assert capsys.readouterr().err == "shadowfarm: error: part.parquet: a user error raised on a worker\n"

