"""Shared pieces of the entry points: config lookup, error reporting."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from farm.errors import ConfigError, ShadowfarmError

CONFIGS = Path(__file__).parent / "configs"


def resolve_config(name: str) -> Path:
    """A YAML path, or the name of a bundled config (`quickstart` -> jobs/configs/quickstart.yaml)."""
    path = Path(name)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    bundled = CONFIGS / f"{name}.yaml"
    return bundled if bundled.is_file() else path


def csv_list(text: str) -> tuple[str, ...]:
    """`a, b,,c` -> ("a", "b", "c"): a comma-separated command-line value."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


# The cheap attacks: a study's smoke test checks the plumbing end to end in seconds (transfer trains models).
SMOKE_ATTACKS = "gap,augmentation,noise,calibrated,loss,lira_confidence"


def study_main(argv: list[str] | None, *, prog: str, doc: str, add_arguments: Callable, run: Callable,
               smoke_out: str, smoke_help: str, smoke_limits: Callable | None = None) -> int:
    """`python -m jobs.<study>`: the study's options plus --smoke-test, which trains the smoke farm and runs
    its cheap attacks (`python -m jobs.attack --smoke-test`), then the study on it (`smoke_limits(args)`
    shrinks the study's own sizes)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, positional=False)
    parser.add_argument("--smoke-test", action="store_true", help=smoke_help)
    args = parser.parse_args(argv)

    def go() -> int:
        if args.smoke_test:
            from jobs import attack

            args.run = args.run or smoke_out
            if smoke_limits is not None:
                smoke_limits(args)
            code = attack.main(["--smoke-test", "--run", args.run, "--quiet", "--no-report", "--bootstrap", "0",
                                "--attacks", SMOKE_ATTACKS])
            if code:
                return code
        if not args.run:
            raise ConfigError("--run: a run directory is required (or use --smoke-test)")
        return run(args)

    return run_cli(go)


def default_out(config: Path) -> str:
    return str(Path("runs") / config.stem)


def error_line(exc: ShadowfarmError) -> str:
    """The one line a user error prints. A user error raised inside a Ray task arrives as Ray's
    RayTaskError(<the error>), whose text carries the remote traceback: print its cause's message only."""
    cause = getattr(exc, "cause", None)
    message = cause if isinstance(cause, ShadowfarmError) else exc
    return "shadowfarm: error: " + " ".join(str(message).split())


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


SMOKE_RUN = "runs/quickstart-smoke"


def smoke_farm(run: str | None) -> str:
    """Train (or resume) the smoke farm of `python -m jobs.train --smoke-test` into `run`; returns its path."""
    from farm.errors import ShadowfarmError
    from jobs import train

    run = run or SMOKE_RUN
    if train.main(["--smoke-test", "--out", run, "--quiet"]):
        raise ShadowfarmError(f"the smoke farm in {run} could not be trained")
    return run


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error convention: one line, `shadowfarm: error: ...`, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"shadowfarm: error: {self.prog}: {message} (see {self.prog} --help)\n")
