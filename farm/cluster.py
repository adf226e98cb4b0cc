"""The farm on a Ray cluster (DESIGN §9): connecting, where the run may live, and what each trainer actor asks for.

Each trainer actor asks Ray for `farm.num_cpus` CPUs and `farm.num_gpus` GPUs (fractional: 0.25 packs four
actors on one GPU). Its device follows from that request: an actor that asked for no GPU trains on the CPU
even on a GPU node (Ray does not hide the node's GPUs from it), one that asked for a GPU share trains on the
GPU Ray assigned it (Ray makes it the process's only visible GPU, `cuda:0`). The run directory must be
storage every node sees: s3://, gs:// or a shared file system at the same absolute path; a relative path
inside a Ray job would resolve inside the job's temporary copy of the working directory, so it is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys

import ray

from farm.config import RunConfig
from farm.errors import ConfigError, RunError
from farm.storage import RunDir
from farm.worker import HOLD_ENV

# Ray's logger of token authentication and its note on every new local cluster (mode unset: token auth on).
_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_AUTH_BANNER = "Token authentication is enabled for this Ray cluster"


def _drop_auth_banner(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_AUTH_BANNER)


def ensure_ray() -> None:
    """Connect to the cluster named by RAY_ADDRESS (set by `ray job submit` in its driver, or by the user:
    an address, or `auto` for the `ray start` cluster on this machine) or start a local Ray.

    Never `ray.init()` without an address: that joins the cluster named in /tmp/ray/ray_current_cluster, and
    a head killed without `ray stop` leaves it behind, so every command would hang on a dead GCS. The local
    Ray keeps Ray's default token authentication (a token in ~/.ray/auth_token); only Ray's note saying so
    is dropped, as it is printed by every command and needs no action."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        auth_logger = logging.getLogger(_AUTH_LOGGER)
        if _drop_auth_banner not in auth_logger.filters:
            auth_logger.addFilter(_drop_auth_banner)
    ray.init(address=address, include_dashboard=False, log_to_driver=True, configure_logging=False)


def check_farm_resources(cfg: RunConfig) -> None:
    """Resource settings that can never schedule or never use what they ask for: ConfigError naming the field."""
    f = cfg.farm
    if f.device == "cuda" and f.num_gpus == 0:
        raise ConfigError("farm.device: cuda needs farm.num_gpus > 0 (Ray gives a GPU only to actors that ask "
                          "for one; 0.25 packs four trainer actors on a GPU)")


def in_ray_job() -> bool:
    """Whether this process is the driver of a Ray job (`ray job submit`): Ray sets this for every job driver."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def check_run_location(out: str) -> None:
    """Refuse a relative local run directory in the driver of a Ray job (`ray job submit`): it would resolve
    inside the job's temporary copy of the working directory, deleted with the Ray session and invisible
    to the submitter."""
    if "://" in str(out) or os.path.isabs(os.path.expanduser(str(out))):
        return
    if in_ray_job():
        raise RunError(f"{out}: a relative run directory inside a Ray job resolves inside the job's temporary "
                       f"working directory ({os.getcwd()}); give s3://bucket/path, gs://bucket/path "
                       "or an absolute path on a file system every node shares")


def warn_if_not_shared(run: RunDir) -> None:
    """A warning on stderr when a local run directory meets a cluster of several nodes (they must share it)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if run.local and len(nodes) > 1:
        print(f"shadowfarm: warning: the run directory {run.path()} is on a local file system and the cluster has "
              f"{len(nodes)} nodes: every node must see it at this path (NFS); otherwise use s3:// or gs://",
              file=sys.stderr)


def _fits(available: float, each: float) -> int:
    """How many actors asking `each` fit in `available`; tolerant of float error (1 / 0.1 -> 10, not 9)."""
    return int(math.floor(available / each + 1e-6))


def n_actors(cfg: RunConfig, n_groups: int) -> int:
    """Trainer actors for `n_groups` groups: `farm.num_actors`, else as many as the cluster's CPUs and GPUs hold."""
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


def nodes_line(run: RunDir, n_models: int) -> str | None:
    """One line: the Ray nodes that trained the run's models (metrics.json `node`), with their model counts, when
    more than one did; None for a run trained on one node (or before nodes were recorded)."""
    from farm.shards import model_dir

    counts: dict[str, int] = {}
    for m in range(n_models):
        node = run.read_json(f"{model_dir(m)}/metrics.json").get("node") or {}
        if node:
            key = f"{node.get('ip')} ({str(node.get('node_id'))[:8]})"
            counts[key] = counts.get(key, 0) + 1
    if len(counts) < 2:
        return None
    return f"trained on {len(counts)} nodes: " + ", ".join(f"{k}: {v} models" for k, v in sorted(counts.items()))
