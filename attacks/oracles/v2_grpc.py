"""The Open Inference Protocol over gRPC (KServe's `grpc_predict_v2.proto`, package `inference`, service
`GRPCInferenceService`; MLServer ships it as `dataplane.proto`, Triton as `grpc_service.proto`): the messages
a label-only client needs, and their conversion to and from the REST forms of attacks.oracles.protocol_v2.

The messages are built here from a table of their fields (names and numbers as in the .proto, nested messages
flattened into top-level ones of their own names: protobuf's wire format carries numbers, never message
names), in a private descriptor pool: no generated `_pb2` module, so no protoc version to match against the
installed protobuf runtime, and no clash with a `tritonclient` or `mlserver` imported into the same process.
`parameters` maps and `raw_input_contents` are left out: a server's parameters are skipped on parsing (unknown
fields), and inputs travel typed in `contents`. Answers are read from `contents` or, as Triton sends them,
`raw_output_contents` (little-endian bytes of the output's datatype).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from attacks.oracles.protocol_v2 import InputSpec, request_shape
from farm.errors import DataError

SERVICE = "/inference.GRPCInferenceService/"
_T = descriptor_pb2.FieldDescriptorProto
_STRING, _INT64, _BYTES, _MESSAGE = _T.TYPE_STRING, _T.TYPE_INT64, _T.TYPE_BYTES, _T.TYPE_MESSAGE
_CONTENTS = {  # InferTensorContents: field, protobuf type, the datatypes it carries
    "bool_contents": (1, _T.TYPE_BOOL, ("BOOL",)), "int_contents": (2, _T.TYPE_INT32, ("INT8", "INT16", "INT32")),
    "int64_contents": (3, _INT64, ("INT64",)), "uint_contents": (4, _T.TYPE_UINT32, ("UINT8", "UINT16", "UINT32")),
    "uint64_contents": (5, _T.TYPE_UINT64, ("UINT64",)), "fp32_contents": (6, _T.TYPE_FLOAT, ("FP32",)),
    "fp64_contents": (7, _T.TYPE_DOUBLE, ("FP64",)), "bytes_contents": (8, _BYTES, ("BYTES",)),
}
_RAW = {"INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "UINT8": "<u1", "UINT16": "<u2",
        "UINT32": "<u4", "UINT64": "<u8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "BOOL": "?"}
_TENSOR = [("name", 1, _STRING), ("datatype", 2, _STRING), ("shape", 3, _INT64, True)]
# message -> fields (name, number, type[, repeated][, message type]), as numbered in grpc_predict_v2.proto
_MESSAGES = {
    "InferTensorContents": [(name, number, kind, True) for name, (number, kind, _) in _CONTENTS.items()],
    "TensorMetadata": _TENSOR,  # ModelMetadataResponse.TensorMetadata
    "ModelMetadataRequest": [("name", 1, _STRING), ("version", 2, _STRING)],
    "ModelMetadataResponse": [("name", 1, _STRING), ("versions", 2, _STRING, True), ("platform", 3, _STRING),
                              ("inputs", 4, _MESSAGE, True, "TensorMetadata"),
                              ("outputs", 5, _MESSAGE, True, "TensorMetadata")],
    "InferTensor": [*_TENSOR, ("contents", 5, _MESSAGE, False, "InferTensorContents")],  # In/OutputTensor
    "ModelInferRequest": [("model_name", 1, _STRING), ("model_version", 2, _STRING), ("id", 3, _STRING),
                          ("inputs", 5, _MESSAGE, True, "InferTensor")],
    "ModelInferResponse": [("model_name", 1, _STRING), ("model_version", 2, _STRING), ("id", 3, _STRING),
                           ("outputs", 5, _MESSAGE, True, "InferTensor"), ("raw_output_contents", 6, _BYTES, True)],
}


def _message_classes() -> dict[str, type]:
    """The classes of `_MESSAGES`, in a descriptor pool of their own."""
    file = descriptor_pb2.FileDescriptorProto(name="shadowfarm/v2_grpc.proto", package="inference", syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for field_name, number, kind, *rest in fields:
            field = message.field.add(name=field_name, number=number, type=kind,
                                      label=_T.LABEL_REPEATED if rest and rest[0] else _T.LABEL_OPTIONAL)
            if len(rest) > 1:
                field.type_name = f".inference.{rest[1]}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{name}"))
            for name in _MESSAGES}


MESSAGES = _message_classes()


@dataclass(frozen=True)
class GrpcTarget:
    """A gRPC v2 target `grpc[s]://HOST:PORT/v2/models/NAME[/versions/VERSION]`."""

    address: str  # HOST:PORT
    model: str
    version: str  # "" for the server's choice
    tls: bool


def parse_target(url: str) -> GrpcTarget:
    """The parts of a gRPC v2 target URL; DataError (one line) when it names no host, port or model."""
    parts = urllib.parse.urlsplit(url)
    segments = [urllib.parse.unquote(s) for s in parts.path.strip("/").split("/")]
    version = segments[4] if len(segments) == 5 and segments[3] == "versions" else None
    if (parts.scheme not in ("grpc", "grpcs") or not parts.hostname or parts.port is None
            or segments[:2] != ["v2", "models"] or len(segments) not in (3, 5) or not segments[2]
            or (len(segments) == 5 and not version)):
        raise DataError(f"--target {url}: with --protocol v2-grpc expected "
                        "grpc://HOST:PORT/v2/models/NAME[/versions/V] (or grpc://HOST:PORT with --model-name NAME)")
    return GrpcTarget(parts.netloc, segments[2], version or "", parts.scheme == "grpcs")


def metadata_request(target: GrpcTarget):
    return MESSAGES["ModelMetadataRequest"](name=target.model, version=target.version)


def metadata_dict(response) -> dict:
    """A ModelMetadataResponse as REST's metadata JSON (what protocol_v2.input_spec and the journal read)."""
    def tensors(entries):
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in entries]

    return {"name": response.name, "versions": list(response.versions), "platform": response.platform,
            "inputs": tensors(response.inputs), "outputs": tensors(response.outputs)}


def infer_request(x: np.ndarray, spec: InputSpec, target: GrpcTarget):
    """float32[B, *shape] -> a ModelInferRequest with one input of `spec` (typed contents, shape [B, *spec.shape])."""
    data = np.asarray(x, dtype=np.float32).ravel()
    contents = {"fp64_contents": data.astype(np.float64)} if spec.datatype == "FP64" else {"fp32_contents": data}
    tensor = MESSAGES["InferTensor"](name=spec.name, datatype=spec.datatype, shape=request_shape(x, spec),
                                     contents=MESSAGES["InferTensorContents"](**contents))
    return MESSAGES["ModelInferRequest"](model_name=target.model, model_version=target.version, inputs=[tensor])


def response_outputs(response) -> list[dict]:
    """A ModelInferResponse's outputs as REST's [{name, datatype, shape, data}] (protocol_v2.decode_outputs);
    DataError when an output's data is neither in `contents` nor in raw bytes of its datatype."""
    raw = list(response.raw_output_contents)
    if raw and len(raw) != len(response.outputs):
        raise DataError(f"{len(raw)} raw_output_contents for {len(response.outputs)} outputs")
    outputs = []
    for i, tensor in enumerate(response.outputs):
        if raw:
            if tensor.datatype not in _RAW or len(raw[i]) % np.dtype(_RAW[tensor.datatype]).itemsize:
                raise DataError(f"output {tensor.name!r}: {len(raw[i])} raw bytes are not {tensor.datatype}")
            data = np.frombuffer(raw[i], dtype=_RAW[tensor.datatype])
        else:
            field = next((f for f, (_, _, types) in _CONTENTS.items() if tensor.datatype in types), None)
            data = np.asarray(getattr(tensor.contents, field)) if field and field != "bytes_contents" else []
        outputs.append({"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
                        "data": data})
    return outputs
