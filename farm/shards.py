"""The on-disk contract (DESIGN §2): schemas, writers and validators of a run's files.

Every schema is defined here once, with its version in the schema metadata.
"""

from __future__ import annotations

import io
import json
import pickle
import re

import numpy as np
import pyarrow as pa
import torch

from farm.content import SUCCESS, checked_bytes, content_problems, note_unrecorded, read_records, success_text
from farm.errors import RunError
from farm.storage import RunDir, json_bytes, table_bytes

SCHEMA_VERSION = "1"


def schema(fields, *, file: str, version: str = SCHEMA_VERSION) -> pa.Schema:
    """A pyarrow schema of one of shadowfarm's files, its name and schema version in the metadata.

    Every Parquet file of a run (stage 1 here, stage 2 in attacks/) is declared through this, so a
    reader can tell which file and which version it holds (`shadowfarm.file`, `shadowfarm.schema_version`).
    """
    return pa.schema(fields, metadata={b"shadowfarm.schema_version": version.encode(),
                                       b"shadowfarm.file": file.encode()})


MEMBERSHIP_SCHEMA = schema(
    [("model_id", pa.int32()), ("example_id", pa.int32()), ("member", pa.bool_()),
     # disjoint mode: the example is in the target pool (the challenge set); lira: always true
     ("target_pool", pa.bool_())],
    file="membership",
)
QUERIES_SCHEMA = schema(
    [("query_id", pa.int16()), ("kind", pa.string()), ("params", pa.string()), ("seed", pa.int64())],
    file="queries",
)


def _list_type(item: pa.DataType, size: int) -> pa.DataType:
    # Parquet names list items "element": use that name so schemas round-trip exactly.
    return pa.list_(pa.field("element", item), size)


def responses_schema(n_queries: int, n_classes: int | None) -> pa.Schema:
    """responses.parquet of one model: `pred` per query (order of queries.parquet), clean `logits`."""
    fields = [("example_id", pa.int32()), ("label", pa.int16()), ("pred", _list_type(pa.int16(), n_queries))]
    if n_classes is not None:
        fields.append(("logits", _list_type(pa.float32(), n_classes)))
    return schema(fields, file="responses")


MEMBERSHIP = "membership.parquet"
QUERIES = "queries.parquet"
RUN_JSON = "run.json"


SHARD_FILES = ("weights.pt", "metrics.json", "responses.parquet")  # and _SUCCESS, written last


def model_dir(model_id: int) -> str:
    return f"models/model_id={model_id:05d}"


# ---------------------------------------------------------------- tables


def membership_table(member: np.ndarray, target_pool: np.ndarray | None = None) -> pa.Table:
    """member bool[M, N] -> one row per (model, example) pair."""
    n_models, n_examples = member.shape
    if target_pool is None:
        target_pool = np.ones(n_examples, dtype=bool)
    return pa.table(
        {
            "model_id": np.repeat(np.arange(n_models, dtype=np.int32), n_examples),
            "example_id": np.tile(np.arange(n_examples, dtype=np.int32), n_models),
            "member": member.reshape(-1),
            "target_pool": np.tile(target_pool, n_models),
        },
        schema=MEMBERSHIP_SCHEMA,
    )


def membership_matrix(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `membership_table`: (member bool[M, N], target_pool bool[N])."""
    model_id = table["model_id"].to_numpy()
    example_id = table["example_id"].to_numpy()
    n_models, n_examples = int(model_id.max()) + 1, int(example_id.max()) + 1
    member = np.zeros((n_models, n_examples), dtype=bool)
    member[model_id, example_id] = table["member"].to_numpy(zero_copy_only=False)
    target_pool = np.zeros(n_examples, dtype=bool)
    target_pool[example_id] = table["target_pool"].to_numpy(zero_copy_only=False)
    return member, target_pool


def queries_table(queries) -> pa.Table:
    """`farm.queries.Query` list -> queries.parquet rows."""
    return pa.table(
        {
            "query_id": [q.query_id for q in queries],
            "kind": [q.kind for q in queries],
            "params": [json.dumps(q.params, sort_keys=True) for q in queries],
            "seed": [q.seed for q in queries],
        },
        schema=QUERIES_SCHEMA,
    )


def _fixed_list(values: np.ndarray, dtype: pa.DataType) -> pa.FixedSizeListArray:
    values = np.ascontiguousarray(values)
    flat = pa.array(values.reshape(-1), type=dtype)
    return pa.FixedSizeListArray.from_arrays(flat, type=_list_type(dtype, values.shape[1]))


def responses_table(*, labels: np.ndarray, pred: np.ndarray, logits: np.ndarray | None) -> pa.Table:
    """labels int[N], pred int16[N, Q], logits float32[N, C] | None -> one model's responses."""
    n_examples, n_queries = pred.shape
    schema = responses_schema(n_queries, None if logits is None else logits.shape[1])
    columns = {
        "example_id": pa.array(np.arange(n_examples, dtype=np.int32)),
        "label": pa.array(labels.astype(np.int16)),
        "pred": _fixed_list(pred.astype(np.int16), pa.int16()),
    }
    if logits is not None:
        columns["logits"] = _fixed_list(logits.astype(np.float32), pa.float32())
    return pa.table(columns, schema=schema)


def fixed_list_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed_size_list column -> 2-D numpy array [rows, width]."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = array.type.list_size
    return array.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)


# ---------------------------------------------------------------- one model's shard


def write_model_shard(
    run: RunDir, *, model_id: int, state_dict: dict, metrics: dict, responses: pa.Table, config_hash: str
) -> None:
    """Write weights, metrics and responses, then `_SUCCESS` (the config hash and each file's sha256 and size,
    `farm.content`) last, as one directory renamed into place (`RunDir.replace_dir`): no stale `_SUCCESS`,
    foreign file or file of an interrupted attempt survives a rewrite, and no reader sees a mixed shard.
    """
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, buffer)
    files = {"weights.pt": buffer.getvalue(), "metrics.json": json_bytes(metrics),
             "responses.parquet": table_bytes(responses)}
    run.replace_dir(model_dir(model_id), {**files, SUCCESS: success_text(config_hash, files).encode()})


_GLOBAL = re.compile(r"unsupported global:? GLOBAL (\S+)", re.IGNORECASE)


def load_weights(run: RunDir, model_id: int) -> dict:
    """Model `model_id`'s state_dict, loaded with weights_only=True: tensors and plain containers only.

    A weights.pt holding anything else (a pickled object could run code when loaded) or a corrupt one
    raises RunError naming the file; it is never retried without that guard.
    """
    rel = f"{model_dir(model_id)}/weights.pt"
    data = checked_bytes(run, model_dir(model_id), "weights.pt")
    redo = "retrain the model: delete its folder and re-run shadowfarm train"
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        what = f"a pickled {found.group(1)}" if found else "something other than tensors"
        raise RunError(f"{run.path(rel)}: refused: it holds {what} (weights load with weights_only=True; "
                       f"shadowfarm never unpickles objects); {redo}") from None
    except (RuntimeError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunError(f"{run.path(rel)}: unreadable ({reason}); {redo}") from None


def is_done(run: RunDir, model_id: int, config_hash: str) -> bool:
    """True when the model's `_SUCCESS` holds the current config hash."""
    base = model_dir(model_id)
    return run.is_file(f"{base}/{SUCCESS}") and read_records(run, base)[0] == config_hash


def table_problem(run: RunDir, rel: str, expected: pa.Table) -> str | None:
    """Why the table at `rel` is not `expected` (missing, unreadable, another schema or content); None when it is."""
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


def check_model_shard(
    run: RunDir, model_id: int, *, config_hash: str, n_examples: int, n_queries: int, n_classes: int | None,
    labels: np.ndarray | None = None, n_members: int | None = None, quick: bool = False,
) -> list[str]:
    """Problems with one model's shard, one line each, naming the file; empty when it is valid.

    Checks `_SUCCESS` (present, the current config hash), each file's size and sha256 against its record
    (`farm.content`; `quick`: sizes only; a run without records gets a note), the files (present, readable),
    the responses' schema, row count and example ids, and when given, its labels (int[N], the
    population's) and the number of members in metrics.json (`n_train`, the model's row of the
    membership matrix): a shard copied from another run or config fails one of these.
    """
    base = model_dir(model_id)
    success = f"{base}/_SUCCESS"
    if not run.is_file(success):
        return [f"{run.path(success)}: missing (model not finished)"]
    problems = []
    digest, records = read_records(run, base)
    if digest != config_hash:
        problems.append(f"{run.path(success)}: written by another config (hash differs)")
    if records is None:
        note_unrecorded(run)
    else:
        problems += content_problems(run, base, records, quick=quick)
    for name in SHARD_FILES:
        if not run.is_file(f"{base}/{name}"):
            problems.append(f"{run.path(base + '/' + name)}: missing")
        elif records is not None and name not in records:
            problems.append(f"{run.path(base + '/' + name)}: not recorded in its _SUCCESS")
    rel = f"{base}/metrics.json"
    if run.is_file(rel):
        try:
            metrics = run.read_json(rel)
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"{run.path(rel)}: unreadable ({exc})")
        else:
            if metrics.get("model_id", model_id) != model_id:
                problems.append(f"{run.path(rel)}: model_id {metrics['model_id']}, expected {model_id}")
            elif n_members is not None and metrics.get("n_train", 0) != n_members:
                problems.append(f"{run.path(rel)}: n_train {metrics.get('n_train', 0)}, but the membership "
                                f"matrix gives the model {n_members} members")
    rel = f"{base}/responses.parquet"
    if run.is_file(rel):
        problems += _check_responses(run, rel, n_examples=n_examples, n_queries=n_queries, n_classes=n_classes,
                                     labels=labels)
    return problems


def _check_responses(run: RunDir, rel: str, *, n_examples: int, n_queries: int, n_classes: int | None,
                     labels: np.ndarray | None) -> list[str]:
    expected = responses_schema(n_queries, n_classes)
    try:
        table = run.read_table(rel)
    except (OSError, pa.ArrowException) as exc:
        return [f"{run.path(rel)}: unreadable ({str(exc).splitlines()[0]})"]
    if not table.schema.remove_metadata().equals(expected.remove_metadata()):
        return [f"{run.path(rel)}: schema differs from the expected {expected.remove_metadata()}"]
    if table.num_rows != n_examples:
        return [f"{run.path(rel)}: {table.num_rows} rows, expected {n_examples}"]
    if not np.array_equal(table["example_id"].to_numpy(), np.arange(n_examples)):
        return [f"{run.path(rel)}: example_id is not 0..{n_examples - 1} in order"]
    if labels is not None and not np.array_equal(table["label"].to_numpy(), labels):
        return [f"{run.path(rel)}: labels differ from the population's (a shard of another data set or seed?)"]
    return []
