"""The malformed files the bad-input catalogue's cases name (tests/catalogue_cases.py), made by `make_files`:
data sets, configs (bad encodings, duplicate keys, anchor bombs), run.json files, ONNX models that do not fit a
run, answers to exported queries that cannot be used."""

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
    (files / "latin1.yaml").write_bytes("data:\n  path: /tmp/caf\u00e9.npz\n".encode("latin-1"))
    (files / "duplicate.yaml").write_text("seed: 1\nseed: 2\n")
    levels = ["a: &a [0,0,0,0,0,0,0,0,0]"] + [f"{b}: &{b} [{','.join(['*' + a] * 9)}]"
                                              for a, b in zip("abcdef", "bcdefg", strict=True)]
    (files / "bomb.yaml").write_text("\n".join(levels) + "\n")
    nested = ", ".join(f"&{b} [{','.join(['*' + a] * 9)}]" for a, b in zip("abcd", "bcde", strict=True))
    (files / "long_ids.yaml").write_text(f"membership:\n  target_ids: [[&a [0,0,0,0,0,0,0,0,0], {nested}, "
                                         f"[{','.join(['*e'] * 9)}]]]\n")
    _run_json(files / "list_run", [])
    _run_json(files / "edited_run", _edited_run_json(membership={"n_models": 10**9}))
    _run_json(files / "shadow_run", _edited_run_json(data={"name": "npz", "path": "/etc/shadow"}))
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



def _run_json(run: Path, content) -> None:
    run.mkdir(exist_ok=True)
    (run / "run.json").write_text(json.dumps(content))


def _edited_run_json(**sections) -> dict:
    """The run.json of a run of the default config, then `sections` edited into its config."""
    from farm.config import config_hash, from_dict, to_dict

    cfg = from_dict({})
    config = to_dict(cfg)
    for name, fields in sections.items():
        config[name].update(fields)
    return {"config": config, "config_hash": config_hash(cfg), "dataset": {}}
