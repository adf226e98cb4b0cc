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

Engines (--engine), answering the same API with the same limits and errors:
- stdlib: one process, one thread per connection, no Ray; starts at once. The default on one machine.
- ray: Ray Serve on the Ray cluster (RAY_ADDRESS, else a local Ray): --replicas copies of the model, or
  autoscaling up to --max-replicas; concurrent requests batched into one model call (--batch-wait-ms); /stats
  counts the answers of all replicas. The default (auto) when RAY_ADDRESS names a cluster or more than one
  replica is asked for. A run directory must then be storage every node sees (s3://, gs://, NFS).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from functools import partial

from farm.errors import ConfigError, RunError
from jobs.common import job_main, job_parser

HELP = "serve one model of a run (or a TorchScript file) as a label-only HTTP API"
RAY_ONLY = ("replicas", "max_replicas", "replica_cpus", "batch_wait_ms")


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
    ray = parser.add_argument_group("engine")
    ray.add_argument("--engine", choices=("auto", "stdlib", "ray"), default="auto",
                     help="stdlib (one process) or ray (Ray Serve); auto: ray when RAY_ADDRESS is set or "
                          "--replicas/--max-replicas ask for more than one, else stdlib")
    ray.add_argument("--replicas", type=int, help="ray: replicas of the model (default 1)")
    ray.add_argument("--max-replicas", type=int, help="ray: autoscale between --replicas and this many")
    ray.add_argument("--replica-cpus", type=float, help="ray: CPUs each replica asks Ray for (default 1)")
    ray.add_argument("--batch-wait-ms", type=float,
                     help="ray: how long a replica waits to merge concurrent requests into one model call (default 5)")


def read_token(variable: str | None) -> str | None:
    """The value of environment variable `variable` (None when no variable is named); ConfigError when unset."""
    if variable is None:
        return None
    token = os.environ.get(variable)
    if not token:
        raise ConfigError(f"--token-env {variable}: the environment variable is not set or empty")
    return token


def pick_engine(args: argparse.Namespace) -> str:
    """The engine to run: --engine, or for auto ray on a cluster (RAY_ADDRESS) or with several replicas."""
    given = [f"--{name.replace('_', '-')}" for name in RAY_ONLY if getattr(args, name) is not None]
    if args.engine == "stdlib" and given:
        raise ConfigError(f"{', '.join(given)}: Ray Serve options; use --engine ray (or drop them)")
    if args.engine != "auto":
        return args.engine
    several = (args.replicas or 1) > 1 or (args.max_replicas or 1) > 1
    return "ray" if os.environ.get("RAY_ADDRESS") or several else "stdlib"


def _absolute(path: str) -> str:
    """A local path made absolute (Ray Serve replicas may run in another working directory); URIs as given."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def load_oracle(args: argparse.Namespace):
    """(oracle, make_oracle): the model to serve, loaded here (errors are one line before anything starts), and
    how a Ray Serve replica loads it again."""
    from attacks.oracles.model import ModelOracle, TorchScriptOracle
    from farm.storage import RunDir

    if args.max_batch < 1:
        raise ConfigError(f"--max-batch: expected at least 1, got {args.max_batch}")
    if args.model_id is not None:
        if not args.run:
            raise ConfigError("serve --model-id: the run directory is required")
        make = partial(ModelOracle.from_run, _absolute(args.run), args.model_id)
    else:
        shape = None
        if args.run:
            if not RunDir(args.run).is_file("run.json"):
                raise RunError(f"{RunDir(args.run).path('run.json')}: not found; is {args.run!r} a shadowfarm run?")
            shape = tuple(RunDir(args.run).read_json("run.json")["dataset"]["shape"])
        make = partial(TorchScriptOracle, _absolute(args.torchscript), input_shape=shape)
    return make(), make


def make_server(args: argparse.Namespace):
    """The stdlib engine's LabelServer (not started)."""
    from attacks.oracles.server import LabelServer

    oracle, _ = load_oracle(args)
    return LabelServer(oracle, host=args.host, port=args.port, token=read_token(args.token_env),
                       max_batch=args.max_batch, model_name=args.model_name)


def make_app(args: argparse.Namespace):
    """The Ray Serve engine's application, deployed and ready (attacks.oracles.serve_app.ServeApp)."""
    for name, low in (("replicas", 1), ("max_replicas", 1)):
        if getattr(args, name) is not None and getattr(args, name) < low:
            raise ConfigError(f"--{name.replace('_', '-')}: expected at least {low}, got {getattr(args, name)}")
    if (args.replica_cpus or 0) < 0 or (args.batch_wait_ms or 0) < 0:
        raise ConfigError("--replica-cpus and --batch-wait-ms: expected numbers >= 0")
    oracle, make = load_oracle(args)
    token = read_token(args.token_env)
    from attacks.oracles.serve_app import deploy
    from farm.cluster import ensure_ray

    ensure_ray()
    return deploy(make, getattr(oracle, "input_shape", None), host=args.host, port=args.port, token=token,
                  max_batch=args.max_batch, model_name=args.model_name, replicas=args.replicas or 1,
                  max_replicas=args.max_replicas, replica_cpus=1.0 if args.replica_cpus is None else args.replica_cpus,
                  batch_wait_s=(5.0 if args.batch_wait_ms is None else args.batch_wait_ms) / 1000)


def run(args: argparse.Namespace) -> int:
    engine = pick_engine(args)
    try:
        server = make_app(args) if engine == "ray" else make_server(args)
    except OSError as exc:  # the port is taken, the address is not ours
        raise ConfigError(f"serve: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from None
    if threading.current_thread() is threading.main_thread():
        # `kill PID` (how a server started with `&` is stopped) shuts down as Ctrl-C does: the engine stops,
        # the count is printed, exit code 0; without it Ray's own SIGTERM handler dumped a stack and aborted.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    what = f"model {args.model_id} of {args.run}" if args.model_id is not None else args.torchscript
    print(f"serving {what} at {server.url} and {server.v2_url} (v2) with the {engine} engine "
          "(labels only; GET /stats; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever() if engine == "stdlib" else threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        answered = server.stats()["inputs_answered"]
        server.stop()
    print(f"stopped after answering {answered} inputs", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.serve", __doc__, add_arguments), run=run)


if __name__ == "__main__":
    sys.exit(main())
