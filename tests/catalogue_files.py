"""The malformed files the bad-input catalogue's cases name (tests/catalogue_cases.py), made by `make_files`:
data sets, configs, ONNX models that do not fit a run, answers to exported queries that cannot be used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def make_files(files: Path) -> None:
    """The malformed files of the catalogue, in `files`."""
    files.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).random((20, 4)).astype(np.float32)
    y = np.arange(20) % 2

    def npz(name, **arrays):
        with open(files / name, "wb") as f:  # np.savez would append .npz to other names
            np.savez(f, **arrays)

    nan_x, inf_x = x.copy(), x.copy()
    nan_x[3, 1], inf_x[5, 2] = np.nan, np.inf
    npz("mismatched.npz", x=x, y=y[:19])
    npz("nan.npz", x=nan_x, y=y)
    npz("inf.npz", x=inf_x, y=y)
    npz("negative.npz", x=x, y=y - 1)
    npz("large.npz", x=x, y=y * 40000)
    npz("fractional.npz", x=x, y=y + 0.5)
    npz("strings.npz", x=x, y=np.array(["a", "b"] * 10))
    npz("flat.npz", x=x[:, 0], y=y)
    npz("empty.npz", x=np.zeros((0, 4), np.float32), y=np.zeros(0, int))
    npz("one_class.npz", x=x, y=np.zeros(20, int))
    npz("no_y.npz", x=x)
    npz("objects.npz", x=np.array([[1, "a"]] * 20, dtype=object), y=y)
    npz("truncated.npz", x=x, y=y)
    (files / "truncated.npz").write_bytes((files / "truncated.npz").read_bytes()[:200])
    np.save(files / "array.npy", x)
    (files / "folder.npz").mkdir(exist_ok=True)
    (files / "narrow.csv").write_text("1,0,1\n2,1,0\n")
    (files / "words.csv").write_text("1," + ",".join(["0"] * 600) + "\nx," + ",".join(["1"] * 600) + "\n")
    (files / "empty_root").mkdir(exist_ok=True)
    (files / "far_ids.txt").write_text("1 2 99999\n")
    (files / "not_a_run").mkdir(exist_ok=True)
    (files / "not_a_run" / "notes.txt").write_text("mine")
    (files / "unknown.yaml").write_text("train:\n  epochz: 1\n")
    (files / "invalid.yaml").write_text("train: [\n")
    (files / "list.yaml").write_text("- 1\n- 2\n")
    onnx_files(files)
    answers_files(files)



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
