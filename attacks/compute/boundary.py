"""The boundary-distance attack: HopSkipJump distances of every (model, example), as Ray tasks.

Every model is queried through a `ModelOracle` (labels only; the target exactly like the shadows).
Work is split into tasks over (model, example chunk), run by `attacks.compute.tasks.map_tasks`; each writes
`boundary/<settings key>/model_id=00007/part-<first>-<stop>.parquet` (example_id, distance, queries,
success) atomically, so a re-run computes only the missing chunks. The settings key hashes the
HopSkipJump settings (not the chunking: results do not depend on it), so tuning runs with other
settings never mix with these. The per-(model, example) distances become the "boundary" statistic;
`attacks.methods.boundary` is the pure attack on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import ray
import torch
from tqdm.auto import tqdm

from attacks.compute.hsja import RANDOM_STREAMS, HsjaResult, hopskipjump
from attacks.compute.tasks import map_tasks, task
from attacks.methods.boundary import STATISTIC
from attacks.responses import Responses
from farm.cluster import ensure_ray
from farm.content import cached, write_recorded
from farm.plan import Plan
from farm.shards import schema
from farm.storage import RunDir, table_bytes
from farm.worker import hold_point

CHUNK_EXAMPLES = 256  # examples per task (and per cached part) of `boundary_distances`
BOUNDARY_SCHEMA = schema(
    [("example_id", pa.int32()), ("distance", pa.float32()), ("queries", pa.int32()), ("success", pa.bool_())],
    file="boundary",
)


@dataclass(frozen=True)
class HsjaSettings:
    """HopSkipJump settings of the boundary attack (budget: queries per example, None = unlimited)."""

    max_iter: int = 10
    init_evals: int = 100
    max_evals: int = 1000
    budget: int | None = None
    seed: int = 0

    def key(self) -> str:
        """Names the cached part files: the settings and hopskipjump's random streams (whose change changes
        every distance), so parts computed by an older version are never mixed with new ones."""
        fields = {**asdict(self), "random_streams": RANDOM_STREAMS}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]

    def run(self, predict_labels, x: np.ndarray, labels: np.ndarray, *, bounds: tuple[float, float],
            example_ids: np.ndarray, chunk_size: int = 65536) -> HsjaResult:
        """`hopskipjump` with these settings (x float32[B, *shape], labels int[B], example_ids int[B])."""
        return hopskipjump(predict_labels, x, labels, bounds=bounds, max_iter=self.max_iter,
                           init_evals=self.init_evals, max_evals=self.max_evals, budget=self.budget, seed=self.seed,
                           chunk_size=chunk_size, example_ids=example_ids)


def _part(settings: HsjaSettings, model_id: int, start: int, stop: int) -> str:
    return f"boundary/{settings.key()}/model_id={model_id:05d}/part-{start:06d}-{stop:06d}.parquet"


def _boundary_chunk(run_uri: str, model_id: int, start: int, x: np.ndarray, labels: np.ndarray, bounds,
                   settings: HsjaSettings, chunk_size: int) -> str:
    from attacks.oracles.model import ModelOracle

    torch.set_num_threads(1)
    stop = start + len(labels)
    hold_point(f"boundary-{model_id:05d}-{start:06d}")  # test hook: a test removes this task's node here
    oracle = ModelOracle.from_run(run_uri, model_id)
    result = settings.run(oracle.predict_labels, x, labels, bounds=bounds, example_ids=np.arange(start, stop),
                          chunk_size=chunk_size)
    table = pa.table({"example_id": np.arange(start, stop, dtype=np.int32), "distance": result.distance,
                      "queries": result.queries, "success": result.success}, schema=BOUNDARY_SCHEMA)
    rel = _part(settings, model_id, start, stop)
    write_recorded(RunDir(run_uri), rel, table_bytes(table))
    return rel


_boundary_task = task(_boundary_chunk)


def boundary_distances(run: RunDir, *, x: np.ndarray, labels: np.ndarray, bounds: tuple[float, float],
                       models: Sequence[int], n_models: int, settings: HsjaSettings = HsjaSettings(),
                       chunk_examples: int = CHUNK_EXAMPLES, chunk_size: int = 65536, progress: bool = True,
                       local: bool = False) -> np.ndarray:
    """float64[n_models, N] distances for `models` (NaN rows for the others); computes missing chunks.

    x: float32[N, *shape] the population, labels: int[N] true labels. One Ray task per (model, chunk of
    `chunk_examples` examples), through `map_tasks` (at most twice the cluster's CPUs in flight; local=True: in this
    process).
    """
    n = len(labels)
    chunks = [(m, s, min(s + chunk_examples, n)) for m in models for s in range(0, n, chunk_examples)]
    todo = [c for c in chunks if not cached(run, _part(settings, *c))]
    if todo and local:
        for m, start, stop in todo:
            _boundary_chunk(run.uri, m, start, x[start:stop], np.asarray(labels)[start:stop], bounds, settings,
                            chunk_size)
    elif todo:
        x_ref, labels_ref = ray.put(x), ray.put(np.asarray(labels))

        def submit(chunk: tuple[int, int, int]) -> ray.ObjectRef:
            m, start, stop = chunk
            return _boundary_task.remote(run.uri, m, start, _slice.remote(x_ref, start, stop),
                                         _slice.remote(labels_ref, start, stop), bounds, settings, chunk_size)

        map_tasks(submit, todo, desc="boundary", unit="chunk", progress=progress)
    out = np.full((n_models, n), np.nan)
    for m, start, stop in chunks:
        out[m, start:stop] = run.read_table(_part(settings, m, start, stop), columns=["distance"])["distance"]
    return out


def queries_sent(plan: Plan, chosen: dict, *, targets: Sequence[int], seed: int) -> float:
    """The mean HopSkipJump queries per example the `targets` were sent with the boundary attack's resolved
    settings `chosen`, read from the distance cache (`Budgets.sent`; the attack must have run with them)."""
    settings, n = hsja_settings(chosen, seed=seed), len(plan.dataset.y)
    chunks = [(int(m), s, min(s + CHUNK_EXAMPLES, n)) for m in targets for s in range(0, n, CHUNK_EXAMPLES)]
    sent = [plan.run.read_table(_part(settings, *c), columns=["queries"])["queries"].to_numpy() for c in chunks]
    return float(np.concatenate(sent).mean())


@ray.remote
def _slice(array: np.ndarray, start: int, stop: int) -> np.ndarray:
    return np.ascontiguousarray(array[start:stop])


def hsja_settings(settings: dict, *, seed: int) -> HsjaSettings:
    """The HopSkipJump settings of the boundary attack's resolved `settings` (the key of its distance cache)."""
    return HsjaSettings(max_iter=settings["max_iter"], init_evals=settings["init_evals"],
                        max_evals=settings["max_evals"], budget=settings["budget"], seed=seed)


def prepare(plan: Plan, responses: Responses, chosen: dict, *, scored: Sequence[int], everyone: Sequence[int],
            seed: int, progress: bool, local: bool) -> Responses:
    """`responses` with the "boundary" distances of the `scored` models (and of `everyone`, the shadows, for the
    calibrated variant); chosen: the attack's resolved settings (`Statistic.prepare`)."""
    models = sorted(scored) if chosen["variant"] == "threshold" else sorted(set(scored) | set(everyone))
    stat = boundary_distances(plan.run, x=plan.dataset.x, labels=plan.dataset.y, bounds=plan.dataset.info.bounds,
                              models=models, n_models=responses.n_models, settings=hsja_settings(chosen, seed=seed),
                              progress=progress, local=local)
    return responses.with_statistic(STATISTIC, stat)


def prepare_audit(plan: Plan, responses: Responses, oracle, chosen: dict, *, examples: np.ndarray,
                  pseudo: Sequence[int], shadows: Sequence[int], seed: int, progress: bool) -> Responses:
    """`prepare` for an audit: the shadows' distances on the challenge `examples` (cached as by the attack stage)
    and the oracle's, the target being the last row of `responses` (`Statistic.audit`)."""
    ensure_ray()
    target = responses.n_models - 1
    models = pseudo if chosen["variant"] == "threshold" else shadows
    hsja = hsja_settings(chosen, seed=seed)
    stat = np.full(responses.member.shape, np.nan)
    stat[:target] = _shadow_distances(plan, models, examples=examples, n_models=target, hsja=hsja, progress=progress)
    stat[target] = _target_distances(plan, oracle, examples=examples, hsja=hsja, progress=progress)
    return responses.with_statistic(STATISTIC, stat)


def _shadow_distances(plan: Plan, models: Sequence[int], *, examples: np.ndarray, n_models: int,
                      hsja: HsjaSettings, progress: bool) -> np.ndarray:
    """float64[n_models, K]: distances of `models` on the challenge examples (NaN rows for the others).

    Computed on the whole population: the distances are cached per example chunk, as by `shadowfarm attack`.
    """
    data = plan.dataset
    return boundary_distances(plan.run, x=data.x, labels=data.y, bounds=data.info.bounds, models=sorted(models),
                              n_models=n_models, settings=hsja, progress=progress)[:, examples]


def _target_distances(plan: Plan, oracle, *, examples: np.ndarray, hsja: HsjaSettings, progress: bool) -> np.ndarray:
    """float[K]: the oracle's distances on the challenge examples; the same seed and example ids as the
    shadows' give the target and the shadows the same random probes."""
    data = plan.dataset
    bar = tqdm(desc="target boundary", unit="query", disable=not progress)

    def ask(x: np.ndarray) -> np.ndarray:
        labels = oracle.predict_labels(x)
        bar.update(len(x))
        return labels

    result = hsja.run(ask, data.x[examples], data.y[examples], bounds=data.info.bounds, example_ids=examples)
    bar.close()
    return result.distance
