"""Audit a model you do not hold: `shadowfarm audit RUN --target http://HOST:PORT/predict [--members FILE]`.

RUN is an ordinary farm (`shadowfarm train`): your shadow models on your data, the population the target is
challenged with. The target answers the run's query set (and HopSkipJump probes for `boundary`) with labels
only; thresholds come from the shadows only. With --members (a file of the example ids the target trained
on) the audit reports AUC, TPR at low FPR and balanced accuracy; without, each example's score and whether it
is flagged as a member at the threshold chosen on shadows for --fpr.

--target: an http(s) URL of a label-only API (`shadowfarm serve`'s format), `model:K` (a model of the run), an
ONNX file (*.onnx; the `onnx` extra) or a TorchScript file. HTTP, gRPC and ONNX answers are journaled under
RUN/audit/<target hash>/journal/, so a re-run after a crash or an error asks only for what is missing;
--protocol v2 speaks the Open Inference Protocol (KServe, Triton, MLServer, Seldon): --target
http://HOST:PORT/v2/models/NAME, or the server's URL with --model-name NAME;
--protocol v2-grpc speaks its gRPC API: --target grpc://HOST:PORT/v2/models/NAME (or grpc://HOST:PORT with
--model-name); --budget caps the queries sent, journal included. The bearer
token comes from the environment variable named by --token-env, never from the command line.
Writes RUN/audit/<target hash>/{target.json, <attack>/scores.parquet, <attack>/metrics.json}.

A model you cannot call: --export-queries DIR writes every input the audit asks (DIR/queries.parquet,
DIR/manifest.json); its owner answers them (DIR/answers.parquet: query_id, label); --answers DIR/answers.parquet
finishes the audit with the options of the export (attacks.offline; not `boundary`, whose queries depend on the
answers). With --target URL or FILE.onnx the answers go to that target's journal.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from functools import partial

from attacks.registry import smoke_attacks, smoke_settings
from farm.errors import ConfigError
from jobs.attack import parse_settings
from jobs.common import add_run_argument, csv_list, job_main, job_parser, model_ids, writes_run
from jobs.smoke import smoke_farm

HELP = ("audit a deployed model (HTTP, gRPC, ONNX, TorchScript, or answers to exported queries) with a run's "
        "shadows: label-only, journaled, budgeted")


def _shadows(text: str):
    return "all" if text.strip() == "all" else model_ids(text)


def add_arguments(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    add_run_argument(parser, positional=positional,
                     help="run directory: the farm of shadow models (a path or s3://, gs:// URI)")
    parser.add_argument("--target", help="http(s)://HOST:PORT/PATH, model:K, an ONNX file (*.onnx) or a TorchScript "
                                          "file; with --answers: the URL or ONNX file whose journal gets the answers")
    offline = parser.add_argument_group("a target you cannot call")
    offline.add_argument("--export-queries", metavar="DIR",
                         help="write every input the audit asks (DIR/queries.parquet, DIR/manifest.json) for the "
                              "model's owner to answer; adaptive attacks (boundary) cannot be exported")
    offline.add_argument("--answers", metavar="FILE",
                         help="finish the audit from the owner's answers (FILE: Parquet query_id, label; "
                              "manifest.json beside it), with the options of the export")
    parser.add_argument("--members", metavar="FILE",
                        help="ground truth: example ids of the target's training set (text or Parquet example_id)")
    parser.add_argument("--nonmembers", metavar="FILE",
                        help="example ids the target never trained on (data collected after it was trained, a public "
                             "test split): never challenged; they measure the FPR the thresholds realize on it. "
                             "'reference': the run's reference pool (membership.reference), the default for model:K "
                             "of a run's target K")
    parser.add_argument("--calibrate", choices=("shadows", "nonmembers"), default="shadows",
                        help="choose the thresholds on the shadows (default) or on the known non-members' scores")
    parser.add_argument("--attacks", type=csv_list, default=None,
                        help="comma-separated label-only attacks (default: all the run supports but boundary)")
    parser.add_argument("--setting", dest="settings", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                        help="an attack setting, e.g. --setting boundary.max_iter=5 (repeatable)")
    parser.add_argument("--fpr", type=float, default=0.01, help="FPR whose shadow threshold flags members (0.01)")
    parser.add_argument("--shadows", type=_shadows, default=None,
                        help="comma-separated model ids, or all (default: the run's models but its target_ids)")
    parser.add_argument("--examples", type=int, default=None,
                        help="challenge a seeded sample of this many examples (default: the whole population)")
    parser.add_argument("--pseudo-targets", type=int, default=4, help="shadows that play the target (default 4)")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates for intervals (0: none)")
    parser.add_argument("--tuned", action="store_true",
                        help="use `shadowfarm tune`'s setting, query set and threshold (tune/<attack>/best.json)")
    http = parser.add_argument_group("HTTP target")
    http.add_argument("--budget", type=int, default=None, help="at most this many queries in all (journal included)")
    http.add_argument("--batch-size", type=int, default=1024, help="inputs per request (default 1024)")
    http.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    http.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer (default 30)")
    http.add_argument("--retries", type=int, default=3, help="retries after a 5xx, connection error or timeout (3)")
    http.add_argument("--backoff", type=float, default=0.5, help="first retry delay, doubled each time (0.5 s)")
    http.add_argument("--rate", type=float, default=None, help="at most this many requests per second")
    http.add_argument("--encoding", choices=("binary", "json"), default="binary", help="request format (binary)")
    http.add_argument("--protocol", choices=("shadowfarm", "v2", "v2-grpc"), default="shadowfarm",
                      help="shadowfarm (`shadowfarm serve`'s /predict, default), v2 (Open Inference Protocol, REST) "
                           "or v2-grpc (its gRPC API: --target grpc://HOST:PORT)")
    http.add_argument("--model-name", help="v2: the model's name, when --target is the server's URL")
    http.add_argument("--output-name", help="v2: the output to read, labels or scores (default: the first)")
    http.add_argument("--input-name", help="v2: the input to send (default: the first the metadata declares; "
                                           "input-0 when it declares none, with the run's shape as FP32)")
    http.add_argument("--new-journal", action="store_true",
                      help="start a new answer journal for this target (the old one is kept): after the model "
                           "behind the URL changed")
    http.add_argument("--token-env", metavar="VARIABLE", help="environment variable holding the bearer token")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def options_from(args: argparse.Namespace):
    from attacks.audit import AuditOptions
    from attacks.example_ids import read_member_ids

    settings = parse_settings(args.settings)
    members = read_member_ids(args.members, flag="--members") if args.members else None
    nonmembers = args.nonmembers if args.nonmembers in (None, "reference") else read_member_ids(
        args.nonmembers, flag="--nonmembers")
    return AuditOptions(attacks=args.attacks, shadows=args.shadows, settings=settings, fpr=args.fpr,
                        n_pseudo=args.pseudo_targets, bootstrap=args.bootstrap, examples=args.examples,
                        members=members, nonmembers=nonmembers, calibrate=args.calibrate, tuned=args.tuned)


def v2_target(args: argparse.Namespace) -> str:
    """--target, with /v2/models/<--model-name> appended for --protocol v2 or v2-grpc; ConfigError for a misplaced
    flag."""
    if not args.protocol.startswith("v2"):
        if args.model_name or args.output_name:
            raise ConfigError("--model-name/--output-name: only with --protocol v2 or v2-grpc")
        return args.target
    if not args.model_name:
        return args.target
    if "/v2/models/" in args.target:
        raise ConfigError(f"--model-name {args.model_name}: --target {args.target} already names a model")
    return f"{args.target.rstrip('/')}/v2/models/{urllib.parse.quote(args.model_name, safe='')}"


@writes_run
def run(args: argparse.Namespace) -> int:
    from attacks.audit import audit_run, open_target, target_key
    from attacks.oracles.http_client import HttpSettings
    from attacks.report.audit_table import format_audit
    from farm.storage import RunDir
    from jobs.serve import read_token

    if not 0 < args.fpr < 1:
        raise ConfigError(f"--fpr: expected a value in (0, 1), got {args.fpr}")
    http = HttpSettings(batch_size=args.batch_size, concurrency=args.concurrency, timeout=args.timeout,
                        retries=args.retries, backoff=args.backoff, rate=args.rate, encoding=args.encoding,
                        protocol=args.protocol, output_name=args.output_name,
                        input_name=args.input_name)
    if args.export_queries:
        return export(args)
    args.target = v2_target(args) if args.target else None
    target = dict(budget=args.budget, http=http, token=read_token(args.token_env), new_journal=args.new_journal)
    if args.answers:
        from attacks.offline import open_answers

        oracle, name = open_answers(args.run, args.answers, options=options_from(args), target=args.target,
                                    progress=not args.quiet, **target)
    elif not args.target:
        raise ConfigError("--target: the model to audit (or --export-queries DIR, then --answers FILE, for a "
                          "model you cannot call)")
    else:
        oracle, name = open_target(args.run, args.target, **target)
    for note in getattr(oracle, "notes", ()):
        print(f"note: {note}")
    identity = getattr(oracle, "identity", None)
    remote = name.startswith(("http", "grpc"))
    provenance = {"token_env": args.token_env, "http": vars(http) if remote else None,
                  "members_file": args.members, "target_identity": identity() if identity else None,
                  "answers_file": args.answers}
    results = audit_run(args.run, oracle, target=name, options=options_from(args), provenance=provenance,
                        progress=not args.quiet)
    print(format_audit(results, args.fpr))
    print(f"target {name}: {oracle.queries_used} queries used (budget: "
          f"{'none' if oracle.budget is None else oracle.budget}"
          + (f", {oracle.journal_hits} answers reused from the journal" if hasattr(oracle, "journal_hits") else "")
          + f"); results in {RunDir(args.run).path('audit/' + target_key(name))}")
    return 0


def export(args: argparse.Namespace) -> int:
    """--export-queries DIR: the audit's queries for a model the auditor cannot call (attacks.offline)."""
    from attacks.offline import ANSWERS, QUERIES, export_queries
    from farm.storage import RunDir

    if args.target or args.answers:
        raise ConfigError("--export-queries: writes the queries of a target you cannot call; drop --target/--answers")
    manifest = export_queries(args.run, args.export_queries, options=options_from(args), progress=not args.quiet)
    out = RunDir(args.export_queries)
    print(f"wrote {manifest['count']} queries ({manifest['n_examples']} examples; {', '.join(manifest['attacks'])}) "
          f"to {out.path(QUERIES)} and {out.path('manifest.json')} (export {manifest['export_id']})")
    print(f"the model's owner answers them in {out.path(ANSWERS)} (columns query_id, label); then run "
          f"shadowfarm audit {args.run} --answers {out.path(ANSWERS)} with the options of this export")
    return 0


def smoke(args: argparse.Namespace) -> int:
    """Train the smoke farm, serve its target model 0 on loopback, audit it over HTTP with ground truth."""
    import numpy as np

    from attacks.oracles.model import ModelOracle
    from attacks.oracles.server import LabelServer
    from farm.shards import MEMBERSHIP, membership_matrix
    from farm.storage import RunDir

    args.run = smoke_farm(args.run)
    member, _ = membership_matrix(RunDir(args.run).read_table(MEMBERSHIP))
    members_file = RunDir(args.run).path("audit/members-of-model-0.txt")
    RunDir(args.run).write_text("audit/members-of-model-0.txt", "\n".join(map(str, np.flatnonzero(member[0]))))
    server = LabelServer(ModelOracle.from_run(args.run, 0)).start()
    print(f"serving model 0 of {args.run} at {server.url}")
    try:
        args.target, args.members = server.url, members_file
        args.attacks = args.attacks or smoke_attacks("audit")  # AttackSpec.smoke, with its cheap settings
        args.settings = args.settings or smoke_settings("audit")
        args.bootstrap, args.pseudo_targets = min(args.bootstrap, 20), min(args.pseudo_targets, 2)
        code = run(args)
    finally:
        server.stop()
    print(f"the server answered {server.stats()['inputs_answered']} inputs")
    return code


def smoke_or_audit(args: argparse.Namespace) -> int:
    """`python -m jobs.audit`: the smoke audit with --smoke-test, else the audit of --target."""
    if args.smoke_test:
        return smoke(args)
    if not args.run or not (args.target or args.export_queries or args.answers):
        raise ConfigError("--run and --target (or --export-queries / --answers) are required (or use --smoke-test)")
    return run(args)


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.audit", __doc__, partial(add_arguments, positional=False),
                        smoke_help="train the smoke farm if needed, serve its model 0 on loopback, audit it over HTTP")
    return job_main(argv, parser, run=smoke_or_audit)


if __name__ == "__main__":
    sys.exit(main())
