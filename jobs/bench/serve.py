"""Benchmark: requests/s of `shadowfarm serve`'s two engines, stdlib and Ray Serve, same model and load.

    python -m jobs.bench.serve [--clients 8] [--requests 50] [--rows 16] [--features 64] [--replicas 2]
        [--replica-cpus 1] [--batch-wait-ms 5] [--repeats 3] [--smoke-test]

One MLP (features -> 256 -> 256 -> 10) in this process; both engines serve it on loopback. `--clients` threads
each send `--requests` binary POST /predict requests of `--rows` distinct rows (one connection per request, as
HttpOracle does) and check every answer against the in-process labels. Each engine runs `--repeats` times; the
median wall time gives requests/s and rows/s. The Ray engine runs in a local Ray (or RAY_ADDRESS) with
`--replicas` replicas and batching; its start-up time is printed apart. Prints setup, machine, load average,
medians and the ray/stdlib ratio, all measured in the same process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from attacks.oracles import protocol
from attacks.oracles.model import ModelOracle
from attacks.oracles.server import LabelServer
from jobs.bench.farm import load, machine
from jobs.common import job_main, job_parser

SMOKE = dict(clients=2, requests=5, repeats=1, replicas=1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, default in (("clients", 8), ("requests", 50), ("rows", 16), ("features", 64), ("replicas", 2),
                          ("repeats", 3)):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default, help=f"default {default}")
    parser.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs per Ray Serve replica (default 1)")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="Ray Serve batch wait (default 5)")
    parser.add_argument("--smoke-test", action="store_true", help="a few requests, one repeat, one replica")


def _model(features: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(features, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                               torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()


def _load(url: str, batches: list[np.ndarray], expected: list[np.ndarray], clients: int) -> float:
    """Seconds to send every batch (from `clients` threads) and check each answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def one(i: int) -> None:
        request = urllib.request.Request(url, data=protocol.encode_batch(batches[i]),
                                         headers={"Content-Type": protocol.BATCH})
        with opener.open(request, timeout=120) as response:
            labels = protocol.decode_labels(response.read(), len(batches[i]))
        if not np.array_equal(labels, expected[i]):
            raise AssertionError(f"request {i}: wrong labels")

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(len(batches))))
    return time.perf_counter() - start


def bench(args: argparse.Namespace) -> int:
    if args.smoke_test:
        vars(args).update(SMOKE)
    model = _model(args.features)
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(args.rows, args.features)).astype(np.float32)
               for _ in range(args.clients * args.requests)]
    with torch.no_grad():
        expected = [model(torch.from_numpy(x)).argmax(1).numpy() for x in batches]
    n = len(batches)
    print(f"setup: {args.clients} clients x {args.requests} requests of {args.rows} rows x {args.features} features "
          f"(binary, loopback), MLP {args.features}-256-256-10, {args.repeats} repeats; Ray Serve: {args.replicas} "
          f"replicas of {args.replica_cpus:g} CPU, batch wait {args.batch_wait_ms:g} ms")
    print(f"machine: {machine()}; {load()}")
    seconds = {}
    server = LabelServer(ModelOracle(model, input_shape=(args.features,))).start()
    try:
        seconds["stdlib"] = [_load(server.url, batches, expected, args.clients) for _ in range(args.repeats)]
    finally:
        server.stop()
    from ray import serve

    from attacks.oracles.serve_app import deploy
    from farm.cluster import ensure_ray

    start = time.perf_counter()
    ensure_ray()
    app = deploy(lambda: ModelOracle(model, input_shape=(args.features,)), (args.features,), replicas=args.replicas,
                 replica_cpus=args.replica_cpus, batch_wait_s=args.batch_wait_ms / 1000)
    print(f"ray serve: started in {time.perf_counter() - start:.1f} s (Ray, Serve, {args.replicas} replicas)")
    try:
        seconds["ray"] = [_load(app.url, batches, expected, args.clients) for _ in range(args.repeats)]
        stats = app.stats()
    finally:
        app.stop()
        serve.shutdown()
    assert stats["inputs_answered"] == n * args.rows * args.repeats, stats
    for engine, times in seconds.items():
        median = statistics.median(times)
        print(f"{engine:>6}: median {median:.2f} s ({', '.join(f'{t:.2f}' for t in times)}); "
              f"{n / median:.0f} requests/s, {n * args.rows / median:.0f} rows/s; all answers correct")
    ratio = statistics.median(seconds["stdlib"]) / statistics.median(seconds["ray"])
    print(f"ray / stdlib requests/s: {ratio:.2f}x; {load()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.bench.serve", __doc__, add_arguments), run=bench)


if __name__ == "__main__":
    sys.exit(main())
