"""A run's model as an MLServer model folder: `export_mlserver(run, model_id, folder)` (the library of
`shadowfarm export-mlserver RUN --model-id K DIR`, jobs/export_mlserver.py), then `mlserver start DIR`.

Writes DIR/NAME/{model-settings.json, weights.npz, shadowfarm_runtime.py} (a numpy custom runtime: a copy of
mlserver_runtime.py, beside this file; MLServer's environment needs mlserver and numpy only, no torch) and
DIR/settings.json (listen on `host`, 127.0.0.1 by default, HTTP `port`, gRPC `grpc_port`, no metrics server,
inference in the server process). Several exports into one DIR serve several models; the last one's server settings win.
The model then speaks the Open Inference Protocol (v2): audit it with
`shadowfarm audit RUN --target http://127.0.0.1:PORT/v2/models/NAME --protocol v2`.
Models made of flatten/linear/ReLU/dropout layers (the registry's logistic and mlp) can be exported;
weights are float32 like torch's, dropout is dropped (the identity in eval mode).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from farm.errors import ConfigError
from farm.storage import RunDir

RUNTIME = "shadowfarm_runtime"  # the module name of the runtime's copy in an exported folder
RUNTIME_SOURCE = Path(__file__).with_name("mlserver_runtime.py")
OUTPUTS = {"labels": ("label", "INT64", [-1]), "scores": ("scores", "FP32", [-1, -1])}


def layer_arrays(model) -> dict[str, np.ndarray]:
    """The npz arrays of a torch nn.Sequential of Flatten/Linear/ReLU/Dropout (see mlserver_runtime.py);
    ConfigError naming the first other layer."""
    from torch import nn

    if not isinstance(model, nn.Sequential):
        raise ConfigError(f"export-mlserver: the model is a {type(model).__name__}; only logistic and mlp models "
                          "(an nn.Sequential of Flatten, Linear, ReLU and Dropout layers) can be exported")
    kinds, arrays = [], {}
    for layer in model:
        if isinstance(layer, nn.Dropout):
            continue  # the identity in eval mode
        kind = {nn.Flatten: "flatten", nn.Linear: "linear", nn.ReLU: "relu"}.get(type(layer))
        if kind is None:
            raise ConfigError(f"export-mlserver: layer {type(layer).__name__} cannot be exported; only models of "
                              "Flatten, Linear, ReLU and Dropout layers (model.name logistic or mlp)")
        if kind == "linear":
            arrays[f"weight{len(kinds)}"] = layer.weight.detach().cpu().numpy().astype(np.float32)
            arrays[f"bias{len(kinds)}"] = layer.bias.detach().cpu().numpy().astype(np.float32)
        kinds.append(kind)
    return {"layers": np.array(kinds), **arrays}


def export_mlserver(run: str, model_id: int, folder: str, *, name: str | None = None, output: str = "labels",
                    host: str = "127.0.0.1", port: int = 8080, grpc_port: int = 8081) -> str:
    """Write model `model_id` of `run` as MLServer model `name` (default model-K) under `folder`; its v2 URL."""
    from attacks.oracles.model import _load_run_model

    if output not in OUTPUTS:
        raise ConfigError(f"--output: expected labels or scores, got {output!r}")
    name = name or f"model-{model_id}"
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"--name: expected a model name without '/', got {name!r}")
    model, info = _load_run_model(run, model_id)
    buffer = io.BytesIO()
    np.savez(buffer, **layer_arrays(model))
    out_name, out_type, out_shape = OUTPUTS[output]
    settings = {"name": name, "implementation": f"{RUNTIME}.ShadowfarmModel", "platform": "shadowfarm-numpy",
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, *info.shape]}],
                "outputs": [{"name": out_name, "datatype": out_type, "shape": out_shape}],
                "parameters": {"uri": "./weights.npz", "version": "1",
                               "extra": {"output": output, "run": str(run), "model_id": model_id}}}
    target = RunDir(folder)
    target.write_bytes(f"{name}/weights.npz", buffer.getvalue())
    target.write_text(f"{name}/{RUNTIME}.py", RUNTIME_SOURCE.read_text())
    target.write_json(f"{name}/model-settings.json", settings)
    target.write_json("settings.json", {"host": host, "http_port": port, "grpc_port": grpc_port,
                                        "metrics_endpoint": None, "parallel_workers": 0})
    return f"http://{host}:{port}/v2/models/{name}"
