"""One unit of farm work: train a group of models, query them, write their shards.

`TrainerActor` holds the data set on its device once and runs `run_group` for each group the
driver hands it. `run_group` is a pure function of (run, model ids): re-running it rewrites
the same shards. Its steps: train the group (`farm.train.train_group`), answer every query
(`query_group`), then per model its metrics.json (`model_metrics`) and its shard.
"""

from __future__ import annotations

import os
import resource
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import ray
import torch
import torch.nn.functional as F

from farm.config import RunConfig, config_hash, model_seed
from farm.data import DatasetInfo
from farm.queries import Query, apply_query
from farm.shards import responses_table, write_model_shard
from farm.storage import RunDir
from farm.teacher import teacher_init
from farm.train import TrainedGroup, predict_in_chunks, steps_per_epoch, train_group

# Test hook: a directory where processes announce named points and wait to be released (see `hold_point`).
HOLD_ENV = "SHADOWFARM_TEST_HOLD_DIR"
HOLD_LIMIT_SECONDS = 600.0


def hold_point(tag: str) -> None:
    """Test hook, a no-op unless the environment variable SHADOWFARM_TEST_HOLD_DIR names a directory.

    Then this process announces that it reached point `tag` by creating `<dir>/<tag>.<pid>` (holding
    its Ray actor id, if any, and node id) and waits until `<dir>/go` or `<dir>/go.<prefix>` exists for a prefix
    of `tag` (`go.<tag>` itself, or `go.whitebox-` for every white-box task), for at most HOLD_LIMIT_SECONDS.
    Tests use it to kill a trainer actor or a driver at a known point, without sleeps.
    """
    hold = os.environ.get(HOLD_ENV)
    if not hold:
        return
    context = ray.get_runtime_context() if ray.is_initialized() else None
    marker = Path(hold, f"{tag}.{os.getpid()}")
    # "<actor id> <node id>": which actor (empty outside one) on which Ray node reached the point
    marker.with_name("." + marker.name).write_text(f"{context.get_actor_id() or ''} {context.get_node_id()}"
                                                   if context else "")
    os.replace(marker.with_name("." + marker.name), marker)  # whole or absent: the test reads it
    deadline = time.monotonic() + HOLD_LIMIT_SECONDS
    while not _released(hold, tag) and time.monotonic() < deadline:
        time.sleep(0.01)  # waits on an event (a file the test creates), never for a fixed time


def _released(hold: str, tag: str) -> bool:
    return any(name == "go" or (name.startswith("go.") and tag.startswith(name[3:])) for name in os.listdir(hold))


def node_info() -> dict | None:
    """Where this process runs, for metrics.json: {"node_id", "ip"} of its Ray node, "gpus" (the ids of the GPUs Ray
    assigned it on that node, [] for none: actors sharing a GPU name the same one) and "actor_id" (None outside
    an actor); None outside Ray."""
    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    return {"node_id": context.get_node_id(), "ip": ray.util.get_node_ip_address(),
            "gpus": [str(g) for g in context.get_accelerator_ids().get("GPU", [])], "actor_id": context.get_actor_id()}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def pick_device(preference: str) -> torch.device:
    """`auto`: cuda when this process can see a GPU (Ray sets that from the actor's num_gpus)."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _metrics(logits: torch.Tensor, y: torch.Tensor, member: np.ndarray) -> dict:
    """Train metrics on the model's members, test metrics on its non-members (held out)."""
    out = {}
    for name, rows in (("train", member), ("test", ~member)):
        rows = torch.as_tensor(rows, device=logits.device)
        if int(rows.sum()) == 0:
            continue
        lg, yy = logits[rows], y[rows]
        out[f"{name}_accuracy"] = float((lg.argmax(1) == yy).float().mean())
        out[f"{name}_loss"] = float(F.cross_entropy(lg, yy))
        out[f"n_{name}"] = int(rows.sum())
    return out


def defenses_of(cfg: RunConfig) -> dict:
    """Training-time defenses active in this config, for metrics.json (DESIGN §7 names)."""
    t = cfg.train
    found = {}
    if t.weight_decay > 0:
        found["weight_decay"] = t.weight_decay
    if t.label_smoothing > 0:
        found["label_smoothing"] = t.label_smoothing
    if cfg.model.dropout > 0:
        found["dropout"] = cfg.model.dropout
    if t.mixup_alpha > 0:
        found["mixup"] = {"alpha": t.mixup_alpha}
    if t.early_stopping.patience > 0:
        found["early_stopping"] = {"patience": t.early_stopping.patience,
                                   "validation_fraction": t.early_stopping.validation_fraction}
    if t.augmentation.flip or t.augmentation.translate:
        found["train_augmentation"] = {"flip": t.augmentation.flip, "translate": t.augmentation.translate}
    if t.dp_sgd is not None:
        found["dp_sgd"] = {"target_epsilon": t.dp_sgd.epsilon, "delta": t.dp_sgd.delta,
                           "max_grad_norm": t.dp_sgd.max_grad_norm, "accountant": t.dp_sgd.accountant}
    return found


def query_group(group: TrainedGroup, queries: Sequence[Query], x: torch.Tensor, *,
                info: DatasetInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean logits float32[G, N, C], predicted labels int16[G, N, Q]) of the trained group on every query."""
    clean_logits = predict_in_chunks(group.predict, x)  # [G, N, C]
    pred = torch.empty((clean_logits.shape[0], len(x), len(queries)), dtype=torch.int16, device=x.device)
    for q, query in enumerate(queries):
        logits = clean_logits if query.kind == "clean" else predict_in_chunks(
            group.predict, apply_query(query, x, info=info))
        pred[:, :, q] = logits.argmax(-1).to(torch.int16)
    return clean_logits, pred


def model_metrics(cfg: RunConfig, group: TrainedGroup, g: int, *, model_id: int, n_models: int, logits: torch.Tensor,
                  y: torch.Tensor, member: np.ndarray, query_seconds: float) -> dict:
    """metrics.json of model `model_id`, the g-th of a group of `n_models` (times are the group's, shared out)."""
    metrics = {
        "model_id": model_id,
        **_metrics(logits, y, member),
        "epochs": cfg.train.epochs,
        "seconds": group.seconds / n_models,
        "query_seconds": query_seconds / n_models,
        "group_size": n_models,
        "vectorized": group.vectorized,
        "device": str(logits.device),
        "defense": defenses_of(cfg),
        "seed": model_seed(cfg.seed, model_id),
        "worker_peak_rss_mb": round(peak_rss_mb(), 1),
        "node": node_info(),
        **(group.details[g] if group.details else {}),
    }
    if "dp_sgd" in metrics:  # the ε the accountant spent, at the top level for readers of metrics.json
        metrics["epsilon"] = metrics["dp_sgd"]["epsilon"]
    return metrics


def run_group(
    *,
    run_uri: str,
    cfg: RunConfig,
    info: DatasetInfo,
    x: torch.Tensor,
    y: torch.Tensor,
    member: np.ndarray,
    queries: Sequence[Query],
    model_ids: Sequence[int],
    vectorize: bool = True,
) -> list[int]:
    """Train, query and write the shards of `model_ids`. x, y: the whole population on the device.

    member: bool[M, N] of the whole run (the step count per epoch is fixed by all of it).
    With `train.dp_sgd` the models of the group train one at a time (Opacus), whatever `vectorize`;
    metrics.json then records the spent ε (`epsilon`, and the accountant's details under `dp_sgd`).
    With a `teacher` section every model fine-tunes the teacher stored in the run (`farm.teacher.teacher_init`).
    """
    run = RunDir(run_uri)
    ids = list(model_ids)
    group = train_group(
        model_cfg=cfg.model, train_cfg=cfg.train, info=info, x=x, y=y, member=member[ids],
        seeds=[model_seed(cfg.seed, m) for m in ids],
        n_steps_per_epoch=steps_per_epoch(member, cfg.train.batch_size), vectorize=vectorize,
        init_model=teacher_init(cfg, run),
    )
    start = time.perf_counter()
    clean_logits, pred = query_group(group, queries, x, info=info)
    query_seconds = time.perf_counter() - start
    labels = y.cpu().numpy()
    digest = config_hash(cfg)
    for g, model_id in enumerate(ids):
        metrics = model_metrics(cfg, group, g, model_id=model_id, n_models=len(ids), logits=clean_logits[g], y=y,
                                member=member[model_id], query_seconds=query_seconds)
        table = responses_table(labels=labels, pred=pred[g].cpu().numpy(),
                                logits=clean_logits[g].float().cpu().numpy() if cfg.record_logits else None)
        write_model_shard(run, model_id=model_id, state_dict=group.state_dicts[g], metrics=metrics,
                          responses=table, config_hash=digest)
    return ids


@ray.remote
class TrainerActor:
    """Holds the population on its device once; trains the groups the driver hands it."""

    def __init__(self, *, run_uri: str, cfg: RunConfig, info: DatasetInfo, queries: Sequence[Query]):
        cpus = max(1, int(cfg.farm.num_cpus))
        torch.set_num_threads(cpus)
        self.device = pick_device(cfg.farm.device)
        self.run_uri, self.cfg, self.info, self.queries = run_uri, cfg, info, queries
        self.x = self.y = self.member = None

    def pid(self) -> int:
        return os.getpid()

    def _load(self, arrays: list) -> None:
        # arrays: [x, y, member] object refs, nested so that Ray hands them over unresolved and this actor
        # fetches them once, on its first group. They come with every call, not with the constructor: Ray
        # cannot restart an actor whose constructor arguments live in the object store (and says so on
        # every farm), while a restarted actor gets them again with its next group.
        x, y, member = ray.get(arrays)
        self.member = np.array(member)
        # copies: arrays from the object store are read-only
        self.x = torch.tensor(x, device=self.device)
        self.y = torch.tensor(y, device=self.device)

    def train(self, model_ids: Sequence[int], arrays: list) -> dict:
        """{"models": the ids written, "restarted": whether Ray restarted this actor (its node or process was lost:
        the group may be a retry), "node": `node_info()`}."""
        hold_point(f"train-{model_ids[0]:05d}")
        if self.x is None:
            self._load(arrays)
        done = run_group(
            run_uri=self.run_uri, cfg=self.cfg, info=self.info, x=self.x, y=self.y, member=self.member,
            queries=self.queries, model_ids=model_ids, vectorize=self.cfg.farm.group_size > 1,
        )
        with warnings.catch_warnings():  # Ray's property reads its own deprecated actor_id
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        return {"models": done, "restarted": restarted, "node": node_info()}
