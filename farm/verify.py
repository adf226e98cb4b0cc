"""Checking a run's files against its plan: the run tables, every model's shard, stray folders.

`shadowfarm verify` prints `verify_plan`'s lines; resume (`farm.driver.missing_models`) retrains every
model `model_problems` finds fault with, and rewrites a run table `table_problem` finds fault with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from farm.shards import MEMBERSHIP, QUERIES, check_model_shard, membership_table, model_dir, queries_table
from farm.storage import RunDir

if TYPE_CHECKING:
    from farm.driver import Plan


def run_tables(plan: Plan) -> dict[str, pa.Table]:
    """The run-level tables, pure functions of the config: membership.parquet and queries.parquet."""
    return {MEMBERSHIP: membership_table(plan.member, plan.target_pool), QUERIES: queries_table(plan.queries)}


def table_problem(run: RunDir, rel: str, expected: pa.Table) -> str | None:
    if not run.is_file(rel):
        return f"{run.path(rel)}: missing"
    try:
        table = run.read_table(rel)
    except (OSError, pa.ArrowException) as exc:
        return f"{run.path(rel)}: unreadable ({str(exc).splitlines()[0]})"
    if not table.schema.remove_metadata().equals(expected.schema.remove_metadata()):
        return f"{run.path(rel)}: schema differs from the expected {expected.schema.remove_metadata()}"
    if not table.equals(expected):
        return f"{run.path(rel)}: differs from what the run's config gives (another seed or config?)"
    return None


def model_problems(plan: Plan, model_id: int) -> list[str]:
    """Problems of one model's shard (`farm.shards.check_model_shard` against the plan); empty when valid."""
    return check_model_shard(
        plan.run, model_id, config_hash=plan.config_hash, n_examples=len(plan.dataset),
        n_queries=len(plan.queries), n_classes=plan.dataset.info.num_classes if plan.cfg.record_logits else None,
        labels=plan.dataset.y, n_members=int(plan.member[model_id].sum()))


def verify_plan(plan: Plan, *, models: Sequence[int] | None = None) -> list[str]:
    """Every problem of the run's files, one line each naming the file; empty when the run is complete and valid.

    Checks membership.parquet and queries.parquet against the config, the shards of `models` (default:
    every model; `model_problems`), and that models/ holds no directory of a model the run does not have.
    """
    run = plan.run
    problems = [p for rel, table in run_tables(plan).items() if (p := table_problem(run, rel, table))]
    n_models = plan.cfg.membership.n_models
    expected = {model_dir(m).split("/", 1)[1] for m in range(n_models)}
    for name in run.listdir("models"):
        if name not in expected and not name.startswith("."):
            problems.append(f"{run.path('models/' + name)}: not a model of this run ({n_models} models)")
    for m in range(n_models) if models is None else models:
        problems += model_problems(plan, m)
    return problems
