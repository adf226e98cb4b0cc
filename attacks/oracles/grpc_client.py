"""A model served over the Open Inference Protocol's gRPC API (Triton's and KServe's clients' default; MLServer
serves it beside REST) as a `LabelOracle`: `shadowfarm audit RUN --target grpc://HOST:PORT/v2/models/NAME
--protocol v2-grpc`.

`GrpcOracle` is an `HttpOracle` (attacks.oracles.http_client) whose transport is gRPC: the metadata check
(input name, datatype and shape against the run's; a model declaring no inputs gets the run's shape as FP32),
batching, concurrency, rate, retries, budget, journal and its re-check are the very same code; only the
connection (`_connect`), one infer exchange (`_exchange`) and the metadata call (`_metadata`) differ. The
messages are attacks.oracles.v2_grpc's. `grpcs://` uses TLS with the system's roots; the bearer token (if any)
travels as `authorization` call metadata.

Failures: UNAVAILABLE (refused, unreachable), DEADLINE_EXCEEDED (no answer within `timeout`),
RESOURCE_EXHAUSTED, ABORTED, INTERNAL and UNKNOWN are retried as REST's 5xx and connection errors are; any other
status (NOT_FOUND: no such model, INVALID_ARGUMENT: a request the model refuses, UNAUTHENTICATED, ...) is a
`TargetError` at once, one line with the status and the server's message.
"""

from __future__ import annotations

from functools import partial

import grpc
import numpy as np

from attacks.oracles import protocol_v2, v2_grpc
from attacks.oracles.http_client import HttpOracle
from attacks.oracles.http_settings import Retryable, TargetError
from farm.errors import ConfigError, DataError

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
_MAX_MESSAGE = 256 * 2**20  # answers of large batches exceed gRPC's default 4 MiB


class GrpcOracle(HttpOracle):
    """A label-only v2 gRPC target `grpc[s]://HOST:PORT/v2/models/NAME[/versions/V]` (see the module docstring)."""

    SCHEMES = ("grpc", "grpcs")

    def _connect(self, url: str) -> None:
        try:
            self._target = v2_grpc.parse_target(url)
        except DataError as exc:
            raise ConfigError(str(exc)) from None
        options = [("grpc.max_receive_message_length", _MAX_MESSAGE), ("grpc.max_send_message_length", _MAX_MESSAGE)]
        if self._target.tls:
            channel = grpc.secure_channel(self._target.address, grpc.ssl_channel_credentials(), options=options)
        else:
            channel = grpc.insecure_channel(self._target.address, options=options)
        self._channel, self._model = channel, self._target.model  # the channel lives as long as the oracle
        self._calls = {name: channel.unary_unary(v2_grpc.SERVICE + name,
                                                 request_serializer=v2_grpc.MESSAGES[f"{name}Request"].SerializeToString,
                                                 response_deserializer=v2_grpc.MESSAGES[f"{name}Response"].FromString)
                       for name in ("ModelMetadata", "ModelInfer")}

    def _exchange(self, x: np.ndarray):
        request = v2_grpc.infer_request(x, self._v2_input(), self._target)
        return partial(self._call, "ModelInfer", request), self._decode

    def _decode(self, response, n: int) -> np.ndarray:
        return protocol_v2.decode_outputs(v2_grpc.response_outputs(response), n, self.settings.output_name)

    def _metadata(self) -> dict:
        return v2_grpc.metadata_dict(self._send(partial(self._call, "ModelMetadata",
                                                        v2_grpc.metadata_request(self._target)), 0))

    def _call(self, name: str, request):
        """One unary call; Retryable or TargetError (one line) on failure."""
        metadata = (("authorization", f"Bearer {self._token}"),) if self._token else None
        try:
            return self._calls[name](request, timeout=self.settings.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
            details = exc.details() if callable(getattr(exc, "details", None)) else ""
            message = f"gRPC {name} {code.name}: {' '.join(str(details or '').split())[:200]}"
            if code in RETRYABLE:
                raise Retryable(message) from None
            raise TargetError(f"{self.url}: {message}") from None
