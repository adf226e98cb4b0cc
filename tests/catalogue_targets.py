"""The bad-input catalogue's cases of audit targets (ONNX files, gRPC, exported queries and their answers), part
of tests/catalogue_cases.py's CASES."""

from collections.abc import Callable

from catalogue_cases import Case, _audit, _on_run


def _grpc(target: str, *args: str) -> Callable:
    return _on_run("audit", "--target", target, "--protocol", "v2-grpc", *args, "--quiet")


TARGET_CASES = [
    Case("audit-onnx-not-onnx", "`--target model.onnx` naming a text file",
         _audit("--target", "{files}/text.onnx"),
         "text.onnx: not an ONNX model ([ONNXRuntimeError] : 7 : INVALID_PROTOBUF", "run"),
    Case("audit-onnx-several-inputs", "an ONNX model with two inputs", _audit("--target", "{files}/two_inputs.onnx"),
         "two_inputs.onnx: the ONNX model has 2 inputs (a, b); expected exactly one, the example", "run"),
    Case("audit-onnx-wrong-shape", "an ONNX model whose input is [N, 5] for a run of 8x8 images",
         _audit("--target", "{files}/five_features.onnx"),
         "five_features.onnx: the ONNX model's input 'x' tensor(float) ['?', 5] does not fit: the run's inputs are "
         "float32 [B, 1, 8, 8]", "run"),
    Case("audit-onnx-wrong-dtype", "an ONNX model whose input is int64", _audit("--target", "{files}/int_input.onnx"),
         "int_input.onnx: the ONNX model's input 'x' tensor(int64) ['?', 64] is not float; the run's inputs are "
         "float32 [B, 1, 8, 8]", "run"),
    Case("audit-no-target", "`shadowfarm audit RUN` with neither `--target` nor `--export-queries`/`--answers`",
         _audit(), "--target: the model to audit (or --export-queries DIR", "run"),
    Case("audit-export-adaptive-attack", "`--export-queries DIR --attacks boundary`",
         _audit("--export-queries", "{out}", "--attacks", "boundary"),
         "--attacks boundary: cannot be audited from exported queries: HopSkipJump chooses each probe", "run"),
    Case("audit-export-with-target", "`--export-queries DIR --target model:0`",
         _audit("--export-queries", "{out}", "--target", "model:0"),
         "--export-queries: writes the queries of a target you cannot call; drop --target/--answers", "run"),
    Case("audit-answers-corrupted", "`--answers FILE` naming a file that is not Parquet",
         _audit("--answers", "{files}/corrupted/answers.parquet"),
         "corrupted/answers.parquet: not a Parquet file of answers", "run"),
    Case("audit-answers-foreign-manifest", "answers beside the manifest of another run's export",
         _audit("--answers", "{files}/foreign/answers.parquet"),
         "foreign/manifest.json: exported from another run (run hash 0123456789abcdef;", "run"),
    Case("audit-grpc-url-without-model", "`--protocol v2-grpc --target grpc://HOST:PORT` without `--model-name`",
         _grpc("grpc://127.0.0.1:1"), "with --protocol v2-grpc expected grpc://HOST:PORT/v2/models/NAME[/versions/V]",
         "run"),
    Case("audit-grpc-target-without-protocol", "`--target grpc://...` without `--protocol v2-grpc`",
         _on_run("audit", "--target", "grpc://127.0.0.1:1/v2/models/m", "--quiet"),
         "a grpc:// target needs --protocol v2-grpc", "run"),
    Case("audit-grpc-protocol-http-target", "`--protocol v2-grpc` with an http:// target",
         _grpc("http://127.0.0.1:1/v2/models/m"), "--protocol v2-grpc needs --target grpc://HOST:PORT", "run"),
    Case("audit-grpc-unreachable", "`--protocol v2-grpc` with nothing listening at the target's port",
         _grpc("grpc://127.0.0.1:1/v2/models/m", "--retries", "0"), "gRPC ModelMetadata UNAVAILABLE", "run"),
]
