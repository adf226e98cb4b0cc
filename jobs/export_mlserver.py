"""Export a run's model for MLServer: `shadowfarm export-mlserver RUN --model-id K DIR`, then `mlserver start DIR`.

    python -m jobs.export_mlserver RUN DIR --model-id K [--name NAME] [--output labels|scores] [--port 8080]

Writes DIR/NAME/{model-settings.json, weights.npz, shadowfarm_runtime.py} (a numpy custom runtime,
attacks/oracles/mlserver_runtime.py: MLServer's environment needs mlserver and numpy only, no torch) and
DIR/settings.json (listen on --host, 127.0.0.1 by default, HTTP --port, gRPC --grpc-port, no metrics server,
inference in the server process). Several exports into one DIR serve several models; the last one's server
settings win. The model then speaks the Open Inference Protocol (v2): audit it with
`shadowfarm audit RUN --target http://127.0.0.1:PORT/v2/models/NAME --protocol v2`.
Models made of flatten/linear/ReLU/dropout layers (the registry's logistic and mlp) can be exported;
weights are float32 like torch's, dropout is dropped (the identity in eval mode).
"""

from __future__ import annotations

import argparse
import sys

from attacks.oracles.mlserver_export import OUTPUTS, export_mlserver
from jobs.common import job_main, job_parser

HELP = "write a run's model as an MLServer model folder (numpy runtime, Open Inference Protocol)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument("folder", metavar="DIR", help="MLServer folder to write (then: mlserver start DIR)")
    parser.add_argument("--model-id", type=int, required=True, help="export model K of the run")
    parser.add_argument("--name", help="the model's name in the v2 API (default: model-K)")
    parser.add_argument("--output", choices=tuple(OUTPUTS), default="labels",
                        help="answer labels (INT64, default) or scores (FP32 logits; an audit keeps the arg-max)")
    parser.add_argument("--host", default="127.0.0.1", help="address MLServer listens on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="MLServer's HTTP port (default 8080)")
    parser.add_argument("--grpc-port", type=int, default=8081, help="MLServer's gRPC port (default 8081)")


def run(args: argparse.Namespace) -> int:
    url = export_mlserver(args.run, args.model_id, args.folder, name=args.name, output=args.output,
                          host=args.host, port=args.port, grpc_port=args.grpc_port)
    print(f"wrote {args.folder}: start it with `mlserver start {args.folder}` (mlserver==1.7.1 and numpy in "
          f"its own environment), audit it with `shadowfarm audit {args.run} --target {url} --protocol v2`")
    return 0


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.export_mlserver", __doc__, add_arguments), run=run)


if __name__ == "__main__":
    sys.exit(main())
