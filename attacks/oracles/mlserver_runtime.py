"""An MLServer custom runtime for a shadowfarm model exported by `shadowfarm export-mlserver` (mlserver_export.py).

Copied next to the model's weights as `shadowfarm_runtime.py`; it runs inside MLServer's own environment
(mlserver and numpy, no torch, no shadowfarm) and is never imported by shadowfarm itself.

weights.npz (loaded without pickle) holds `layers`, the layer kinds in order (flatten, linear, relu), and
`weight<i>`/`bias<i>` for each linear layer i: the torch model's forward pass in eval mode (dropout is the
identity there), in float32 like torch's. The model-settings.json parameter `extra.output` picks the answer:
`labels` (INT64 arg-max, shape [B]) or `scores` (FP32 logits, shape [B, C]).
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


def forward(weights, x: np.ndarray) -> np.ndarray:
    """Logits float32[B, C] of inputs float32[B, ...] through the layers of `weights` (an npz mapping)."""
    out = np.asarray(x, dtype=np.float32)
    for i, kind in enumerate(weights["layers"].tolist()):
        if kind == "flatten":
            out = out.reshape(len(out), -1)
        elif kind == "linear":
            out = out @ weights[f"weight{i}"].T + weights[f"bias{i}"]
        elif kind == "relu":
            out = np.maximum(out, np.float32(0))
        else:
            raise ValueError(f"weights.npz: unknown layer kind {kind!r} (expected flatten, linear or relu)")
    return out


class ShadowfarmModel(MLModel):
    """One exported model: v2 inputs FP32 [B, *shape] -> labels or scores (extra.output)."""

    async def load(self) -> bool:
        with np.load(await get_model_uri(self._settings), allow_pickle=False) as archive:
            self._weights = {key: archive[key] for key in archive.files}
        extra = self._settings.parameters.extra or {}
        self._output = extra.get("output", "labels")
        if self._output not in ("labels", "scores"):
            raise ValueError(f"model-settings.json: parameters.extra.output is {self._output!r}; "
                             "expected labels or scores")
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Bad input (not one FP32/FP64 tensor of the declared shape) is a 400 naming what was expected."""
        shape = list(self._settings.inputs[0].shape[1:])
        try:
            (tensor,) = payload.inputs
            x = NumpyCodec.decode_input(tensor)
            if tensor.datatype not in ("FP32", "FP64") or list(x.shape[1:]) != shape:
                raise ValueError
        except ValueError:
            raise InferenceError(f"expected one input, FP32 of shape [B, {', '.join(map(str, shape))}]") from None
        logits = forward(self._weights, x)
        if self._output == "labels":
            output = NumpyCodec.encode_output("label", logits.argmax(axis=1).astype(np.int64))
        else:
            output = NumpyCodec.encode_output("scores", logits.astype(np.float32))
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[output])
