"""Audit targets by name (`shadowfarm audit --target`): each kind opened as a label oracle (DESIGN §5).

- `http(s)://...`: a label API, ours or the Open Inference Protocol (`attacks.oracles.http_client`), journaled;
- `grpc(s)://...`: the Open Inference Protocol's gRPC API (`attacks.oracles.grpc_client`), journaled;
- `model:K`: model K of the run (demos, tests);
- `*.onnx`: an ONNX file (`attacks.oracles.onnx_model`), journaled as its model (identity: the file's SHA-256);
- any other path or URI: a TorchScript file (`attacks.oracles.model`).

Journals live under `<run>/audit/<target key>/journal/<identity>-<generation>/` (`attacks.oracles.journal`): a
target's key is a hash of its URL, `model:K` or absolute path; the identity is what the target states about its
model (v2 metadata, an ONNX file's hash), so a changed model gets a journal of its own.
"""

from __future__ import annotations

import hashlib
import os

from attacks.artifacts import audit_journal
from attacks.oracles.journal import open_journal
from attacks.oracles.journaled import JournaledOracle
from attacks.oracles.model import ModelOracle, TorchScriptOracle
from attacks.oracles.remote import REMOTE, HttpSettings, remote_oracle
from farm.errors import ConfigError
from farm.runfile import run_config
from farm.storage import RunDir


def target_key(target: str) -> str:
    """The folder name of a target under <run>/audit/: a hash of its URL, path or model:K."""
    return hashlib.sha256(target.encode()).hexdigest()[:12]


def journal_dir(target: str) -> str:
    return audit_journal(target_key(target))


def is_onnx(target: str) -> bool:
    return not target.startswith((*REMOTE, "model:")) and target.lower().endswith(".onnx")


def run_inputs(run: RunDir, run_uri: str) -> tuple[tuple[int, ...], int]:
    """(example shape, number of classes) of a run, from its run.json."""
    dataset = run_config(run)[0]["dataset"]
    return tuple(int(d) for d in dataset["shape"]), int(dataset["num_classes"])


def open_target(run_uri: str, target: str, *, budget: int | None = None, http: HttpSettings | None = None,
                token: str | None = None, new_journal: bool = False):
    """(oracle, name) for `target` (see the module docstring): a URL, model:K, an ONNX or a TorchScript file (a
    file's name: its absolute path). The run's dataset gives the input shape. A journaled oracle's `notes` say
    what the user should know (a new journal, metadata without inputs); new_journal starts a new journal."""
    run = RunDir(run_uri)
    shape, num_classes = run_inputs(run, run_uri)
    if target.startswith(REMOTE):
        oracle = remote_oracle(target, http or HttpSettings(), input_shape=shape, num_classes=num_classes,
                               budget=budget, token=token)
        journal, notes = open_journal(run, journal_dir(target), oracle.identity(), new=new_journal)
        oracle.use_journal(journal)
        oracle.notes.extend(notes)
        return oracle, target
    if target.startswith("model:"):
        if not target[6:].isdigit():
            raise ConfigError(f"--target {target!r}: expected model:K with K a model id of the run")
        return ModelOracle.from_run(run, int(target[6:]), budget=budget), target
    name = target if "://" in target else os.path.abspath(target)
    if is_onnx(target):
        from attacks.oracles.onnx_model import OnnxOracle  # onnxruntime: an optional dependency

        model = OnnxOracle(name, budget=budget, input_shape=shape, num_classes=num_classes)
        journal, notes = open_journal(run, journal_dir(name), model.identity(), new=new_journal)
        oracle = JournaledOracle(model, journal, source=name)
        oracle.notes.extend(notes)
        return oracle, name
    return TorchScriptOracle(name, budget=budget, input_shape=shape), name
