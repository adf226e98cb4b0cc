"""A run's plan: its validated config, data, membership and query set, made before any file is written.

`plan_run` checks everything a user can get wrong before the run directory exists; `open_run` creates
the run directory (or checks that an existing one belongs to this config); `load_plan` rebuilds the plan
of an existing run from its run.json, as every later stage (verify, attack, studies) does.
"""

from __future__ import annotations

import math
import platform
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from farm.cluster import check_farm_resources, check_run_location
from farm.config import RunConfig, config_hash, to_dict
from farm.data import Dataset, load_dataset
from farm.defenses import check_defenses
from farm.errors import RunError
from farm.membership import disjoint_membership, make_membership, reference_pool
from farm.models import build_model
from farm.queries import Query, expand_queries
from farm.resources import check_memory
from farm.runfile import read_run_json, run_config
from farm.shards import MEMBERSHIP, QUERIES, RUN_JSON, membership_table, queries_table, table_problem
from farm.storage import RunDir
from farm.teacher import ensure_teacher, plan_teacher


@dataclass
class Plan:
    """A validated run: its config, data, membership and query set, before any file is written."""

    cfg: RunConfig
    run: RunDir
    dataset: Dataset
    member: np.ndarray  # bool[M, N]
    target_pool: np.ndarray  # bool[N]
    queries: list[Query]
    config_hash: str
    public: Dataset | None = None  # the teacher's public data (`farm.teacher`): no model's membership uses it
    reference: np.ndarray | None = None  # bool[N]: known non-members of every target (`farm.membership.reference_pool`)


def plan_run(cfg: RunConfig, out: str) -> Plan:
    """Load data, build membership and queries, check the model and the memory the run will need
    (`farm.resources`): all before touching `out`."""
    check_farm_resources(cfg)
    check_run_location(out)
    dataset = load_dataset(cfg.data, seed=cfg.seed)
    queries = expand_queries(cfg.queries, info=dataset.info, seed=cfg.seed)
    with torch.device("meta"):  # its shapes only: no memory, however large the config makes it
        n_params = sum(p.numel() for p in build_model(cfg.model, info=dataset.info).parameters())
    info = dataset.info
    check_memory(cfg, n_examples=len(dataset), n_features=math.prod(info.shape), n_classes=info.num_classes,
                 n_queries=len(queries), n_params=n_params)
    check_defenses(cfg, info=dataset.info)
    dataset, public = plan_teacher(cfg, dataset, RunDir(out))
    n = len(dataset)
    if cfg.membership.mode == "disjoint":
        m = cfg.membership
        member, target_pool = disjoint_membership(
            n_models=m.n_models, n_examples=n, p_in=m.p_in, target_ids=m.target_ids,
            target_fraction=m.target_fraction, seed=cfg.seed)
    else:
        member, target_pool = make_membership(cfg.membership, n_examples=n, seed=cfg.seed), np.ones(n, bool)
    reference = reference_pool(member, target_pool, cfg=cfg.membership, seed=cfg.seed)
    return Plan(cfg, RunDir(out), dataset, member, target_pool, queries, config_hash(cfg), public, reference)


def run_tables(plan: Plan) -> dict[str, pa.Table]:
    """The run-level tables, pure functions of the config: membership.parquet and queries.parquet."""
    return {MEMBERSHIP: membership_table(plan.member, plan.target_pool), QUERIES: queries_table(plan.queries)}


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("shadowfarm", "torch", "ray", "pyarrow", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _run_json(plan: Plan) -> dict:
    """What run.json records: the config and its hash, the data set, the versions and commit, the time."""
    info = plan.dataset.info
    return {
        "config": to_dict(plan.cfg),
        "config_hash": plan.config_hash,
        "dataset": {"name": info.name, "kind": info.kind, "shape": list(info.shape),
                    "num_classes": info.num_classes, "n_examples": len(plan.dataset)},
        "n_queries": len(plan.queries),
        "versions": _versions(),
        "git_sha": _git_sha(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def open_run(plan: Plan) -> None:
    """Create the run directory, or check that an existing one belongs to this config.

    A run directory made with another config is refused, never cleared: to start over, choose a new
    --out, or move the old run aside (`shadowfarm train --new-run` does, or `mv runs/x runs/x.old`).
    In a run of this config, a missing or damaged membership.parquet or queries.parquet (pure functions
    of the config) is written again. A run with a `teacher` section stores its teacher (`farm.teacher`) once.
    """
    run = plan.run
    if run.is_file(RUN_JSON):
        saved = read_run_json(run)
        if saved.get("config_hash") != plan.config_hash:
            raise RunError(
                f"{run.path(RUN_JSON)}: the run was created with another config "
                f"(hash {saved.get('config_hash')}, now {plan.config_hash}); choose a new --out, or start over "
                f"with --new-run (moves the old run aside) or mv {run.path()} {run.path()}.old: shadowfarm "
                "never deletes a run")
        for rel, table in run_tables(plan).items():
            if table_problem(run, rel, table):
                run.write_table(rel, table)
        ensure_teacher(plan.cfg, run, population=plan.dataset, public=plan.public)
        return
    refuse_foreign(run)
    for rel, table in run_tables(plan).items():
        run.write_table(rel, table)
    run.write_json(RUN_JSON, _run_json(plan))
    ensure_teacher(plan.cfg, run, population=plan.dataset, public=plan.public)


def refuse_foreign(run: RunDir) -> None:
    """RunError when `run` is a directory holding files but no run.json: not a run to write into."""
    if not run.is_file(RUN_JSON) and run.exists() and [name for name in run.listdir() if not name.startswith(".")]:
        raise RunError(f"{run.path()}: exists and is not a shadowfarm run (no run.json); choose a new --out")


def load_plan(run_uri: str) -> Plan:
    """Rebuild the plan of an existing run from its run.json, whose config hash is checked first
    (`farm.runfile.run_config`)."""
    _, cfg = run_config(RunDir(run_uri))
    return plan_run(cfg, run_uri)
