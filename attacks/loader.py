"""Read a run's shards into `Responses`, validated against queries.parquet and membership.parquet."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from attacks.responses import Responses
from farm.content import checked_bytes
from farm.errors import RunError
from farm.runfile import read_run_json
from farm.shards import MEMBERSHIP, QUERIES, fixed_list_to_numpy, is_done, membership_matrix, model_dir
from farm.storage import RunDir


def _read(run: RunDir, rel: str, *, schema: bool = False, columns: list[str] | None = None, data: bytes | None = None):
    """A Parquet file of the run (or its schema; from `data`, its bytes, when given); RunError naming it when it
    cannot be read."""
    try:
        if data is not None:
            return pq.read_schema(pa.BufferReader(data)) if schema else pq.read_table(pa.BufferReader(data),
                                                                                        columns=columns)
        return run.read_schema(rel) if schema else run.read_table(rel, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise RunError(f"{run.path(rel)}: unreadable ({str(exc).splitlines()[0]}); `shadowfarm verify "
                       f"{run.path()}` lists the damage, re-running `shadowfarm train` redoes it") from None


def load_responses(run: RunDir | str, *, logits: bool = True) -> Responses:
    """All models' responses of a finished run.

    logits=False reads no logits even when the shards have them (a label-only view). Raises
    RunError naming the file when a model is unfinished or its shard disagrees with the run.
    """
    run = RunDir(run) if isinstance(run, str) else run
    digest = read_run_json(run).get("config_hash")
    member, _ = membership_matrix(_read(run, MEMBERSHIP))
    queries = _read(run, QUERIES).to_pylist()
    n_models, n_examples = member.shape
    unfinished = [m for m in range(n_models) if not is_done(run, m, digest)]
    if unfinished:
        raise RunError(f"{run.path()}: {len(unfinished)} of {n_models} models are not finished "
                       f"(first: model {unfinished[0]}); re-run shadowfarm train to complete it")
    pred = np.empty((n_models, n_examples, len(queries)), dtype=np.int16)
    all_logits = None
    labels = None
    for m in range(n_models):
        rel = f"{model_dir(m)}/responses.parquet"
        data = checked_bytes(run, model_dir(m), "responses.parquet")  # its sha256 against _SUCCESS's record
        names = _read(run, rel, schema=True, data=data).names
        columns = ["example_id", "label", "pred"] + (["logits"] if logits and "logits" in names else [])
        table = _read(run, rel, columns=columns, data=data)
        if table.num_rows != n_examples or not np.array_equal(table["example_id"].to_numpy(), np.arange(n_examples)):
            raise RunError(f"{run.path(rel)}: expected example_id 0..{n_examples - 1} in order")
        block = fixed_list_to_numpy(table["pred"])
        if block.shape[1] != len(queries):
            raise RunError(f"{run.path(rel)}: pred has {block.shape[1]} queries, queries.parquet {len(queries)}")
        pred[m] = block
        shard_labels = table["label"].to_numpy().astype(np.int64)
        if labels is None:
            labels = shard_labels
        elif not np.array_equal(labels, shard_labels):
            raise RunError(f"{run.path(rel)}: labels differ from model 0's")
        if "logits" in columns:
            block = fixed_list_to_numpy(table["logits"])
            if all_logits is None:
                all_logits = np.empty((n_models, n_examples, block.shape[1]), dtype=np.float32)
            all_logits[m] = block
        elif all_logits is not None:
            raise RunError(f"{run.path(rel)}: has no logits column while other shards do")
    return Responses(
        member=member, pred=pred, labels=labels,
        query_kinds=tuple(q["kind"] for q in queries),
        query_params=tuple(json.loads(q["params"]) for q in queries),
        logits=all_logits, model_ids=np.arange(n_models, dtype=np.int32),
    )
