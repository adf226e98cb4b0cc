"""Train a farm of shadow models: `python -m jobs.train --config quickstart [--set k=v] [--out RUN]`.

Under `ray job submit --working-dir . -- python -m jobs.train ...` the driver joins that cluster;
otherwise it starts a local Ray in-process. Re-running the same command resumes: finished models
(whose `_SUCCESS` holds the config hash) are never trained again.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial

from farm.config import config_hash, load_config
from farm.content import note
from farm.driver import train_farm
from farm.errors import ConfigError
from farm.lock import HOLDER, refuse_if_areas_held, run_lock
from farm.plan import plan_run
from farm.resources import batch_note
from farm.shards import RUN_JSON
from farm.storage import RunDir
from jobs.common import add_config_argument, default_out, job_main, job_parser, resolve_config, smoke_out, train_summary
from jobs.smoke import SMOKE_OVERRIDES

HELP = "train the shadow-model farm of a config (resumable)"

def add_arguments(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    add_config_argument(parser, positional=positional)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set train.epochs=5 (repeatable)")
    parser.add_argument("--out", help="run directory: a path or s3://, gs:// URI (default: runs/<config name>)")
    parser.add_argument("--smoke-test", action="store_true",
                        help="a tiny farm (8 models, 200 examples, 2 epochs) that runs in seconds")
    parser.add_argument("--new-run", action="store_true",
                        help="when --out holds a run of another config, move it aside to OUT.old-<time> "
                             "(local paths) and start a new run there; nothing is ever deleted")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def move_aside(out: str, digest: str) -> str | None:
    """Rename the run directory `out` to `out.old-<time>` unless it is empty or a run of config `digest`; holds
    the run's writer lock while it does, so a run another process writes is never moved (`farm.lock`)."""
    run = RunDir(out)
    if not run.exists() or not [name for name in run.listdir() if not name.startswith(".")]:
        return None
    try:
        if run.is_file(RUN_JSON) and run.read_json(RUN_JSON).get("config_hash") == digest:
            return None  # this config's run: resume it
    except ValueError:
        pass  # an unreadable run.json: not a run to resume
    if not run.local:
        raise ConfigError(f"--new-run: {run.path()} is not a local path; choose a new --out instead")
    with run_lock(run, command="train --new-run"):
        refuse_if_areas_held(run)
        moved = f"{run.path()}.old-{time.strftime('%Y%m%d-%H%M%S')}"
        run.delete(HOLDER)  # the moved run is not held once this returns
        os.rename(run.path(), moved)
    return moved


def run(args: argparse.Namespace) -> int:
    config = resolve_config(args.config)
    overrides = (SMOKE_OVERRIDES if args.smoke_test else []) + args.overrides
    cfg = load_config(config, overrides)
    out = args.out or (smoke_out(f"{config.stem}-smoke") if args.smoke_test else default_out(config))
    if args.new_run and (moved := move_aside(out, config_hash(cfg))):
        print(f"moved the run of another config aside: {moved}")
    plan = plan_run(cfg, out)
    if line := batch_note(cfg, plan.member):
        note(line)
    print(train_summary(plan, train_farm(plan, progress=not args.quiet)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.train", __doc__, partial(add_arguments, positional=False)),
                    run=run)


if __name__ == "__main__":
    sys.exit(main())
