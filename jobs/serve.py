"""Serve one model as a label-only HTTP API: `shadowfarm serve RUN --model-id K` (or `--torchscript FILE`).

POST /predict answers a batch with labels only: JSON `{"inputs": [[...], ...]}` -> `{"labels": [...]}`, or
the binary format (Content-Type application/x-shadowfarm-batch: b"SFB1", uint32 ndim, uint32 dims, float32
values, little-endian -> int32 labels); GET /stats counts the inputs answered. Listens on 127.0.0.1 unless
--host says otherwise; --port 0 picks a free port (the URL is printed). With --token-env VARIABLE, requests
need `Authorization: Bearer <the variable's value>` (read from the environment only, never written).
The Open Inference Protocol (v2: KServe, Triton, MLServer) is answered too, for the model named by --model-name
(default "model"): GET /v2/health/ready, GET /v2/models/NAME, POST /v2/models/NAME/infer.
There is no output-side defense option: the API releases labels only, and every output-side defense keeps the
arg-max, so none would change an answer.
"""

from __future__ import annotations

import argparse
import os
import sys

from farm.errors import ConfigError, RunError
from jobs.common import job_main, job_parser

HELP = "serve one model of a run (or a TorchScript file) as a label-only HTTP API"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", help="run directory (needed with --model-id; with --torchscript it "
                                               "gives the input shape that requests must have)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model-id", type=int, help="serve model K of the run")
    which.add_argument("--torchscript", metavar="FILE", help="serve a TorchScript file")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: pick a free one and print the URL)")
    parser.add_argument("--token-env", metavar="VARIABLE",
                        help="require `Authorization: Bearer <token>`, the token read from this environment variable")
    parser.add_argument("--model-name", default="model",
                        help="the model's name in the v2 API, /v2/models/NAME (default: model)")
    parser.add_argument("--max-batch", type=int, default=65536, help="inputs per request at most (default 65536)")


def read_token(variable: str | None) -> str | None:
    """The value of environment variable `variable` (None when no variable is named); ConfigError when unset."""
    if variable is None:
        return None
    token = os.environ.get(variable)
    if not token:
        raise ConfigError(f"--token-env {variable}: the environment variable is not set or empty")
    return token


def make_server(args: argparse.Namespace):
    from attacks.oracles.model import ModelOracle, TorchScriptOracle
    from attacks.oracles.server import LabelServer
    from farm.storage import RunDir

    if args.model_id is not None:
        if not args.run:
            raise ConfigError("serve --model-id: the run directory is required")
        oracle = ModelOracle.from_run(args.run, args.model_id)
    else:
        shape = None
        if args.run:
            if not RunDir(args.run).is_file("run.json"):
                raise RunError(f"{RunDir(args.run).path('run.json')}: not found; is {args.run!r} a shadowfarm run?")
            shape = tuple(RunDir(args.run).read_json("run.json")["dataset"]["shape"])
        oracle = TorchScriptOracle(args.torchscript, input_shape=shape)
    if args.max_batch < 1:
        raise ConfigError(f"--max-batch: expected at least 1, got {args.max_batch}")
    return LabelServer(oracle, host=args.host, port=args.port, token=read_token(args.token_env),
                       max_batch=args.max_batch, model_name=args.model_name)


def serve(args: argparse.Namespace) -> int:
    try:
        server = make_server(args)
    except OSError as exc:  # the port is taken, the address is not ours
        raise ConfigError(f"serve: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from None
    what = f"model {args.model_id} of {args.run}" if args.model_id is not None else args.torchscript
    print(f"serving {what} at {server.url} and {server.v2_url} (v2) (labels only; GET /stats; Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print(f"stopped after answering {server.stats()['inputs_answered']} inputs", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.serve", __doc__, add_arguments), run=serve)


if __name__ == "__main__":
    sys.exit(main())
