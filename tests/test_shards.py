import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from farm.queries import Query
from farm.shards import (
    MEMBERSHIP_SCHEMA,
    QUERIES_SCHEMA,
    SCHEMA_VERSION,
    check_model_shard,
    fixed_list_to_numpy,
    is_done,
    load_weights,
    membership_matrix,
    membership_table,
    queries_table,
    responses_schema,
    responses_table,
    write_model_shard,
)
from farm.storage import RunDir


def test_membership_round_trip(tmp_path):
    member = np.random.default_rng(0).random((5, 11)) < 0.5
    pool = np.arange(11) % 2 == 0
    run = RunDir(str(tmp_path))
    run.write_table("membership.parquet", membership_table(member, pool))
    table = run.read_table("membership.parquet")
    assert table.schema.equals(MEMBERSHIP_SCHEMA, check_metadata=True)
    back, back_pool = membership_matrix(table)
    assert np.array_equal(back, member) and np.array_equal(back_pool, pool)


def test_queries_round_trip(tmp_path):
    queries = [Query(0, "clean", {}, 11), Query(1, "translate", {"dx": 1, "dy": 0}, 12)]
    run = RunDir(str(tmp_path))
    run.write_table("queries.parquet", queries_table(queries))
    table = run.read_table("queries.parquet")
    assert table.schema.equals(QUERIES_SCHEMA, check_metadata=True)
    assert table.column("kind").to_pylist() == ["clean", "translate"]
    assert table.schema.metadata[b"shadowfarm.schema_version"] == SCHEMA_VERSION.encode()


def test_responses_round_trip_and_pandas(tmp_path):
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 10, (7, 3)).astype(np.int16)
    logits = rng.normal(size=(7, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 7)
    run = RunDir(str(tmp_path))
    run.write_table("r.parquet", responses_table(labels=labels, pred=pred, logits=logits))
    table = run.read_table("r.parquet")
    assert table.schema.equals(responses_schema(3, 10), check_metadata=True)
    assert np.array_equal(fixed_list_to_numpy(table["pred"]), pred)
    assert np.array_equal(fixed_list_to_numpy(table["logits"]), logits)
    frame = pd.read_parquet(tmp_path / "r.parquet")
    assert list(frame.columns) == ["example_id", "label", "pred", "logits"]
    assert list(frame["pred"][2]) == list(pred[2])
    no_logits = responses_table(labels=labels, pred=pred, logits=None)
    assert "logits" not in no_logits.schema.names


def shard_inputs() -> tuple[dict, object]:
    """(state_dict, responses table) of a tiny shard: 4 examples, 2 queries, 3 classes."""
    pred = np.zeros((4, 2), np.int16)
    table = responses_table(labels=np.zeros(4), pred=pred, logits=np.zeros((4, 3), np.float32))
    return {"w": torch.arange(6.0).reshape(2, 3)}, table


def test_model_shard_success_last_and_checks(tmp_path):
    run = RunDir(str(tmp_path))
    state, table = shard_inputs()
    write_model_shard(run, model_id=3, state_dict=state, metrics={"a": 1}, responses=table, config_hash="abc")
    assert is_done(run, 3, "abc") and not is_done(run, 3, "other") and not is_done(run, 4, "abc")
    assert torch.equal(load_weights(run, 3)["w"], state["w"])
    ok = dict(config_hash="abc", n_examples=4, n_queries=2, n_classes=3)
    assert check_model_shard(run, 3, **ok) == []
    assert "another config" in check_model_shard(run, 3, **{**ok, "config_hash": "zz"})[0]
    assert "rows" in check_model_shard(run, 3, **{**ok, "n_examples": 5})[0]
    assert "missing" in check_model_shard(run, 9, **ok)[0]
    # a truncated parquet file is named as unreadable
    path = tmp_path / "models/model_id=00003/responses.parquet"
    path.write_bytes(path.read_bytes()[:50])
    assert "unreadable" in " ".join(check_model_shard(run, 3, **ok))
    # no temp files are left behind by atomic writes
    assert not [p for p in tmp_path.rglob(".*")]


def test_schema_is_fixed_size_lists():
    schema = responses_schema(5, 10)
    assert schema.field("pred").type.list_size == 5 and schema.field("pred").type.value_type == pa.int16()
    assert schema.field("logits").type.list_size == 10
    assert schema.field("logits").type.value_type == pa.float32()
