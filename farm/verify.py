"""Checking a run's files against its plan: the run tables, every model's shard, stray folders.

`shadowfarm verify` prints `verify_plan`'s lines; resume (`missing_models`, which the driver trains)
retrains every model `model_problems` finds fault with; `farm.plan.open_run` rewrites a run table that
`farm.shards.table_problem` finds fault with.
"""

from __future__ import annotations

from collections.abc import Sequence

from farm.content import output_problems
from farm.plan import Plan, run_tables
from farm.shards import check_model_shard, model_dir, table_problem


def model_problems(plan: Plan, model_id: int, *, quick: bool = False) -> list[str]:
    """Problems of one model's shard (`farm.shards.check_model_shard` against the plan); empty when valid.
    `quick`: file sizes against `_SUCCESS`'s records, not their sha256."""
    return check_model_shard(
        plan.run, model_id, config_hash=plan.config_hash, n_examples=len(plan.dataset),
        n_queries=len(plan.queries), n_classes=plan.dataset.info.num_classes if plan.cfg.record_logits else None,
        labels=plan.dataset.y, n_members=int(plan.member[model_id].sum()), quick=quick)


def missing_models(plan: Plan) -> list[int]:
    """Models to (re)train: all but those whose shard is complete and valid (`model_problems`).

    A `_SUCCESS` holding the config hash is necessary but not enough: a shard truncated or replaced after
    it was written (a copy from another run, a disk error) fails its checks and is trained again.
    """
    return [m for m in range(plan.cfg.membership.n_models) if model_problems(plan, m)]


def verify_plan(plan: Plan, *, models: Sequence[int] | None = None, quick: bool = False) -> list[str]:
    """Every problem of the run's files, one line each naming the file; empty when the run is complete and valid.

    Checks membership.parquet and queries.parquet against the config, the shards of `models` (default:
    every model; `model_problems`, `quick`: sizes, not sha256), that models/ holds no directory of a model
    the run does not have, and (`models` None) every recorded output of the attack stage against its record
    (`farm.content.output_problems`: caches, attack results, tune, studies).
    """
    run = plan.run
    problems = [p for rel, table in run_tables(plan).items() if (p := table_problem(run, rel, table))]
    n_models = plan.cfg.membership.n_models
    expected = {model_dir(m).split("/", 1)[1] for m in range(n_models)}
    for name in run.listdir("models"):
        if name not in expected and not name.startswith("."):
            problems.append(f"{run.path('models/' + name)}: not a model of this run ({n_models} models)")
    for m in range(n_models) if models is None else models:
        problems += model_problems(plan, m, quick=quick)
    return problems + (output_problems(run, quick=quick) if models is None else [])
