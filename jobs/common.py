"""Shared pieces of the entry points: `job_main` (the parser, --smoke-test, one-line errors), config lookup,
argument types. A leaf: it imports no other job (the smoke farm is `jobs.smoke`)."""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from farm.errors import ConfigError, ShadowfarmError

if TYPE_CHECKING:
    from farm.plan import Plan

CONFIGS = Path(__file__).parent / "configs"
MAX_ERROR_LINE = 2000


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error convention: one line, `shadowfarm: error: ...`, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"shadowfarm: error: {self.prog}: {message} (see {self.prog} --help)\n")


def job_parser(prog: str, doc: str | None, add_arguments: Callable[[argparse.ArgumentParser], None], *,
               smoke_help: str | None = None, epilog: str | None = None) -> ArgumentParser:
    """The project's parser of one entry point: its options (`add_arguments`), and --smoke-test when
    `smoke_help` is given (jobs whose options already hold --smoke-test pass none)."""
    parser = ArgumentParser(prog=prog, description=doc, epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    if smoke_help is not None:
        parser.add_argument("--smoke-test", action="store_true", help=smoke_help)
    return parser


def job_main(argv: list[str] | None, parser: argparse.ArgumentParser, *, run: Callable[[argparse.Namespace], int],
             smoke: Callable[[argparse.Namespace], None] | None = None, needs_run: bool = False) -> int:
    """Parse `argv` and run the job: `smoke(args)` first with --smoke-test (it trains the smoke farm and
    shrinks the job's sizes), then `run(args)`; user errors become one line and exit code 2 (`run_cli`).
    `needs_run`: the job reads a run directory, --run, which --smoke-test may fill in."""
    args = parser.parse_args(argv)

    def go() -> int:
        if smoke is not None and args.smoke_test:
            smoke(args)
        if needs_run and not args.run:
            raise ConfigError("--run: a run directory is required (or use --smoke-test)")
        return run(args)

    return run_cli(go)


def writes_run(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Decorator of a job's `run(args)` that writes into `args.run`: it runs holding the lock of its area of the
    run (`farm.lock`: one writer of a kind per run, none while `train` writes the run), under both `shadowfarm
    VERB` and `python -m jobs.VERB`."""

    @functools.wraps(run)
    def locked(args: argparse.Namespace) -> int:
        from farm.lock import run_lock
        from farm.runfile import run_config
        from farm.storage import RunDir

        run_config(RunDir(args.run))  # a run to write into (checked before its lock file is made there)
        module = run.__module__
        if module == "__main__":  # `python -m jobs.VERB`: the module's own name
            module = getattr(getattr(sys.modules["__main__"], "__spec__", None), "name", module)
        area = module.rsplit(".", 1)[-1]
        with run_lock(args.run, command=area, area=area):
            return run(args)

    return locked


def error_line(exc: ShadowfarmError) -> str:
    """The one line a user error prints. A user error raised inside a Ray task arrives as Ray's
    RayTaskError(<the error>), whose text carries the remote traceback: print its cause's message only."""
    cause = getattr(exc, "cause", None)
    message = cause if isinstance(cause, ShadowfarmError) else exc
    line = " ".join(str(message).split())
    if len(line) > MAX_ERROR_LINE:  # a value no message cut (`farm.errors.shown` cuts those it shows)
        line = f"{line[:MAX_ERROR_LINE]}… ({len(line):,} characters)"
    return "shadowfarm: error: " + line


def run_cli(fn: Callable[[], int | None]) -> int:
    """Run an entry point: user errors become one line on stderr and exit code 2."""
    try:
        return fn() or 0
    except ShadowfarmError as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shadowfarm: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def resolve_config(name: str) -> Path:
    """A YAML path, or the name of a bundled config (`quickstart` -> jobs/configs/quickstart.yaml)."""
    path = Path(name)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    bundled = CONFIGS / f"{name}.yaml"
    return bundled if bundled.is_file() else path


def default_out(config: Path) -> str:
    return str(Path("runs") / config.stem)


def smoke_out(name: str) -> str:
    """The run directory of a smoke test given none: runs/<name>; in the driver of a Ray job, where a relative
    one is refused (farm.cluster.check_run_location), <system temp>/shadowfarm-smoke/<name>, said on stderr.
    (On a cluster of several nodes that path is the driver's node only: give --out on shared storage.)"""
    from farm.cluster import in_ray_job

    if not in_ray_job():
        return str(Path("runs") / name)
    out = str(Path(tempfile.gettempdir()) / "shadowfarm-smoke" / name)
    print(f"shadowfarm: inside a Ray job: the smoke run directory is {out}", file=sys.stderr)
    return out


def add_run_argument(parser: argparse.ArgumentParser, *, positional: bool, help: str = "run directory") -> None:
    """The run directory a job reads: RUN (`shadowfarm VERB RUN`, described by `help`) or --run (`python -m
    jobs.VERB --run RUN`, which --smoke-test may fill in)."""
    if positional:
        parser.add_argument("run", help=help)
    else:
        parser.add_argument("--run", help="run directory (default with --smoke-test: a fresh smoke farm)")


def add_config_argument(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    """The config a job trains from: CONFIG (`shadowfarm VERB CONFIG`) or --config (`python -m jobs.VERB`)."""
    if positional:
        parser.add_argument("config", help="YAML config file, or a bundled name: quickstart, adult")
    else:
        parser.add_argument("--config", default="quickstart",
                            help="YAML config file, or a bundled name (default: quickstart)")


def csv_list(text: str) -> tuple[str, ...]:
    """`a, b,,c` -> ("a", "b", "c"): a comma-separated command-line value."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def model_ids(text: str) -> tuple[int, ...]:
    """`0,3` -> (0, 3): an argparse type for comma-separated model ids."""
    try:
        return tuple(int(part) for part in csv_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated model ids, got {text!r}") from None


def train_summary(plan: Plan, trained: list[int]) -> str:
    """The JSON line a farm's training prints: run, config hash, models, trained now, already done."""
    n = plan.cfg.membership.n_models
    return json.dumps({"run": plan.run.uri, "config_hash": plan.config_hash, "models": n,
                       "trained_now": len(trained), "already_done": n - len(trained)})
