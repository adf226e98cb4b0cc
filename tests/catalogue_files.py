"""Malformed files of the bad-input catalogue (tests/catalogue_cases.py) that need more than a line to make:
ONNX models that do not fit a run, answers to exported queries that cannot be used."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def onnx_files(files: Path) -> None:
    """ONNX models whose inputs do not fit a run (the tiny run's inputs are float32 [B, 1, 8, 8])."""
    from onnx import TensorProto, helper

    def save(name, inputs, nodes, output):
        graph = helper.make_graph(nodes, name, inputs, [output])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        (files / name).write_bytes(model.SerializeToString())

    def tensor(name, element, width):
        return helper.make_tensor_value_info(name, element, ["N", width])

    scores = tensor("scores", TensorProto.FLOAT, 64)
    save("two_inputs.onnx", [tensor("a", TensorProto.FLOAT, 64), tensor("b", TensorProto.FLOAT, 64)],
         [helper.make_node("Add", ["a", "b"], ["scores"])], scores)
    save("five_features.onnx", [tensor("x", TensorProto.FLOAT, 5)], [helper.make_node("Identity", ["x"], ["y"])],
         tensor("y", TensorProto.FLOAT, 5))
    save("int_input.onnx", [tensor("x", TensorProto.INT64, 64)],
         [helper.make_node("Cast", ["x"], ["scores"], to=TensorProto.FLOAT)], scores)
    (files / "text.onnx").write_text("not a model\n")


def answers_files(files: Path) -> None:
    """Answers to exported queries (`shadowfarm audit --answers`): a file that is not Parquet, and good answers
    beside the manifest of an export of another run."""
    manifest = {"format": "shadowfarm-queries", "version": 1, "count": 3, "run_hash": "0123456789abcdef",
                "export_id": "fedcba9876543210"}
    for name in ("corrupted", "foreign"):
        (files / name).mkdir(exist_ok=True)
        (files / name / "manifest.json").write_text(json.dumps(manifest))
    (files / "corrupted" / "answers.parquet").write_bytes(b"PAR1" + bytes(range(40)))
    pd.DataFrame({"query_id": [0, 1, 2], "label": [3, 1, 4]}).to_parquet(files / "foreign" / "answers.parquet")
