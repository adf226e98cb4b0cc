"""An in-process Open Inference Protocol gRPC server for tests (loopback, ephemeral port): ModelMetadata and
ModelInfer of one model named `name`, answered by a `LabelOracle` (labels INT64 [B]) or, with `scores`, a
function x -> float32[B, C]; answers in typed `contents`, or in `raw_output_contents` as Triton sends them.
`failures` first calls of ModelInfer fail with UNAVAILABLE; `token` makes calls without it UNAUTHENTICATED.
Records the inputs of every ModelInfer (`batches`) and the metadata it received (`seen`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from attacks.oracles.v2_grpc import MESSAGES


class GrpcV2Server:
    def __init__(self, oracle, *, name: str = "m", input_shape: tuple[int, ...], scores=None, raw: bool = False,
                 failures: int = 0, token: str | None = None, inputs: list | None = None):
        self.oracle, self.name, self.input_shape, self.scores, self.raw = oracle, name, input_shape, scores, raw
        self.failures, self.token, self.batches, self.seen = failures, token, [], []
        self.inputs = [{"name": "input", "datatype": "FP32", "shape": [-1, *input_shape]}] if inputs is None else inputs
        self._server = grpc.server(ThreadPoolExecutor(max_workers=4))
        handlers = {name: grpc.unary_unary_rpc_method_handler(
            getattr(self, f"_{name}"), request_deserializer=MESSAGES[f"{name}Request"].FromString,
            response_serializer=MESSAGES[f"{name}Response"].SerializeToString)
            for name in ("ModelMetadata", "ModelInfer")}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}/v2/models/{self.name}"

    def start(self) -> GrpcV2Server:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(None)

    def _check(self, name: str, context) -> None:
        self.seen.append(dict(context.invocation_metadata()))
        if self.token and self.seen[-1].get("authorization") != f"Bearer {self.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        if name != self.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Model {name} not found")

    def _ModelMetadata(self, request, context):
        self._check(request.name, context)
        tensors = MESSAGES["ModelMetadataResponse"]().inputs
        for spec in self.inputs:
            tensors.add(**spec)
        return MESSAGES["ModelMetadataResponse"](name=self.name, versions=["1"], platform="test", inputs=tensors)

    def _ModelInfer(self, request, context):
        self._check(request.model_name, context)
        if self.failures > 0:
            self.failures -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        tensor = request.inputs[0]
        x = np.asarray(tensor.contents.fp32_contents, dtype=np.float32).reshape(list(tensor.shape))
        self.batches.append(x)
        if self.scores is not None:
            out, datatype = np.asarray(self.scores(x), dtype=np.float32), "FP32"
        else:
            out, datatype = self.oracle.predict_labels(x.reshape(len(x), *self.input_shape)).astype(np.int64), "INT64"
        output = MESSAGES["InferTensor"](name="out", datatype=datatype, shape=list(out.shape))
        if self.raw:
            return MESSAGES["ModelInferResponse"](model_name=self.name, outputs=[output],
                                                  raw_output_contents=[out.astype(out.dtype.newbyteorder("<")).tobytes()])
        field = "fp32_contents" if datatype == "FP32" else "int64_contents"
        getattr(output.contents, field).extend(out.ravel().tolist())
        return MESSAGES["ModelInferResponse"](model_name=self.name, outputs=[output])
