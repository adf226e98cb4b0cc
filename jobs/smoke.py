"""The smoke farm behind every job's --smoke-test, trained (or resumed) through the library.

`smoke_farm(run)`: the quickstart config with `SMOKE_OVERRIDES` (8 models, 200 examples, 2 epochs), what
`python -m jobs.train --smoke-test` trains too; it prints the same JSON line as the train job.
`attacked_smoke_farm(run)`: that farm with its cheap attacks run, as a study's smoke test needs them.
"""

from __future__ import annotations

from attacks.registry import smoke_attacks
from farm.config import load_config
from farm.driver import train_farm
from farm.plan import plan_run
from jobs.common import resolve_config, smoke_out, train_summary

SMOKE_RUN = "quickstart-smoke"  # under runs/ (or the system temp dir inside a Ray job: jobs.common.smoke_out)
SMOKE_CONFIG = "quickstart"
SMOKE_OVERRIDES = ["membership.n_models=8", "train.epochs=2", "data.subsample=200", "farm.group_size=4"]
# The cheap attacks: a study's smoke test checks the plumbing end to end in seconds (transfer trains models).
STUDY_SMOKE_ATTACKS = smoke_attacks("study")  # AttackSpec.smoke


def smoke_farm(run: str | None) -> str:
    """Train (or resume) the smoke farm into `run` (default `smoke_out(SMOKE_RUN)`); returns its path."""
    run = run or smoke_out(SMOKE_RUN)
    plan = plan_run(load_config(resolve_config(SMOKE_CONFIG), SMOKE_OVERRIDES), run)
    print(train_summary(plan, train_farm(plan, progress=False)))
    return run


def attacked_smoke_farm(run: str) -> str:
    """The smoke farm in `run` with `STUDY_SMOKE_ATTACKS` run on it (2 pseudo-targets, no bootstrap); prints their
    table and returns `run`."""
    from attacks.report.core import format_table, summary_rows
    from attacks.stage import AttackOptions, attack_run
    from farm.storage import RunDir

    smoke_farm(run)
    attack_run(run, AttackOptions(attacks=STUDY_SMOKE_ATTACKS, n_pseudo=2, bootstrap=0), progress=False)
    print(format_table(summary_rows(RunDir(run))))
    return run
