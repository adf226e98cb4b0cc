"""The farm driver: prepare a run directory, then train its missing models on a pool of Ray actors.

Everything a user can get wrong is checked before the run directory is created. The driver
hands only missing groups to free actors, keeps at most `IN_FLIGHT_PER_ACTOR` groups queued
per actor, takes results in completion order, replaces actors that die (Ray restarts them and
retries their group first), shows a progress bar, and validates every shard at the end.

On a cluster (DESIGN §9): each trainer actor asks Ray for `farm.num_cpus` CPUs and `farm.num_gpus`
GPUs (fractional: 0.25 packs four actors on one GPU). Its device follows from that request: an
actor that asked for no GPU trains on the CPU even on a GPU node (Ray does not hide the node's GPUs
from it), one that asked for a GPU share trains on the GPU Ray assigned it (Ray makes it the
process's only visible GPU, `cuda:0`). The run directory must be storage every node sees: s3://,
gs:// or a shared file system at the same absolute path; a relative path inside a Ray job would
resolve inside the job's temporary copy of the working directory, so it is refused.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import ray
from tqdm.auto import tqdm

from farm.config import RunConfig, config_hash, from_dict, to_dict
from farm.data import Dataset, load_dataset
from farm.defenses import check_defenses
from farm.errors import ConfigError, RunError
from farm.membership import disjoint_membership, make_membership
from farm.models import build_model
from farm.queries import Query, expand_queries
from farm.shards import RUN_JSON
from farm.storage import RunDir
from farm.verify import model_problems, run_tables, table_problem, verify_plan
from farm.worker import HOLD_ENV, TrainerActor

IN_FLIGHT_PER_ACTOR = 2


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


def plan_run(cfg: RunConfig, out: str) -> Plan:
    """Load data, build membership and queries, check the model: all before touching `out`."""
    check_farm_resources(cfg)
    check_run_location(out)
    dataset = load_dataset(cfg.data, seed=cfg.seed)
    queries = expand_queries(cfg.queries, info=dataset.info, seed=cfg.seed)
    build_model(cfg.model, info=dataset.info)
    check_defenses(cfg, info=dataset.info)
    n = len(dataset)
    if cfg.membership.mode == "disjoint":
        m = cfg.membership
        member, target_pool = disjoint_membership(
            n_models=m.n_models, n_examples=n, p_in=m.p_in, target_ids=m.target_ids,
            target_fraction=m.target_fraction, seed=cfg.seed)
    else:
        member, target_pool = make_membership(cfg.membership, n_examples=n, seed=cfg.seed), np.ones(n, bool)
    return Plan(cfg, RunDir(out), dataset, member, target_pool, queries, config_hash(cfg))


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


def open_run(plan: Plan) -> None:
    """Create the run directory, or check that an existing one belongs to this config.

    A run directory made with another config is refused, never cleared: to start over, choose a new
    --out, or move the old run aside (`shadowfarm train --new-run` does, or `mv runs/x runs/x.old`).
    In a run of this config, a missing or damaged membership.parquet or queries.parquet (pure functions
    of the config) is written again.
    """
    run = plan.run
    if run.is_file(RUN_JSON):
        saved = _read_run_json(run)
        if saved.get("config_hash") != plan.config_hash:
            raise RunError(
                f"{run.path(RUN_JSON)}: the run was created with another config "
                f"(hash {saved.get('config_hash')}, now {plan.config_hash}); choose a new --out, or start over "
                f"with --new-run (moves the old run aside) or mv {run.path()} {run.path()}.old: shadowfarm "
                "never deletes a run")
        for rel, table in run_tables(plan).items():
            if table_problem(run, rel, table):
                run.write_table(rel, table)
        return
    if run.exists() and run.listdir():
        raise RunError(f"{run.path()}: exists and is not a shadowfarm run (no run.json); choose a new --out")
    info = plan.dataset.info
    for rel, table in run_tables(plan).items():
        run.write_table(rel, table)
    run.write_json(RUN_JSON, {
        "config": to_dict(plan.cfg),
        "config_hash": plan.config_hash,
        "dataset": {"name": info.name, "kind": info.kind, "shape": list(info.shape),
                    "num_classes": info.num_classes, "n_examples": len(plan.dataset)},
        "n_queries": len(plan.queries),
        "versions": _versions(),
        "git_sha": _git_sha(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })


def missing_models(plan: Plan) -> list[int]:
    """Models to (re)train: all but those whose shard is complete and valid (`model_problems`).

    A `_SUCCESS` holding the config hash is necessary but not enough: a shard truncated or replaced after
    it was written (a copy from another run, a disk error) fails its checks and is trained again.
    """
    return [m for m in range(plan.cfg.membership.n_models) if model_problems(plan, m)]


def ensure_ray() -> None:
    """Connect to the cluster named by RAY_ADDRESS (as under `ray job submit`) or start a local Ray."""
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=True, configure_logging=False)


# ---------------------------------------------------------------- cluster resources and storage


def check_farm_resources(cfg: RunConfig) -> None:
    """Resource settings that can never schedule or never use what they ask for: ConfigError naming the field."""
    f = cfg.farm
    if f.device == "cuda" and f.num_gpus == 0:
        raise ConfigError("farm.device: cuda needs farm.num_gpus > 0 (Ray gives a GPU only to actors that ask "
                          "for one; 0.25 packs four trainer actors on a GPU)")


def check_run_location(out: str) -> None:
    """Refuse a relative local run directory in the driver of a Ray job (`ray job submit`): it would resolve
    inside the job's temporary copy of the working directory, deleted with the Ray session and invisible
    to the submitter. Ray sets RAY_JOB_CONFIG_JSON_ENV_VAR for every job driver."""
    if "://" in str(out) or os.path.isabs(os.path.expanduser(str(out))):
        return
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        raise RunError(f"{out}: a relative run directory inside a Ray job resolves inside the job's temporary "
                       f"working directory ({os.getcwd()}); give s3://bucket/path, gs://bucket/path "
                       "or an absolute path on a file system every node shares")


def _warn_if_not_shared(run: RunDir) -> None:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if run.local and len(nodes) > 1:
        print(f"shadowfarm: warning: the run directory {run.path()} is on a local file system and the cluster has "
              f"{len(nodes)} nodes: every node must see it at this path (NFS); otherwise use s3:// or gs://",
              file=sys.stderr)


def _fits(available: float, each: float) -> int:
    """How many actors asking `each` fit in `available`; tolerant of float error (1 / 0.1 -> 10, not 9)."""
    return int(math.floor(available / each + 1e-6))


def _n_actors(cfg: RunConfig, n_groups: int) -> int:
    if cfg.farm.num_actors is not None:
        return min(cfg.farm.num_actors, n_groups)
    res = ray.cluster_resources()
    n = _fits(res.get("CPU", 0), cfg.farm.num_cpus)
    if cfg.farm.num_gpus > 0:
        if res.get("GPU", 0) == 0:
            # An autoscaling cluster may have no GPU node yet: say how many actors to ask for.
            raise RunError(f"farm.num_gpus={cfg.farm.num_gpus}, but the Ray cluster has no GPU now; set "
                           "farm.num_actors (the autoscaler adds GPU nodes for them) or farm.num_gpus=0")
        n = min(n, _fits(res["GPU"], cfg.farm.num_gpus))
    return max(1, min(n, n_groups))


def actor_config(cfg: RunConfig) -> RunConfig:
    """The config trainer actors get: `farm.device` resolved from the GPU share they ask Ray for.

    An actor asking for no GPU gets device cpu: Ray sets CUDA_VISIBLE_DEVICES only for actors it assigns
    GPUs to, so with `auto` such an actor would otherwise take the node's first GPU without reserving it.
    With a GPU share, `auto` stays: the actor sees exactly the GPU Ray assigned it. `farm` is not hashed.
    """
    if cfg.farm.num_gpus == 0 and cfg.farm.device == "auto":
        return dataclasses.replace(cfg, farm=dataclasses.replace(cfg.farm, device="cpu"))
    return cfg


def actor_options(cfg: RunConfig) -> dict:
    """Ray options of one trainer actor: its CPU and (fractional) GPU share from `farm`, restarts."""
    options = dict(num_cpus=cfg.farm.num_cpus, num_gpus=cfg.farm.num_gpus,
                   max_restarts=cfg.farm.max_retries, max_task_retries=cfg.farm.max_retries)
    if os.environ.get(HOLD_ENV):  # test hook (farm.worker.hold_point): trainer actors must see it too
        options["runtime_env"] = {"env_vars": {HOLD_ENV: os.environ[HOLD_ENV]}}
    return options


def train_farm(plan: Plan, *, progress: bool = True) -> list[int]:
    """Train every missing model of the run; returns the model ids trained now."""
    open_run(plan)
    todo = missing_models(plan)
    if todo:
        _dispatch(plan, todo, progress=progress)
    problems = verify_plan(plan, models=todo)  # the others passed the same checks in missing_models just now
    if problems:
        raise RunError(f"{len(problems)} bad shard(s) after training: " + "; ".join(problems[:5]))
    return todo


def _dispatch(plan: Plan, todo: list[int], *, progress: bool) -> None:
    ensure_ray()
    _warn_if_not_shared(plan.run)
    cfg = plan.cfg
    size = cfg.farm.group_size
    groups = [todo[i : i + size] for i in range(0, len(todo), size)]
    n_actors = _n_actors(cfg, len(groups))
    shared = dict(
        run_uri=plan.run.uri, cfg=actor_config(cfg), info=plan.dataset.info,
        arrays=[ray.put(plan.dataset.x), ray.put(plan.dataset.y), ray.put(plan.member)], queries=plan.queries,
    )
    options = actor_options(cfg)
    actors = [TrainerActor.options(**options).remote(**shared) for _ in range(n_actors)]
    queue = list(reversed(groups))
    pending: dict = {}
    attempts: dict = {}
    bar = tqdm(total=len(todo), desc="models", unit="model", disable=not progress, smoothing=0.1)

    def submit(actor):
        group = queue.pop()
        pending[actor.train.remote(group)] = (actor, group)

    for _ in range(IN_FLIGHT_PER_ACTOR):
        for actor in actors:
            if queue:
                submit(actor)
    try:
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            actor, group = pending.pop(ref)
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                # Ray's own restarts and retries are spent: replace the actor, retry its group.
                key = tuple(group)
                attempts[key] = attempts.get(key, 0) + 1
                if attempts[key] > cfg.farm.max_retries:
                    raise RunError(f"models {group}: their trainer actor died {attempts[key]} times "
                                   f"(farm.max_retries={cfg.farm.max_retries}): {str(exc).splitlines()[0]}; "
                                   "re-run the same command to resume") from exc
                ray.kill(actor, no_restart=True)
                replacement = TrainerActor.options(**options).remote(**shared)
                actors[actors.index(actor)] = replacement
                for r, (a, g) in list(pending.items()):
                    if a is actor:  # its other queued group died with it
                        pending.pop(r)
                        queue.append(g)
                queue.append(group)
                actor = replacement
            else:
                bar.update(len(group))
            while queue and sum(a is actor for a, _ in pending.values()) < IN_FLIGHT_PER_ACTOR:
                submit(actor)
    finally:
        bar.close()
        for actor in actors:
            ray.kill(actor)


# ---------------------------------------------------------------- verification


def _read_run_json(run: RunDir) -> dict:
    try:
        return run.read_json(RUN_JSON)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"{run.path(RUN_JSON)}: unreadable ({exc}); the run's config is lost") from exc


def load_plan(run_uri: str) -> Plan:
    """Rebuild the plan of an existing run from its run.json."""
    run = RunDir(run_uri)
    if not run.is_file(RUN_JSON):
        raise RunError(f"{run.path(RUN_JSON)}: not found; is {run_uri!r} a shadowfarm run?")
    saved = _read_run_json(run)
    try:
        cfg, saved_hash = from_dict(saved["config"]), saved["config_hash"]
    except KeyError as exc:
        raise RunError(f"{run.path(RUN_JSON)}: missing {exc}; not written by shadowfarm?") from None
    except ConfigError as exc:
        raise RunError(f"{run.path(RUN_JSON)}: {exc}") from None
    plan = plan_run(cfg, run_uri)
    if plan.config_hash != saved_hash:
        raise RunError(f"{run.path(RUN_JSON)}: config hash does not match its config")
    return plan
