"""Re-query a run's saved models with any query set, as Ray tasks over (model, example chunk).

The farm records `pred` for the config's query set; tuning and studies need others (another
translation distance, noise level, number of copies). Every model, the target included, is
queried through a `ModelOracle` (labels only), one task per missing chunk (`attacks.compute.tasks.map_tasks`).
Results are cached under `requery/<query-set key>/model_id=00007/part-<first>-<stop>.parquet`, keyed by a
hash of the expanded queries (kinds, parameters, seeds), so a re-run computes only missing chunks and no
two query sets ever share a file.

Perturbations draw their noise for the whole population (DESIGN §4: identical inputs for every
model), so each task perturbs the whole population and keeps its chunk: chunking changes the
work split, never the answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pyarrow as pa
import ray
import torch
from tqdm.auto import tqdm

from attacks.compute.tasks import map_tasks, task
from attacks.responses import Responses
from farm.config import QuerySpec, from_dict
from farm.content import cached, write_recorded
from farm.data import DatasetInfo
from farm.plan import Plan
from farm.queries import Query, apply_query, expand_queries
from farm.shards import fixed_list_to_numpy, responses_table
from farm.storage import RunDir, table_bytes


def query_set_key(queries: Sequence[Query]) -> str:
    blob = json.dumps([(q.kind, q.params, q.seed) for q in queries], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _part(key: str, model_id: int, start: int, stop: int) -> str:
    return f"requery/{key}/model_id={model_id:05d}/part-{start:06d}-{stop:06d}.parquet"


def _answers(run_uri: str, model_id: int, start: int, stop: int, perturbed) -> np.ndarray:
    """int16[stop - start, Q]: model `model_id`'s labels on examples [start, stop) of each perturbed population."""
    from attacks.oracles.model import ModelOracle

    oracle = ModelOracle.from_run(run_uri, model_id)
    return np.stack([oracle.predict_labels(inputs[start:stop]) for inputs in perturbed], axis=1).astype(np.int16)


def _write_chunk(run_uri: str, model_id: int, start: int, stop: int, pred: np.ndarray, labels: np.ndarray,
                 key: str) -> str:
    table = responses_table(labels=labels[start:stop], pred=pred, logits=None)
    table = table.set_column(0, "example_id", pa.array(np.arange(start, stop, dtype=np.int32)))
    rel = _part(key, model_id, start, stop)
    write_recorded(RunDir(run_uri), rel, table_bytes(table))
    return rel


def _query_chunk(run_uri: str, model_id: int, start: int, stop: int, x: np.ndarray, labels: np.ndarray,
                 queries: Sequence[Query], info: DatasetInfo, key: str) -> str:
    torch.set_num_threads(1)
    population = torch.tensor(x)
    pred = _answers(run_uri, model_id, start, stop, (apply_query(q, population, info=info) for q in queries))
    return _write_chunk(run_uri, model_id, start, stop, pred, labels, key)


def _query_local(run_uri: str, todo: Sequence[tuple[int, int, int]], x: np.ndarray, labels: np.ndarray,
                 queries: Sequence[Query], info: DatasetInfo, key: str, *, max_bytes: int = 2**28) -> None:
    """The missing chunks `todo` in this process, each query's population perturbed ONCE for all of them (a task
    perturbs it per (model, chunk)), in blocks of queries holding at most `max_bytes` of inputs. Same inputs and
    forward passes as the tasks: the same answers, bit for bit."""
    torch.set_num_threads(1)
    population = torch.tensor(x)
    block = max(1, max_bytes // max(1, population.numel() * population.element_size()))
    parts: dict[tuple[int, int, int], list[np.ndarray]] = {chunk: [] for chunk in todo}
    for first in range(0, len(queries), block):
        perturbed = [apply_query(q, population, info=info) for q in queries[first:first + block]]
        for chunk, blocks in parts.items():
            blocks.append(_answers(run_uri, *chunk, perturbed))
    for chunk, blocks in parts.items():
        _write_chunk(run_uri, *chunk, np.concatenate(blocks, axis=1), labels, key)


_query_task = task(_query_chunk)


def requery(run: RunDir, *, specs: Sequence[QuerySpec], info: DatasetInfo, x: np.ndarray, labels: np.ndarray,
            models: Sequence[int], n_models: int, seed: int, chunk_examples: int = 4096,
            progress: bool = True, local: bool = False) -> tuple[list[Query], np.ndarray]:
    """(queries, pred int16[n_models, N, Q]) for the query set `specs`; rows of other models are -1.

    x: float32[N, *info.shape] the whole population in example_id order; labels: int[N].
    One Ray task per missing (model, chunk), through `map_tasks` (at most twice the cluster's CPUs in flight);
    local=True computes them in this process (inside a Tune trial, which holds its own CPUs), each query's
    perturbation drawn once for all models.
    """
    queries = expand_queries(specs, info=info, seed=seed)
    key = query_set_key(queries)
    n = len(labels)
    chunks = [(m, s, min(s + chunk_examples, n)) for m in models for s in range(0, n, chunk_examples)]
    todo = [c for c in chunks if not cached(run, _part(key, *c))]
    if todo and local:
        _query_local(run.uri, todo, x, np.asarray(labels), queries, info, key)
    elif todo:
        x_ref, labels_ref = ray.put(x), ray.put(np.asarray(labels))
        map_tasks(lambda c: _query_task.remote(run.uri, *c, x_ref, labels_ref, queries, info, key), todo,
                  desc="queries", unit="chunk", progress=progress)
    pred = np.full((n_models, n, len(queries)), -1, dtype=np.int16)
    for m, start, stop in chunks:
        pred[m, start:stop] = fixed_list_to_numpy(run.read_table(_part(key, m, start, stop), columns=["pred"])["pred"])
    return queries, pred


def target_pred(oracle, *, queries, info, x: np.ndarray, examples: np.ndarray, progress: bool = True) -> np.ndarray:
    """int16[K, Q]: the oracle's label for each challenge example under each query (the whole population perturbed
    once per query, DESIGN §4, and the `examples` rows asked: one query per example and query)."""
    population = torch.as_tensor(x)
    pred = np.empty((len(examples), len(queries)), dtype=np.int16)
    for q, query in enumerate(tqdm(queries, desc="target queries", unit="query", disable=not progress)):
        pred[:, q] = oracle.predict_labels(apply_query(query, population, info=info)[examples].numpy())
    return pred


def audit_columns(plan: Plan, responses: Responses, examples: np.ndarray) -> np.ndarray:
    """The example ids of an audit's `responses` columns: the challenge `examples`, then a disjoint run's shadow
    pool when the responses hold it (`attacks.audit`: the shadow game is played there, the target never asked)."""
    columns = np.asarray(examples)
    if responses.n_examples > len(columns):
        columns = np.concatenate([columns, np.flatnonzero(~plan.target_pool)])
    return columns


def with_queries(responses: Responses, queries: Sequence[Query], pred: np.ndarray) -> Responses:
    """The same game with another query set's responses (logits and statistics kept)."""
    return replace(responses, pred=pred, query_kinds=tuple(q.kind for q in queries),
                   query_params=tuple(q.params for q in queries))


def requery_responses(plan: Plan, responses: Responses, specs: Sequence[QuerySpec | dict], *,
                      models: Sequence[int] | None = None, answer: Callable | None = None,
                      examples: np.ndarray | None = None, progress: bool = False, local: bool = False) -> Responses:
    """`responses` under another query set (`specs`: QuerySpecs, or their dicts as best.json records them).

    The answers of `models` (None: every model of the run) come from the query engine (`requery`, cached in the
    run); the other models' rows are -1. An audit's `responses` (the run's models on the challenge `examples`,
    its target last) pass `answer`: answer(queries=...) -> int16[K, Q], the target's answers through its oracle
    (journaled and budgeted as any query)."""
    if specs and isinstance(specs[0], dict):
        specs = from_dict({"queries": list(specs)}).queries
    data = plan.dataset
    n_models = responses.n_models - (answer is not None)
    models = list(range(n_models)) if models is None else [int(m) for m in models]
    queries, pred = requery(plan.run, specs=specs, info=data.info, x=data.x, labels=data.y, models=models,
                            n_models=n_models, seed=plan.cfg.seed, progress=progress, local=local)
    if answer is not None:
        pred = np.concatenate([pred[:, examples], answer(queries=queries)[None]])
    return with_queries(responses, queries, pred)
