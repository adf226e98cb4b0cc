"""Audits of a model the auditor cannot call (air-gapped, on a device, another team's cluster), in two steps.

1. `export_queries(run, folder, options)` writes every input the audit will ask (the run's query set on the
   scored examples, and the tuned query sets with --tuned) to `<folder>/queries.parquet`, one row per distinct
   input (`QUERIES_FIELDS`: query_id, the example_id it perturbs, the input flat in C order), and
   `<folder>/manifest.json` last: the count, the run's hash (its config hash), the export's id (a hash of the
   inputs, in order), the input's column, dtype and shape, the number of classes and the audit's options.
2. The model's owner answers with any tool: `answers.parquet` with columns query_id and label (an integer in
   [0, num_classes)), sent back beside the manifest.
3. `open_answers(run, answers, options)` checks them before anything is written (one line naming the first bad
   row: a query id outside the export, answered twice, a label out of range; then the first query id without
   an answer; a manifest of another run or of other inputs; a file that is not Parquet), puts the answers in a
   journal (`attacks.oracles.journal`) and returns an oracle that answers from that journal alone; the audit
   then runs as online (`attacks.audit.audit_run`), to the same scores bit for bit. With `target` (a URL or
   an ONNX file) the journal is that target's, so a later online audit of it asks none of them again (after
   its usual re-check of 64 rows); otherwise it is the journal of `answers:<export id>`.

Only attacks whose queries are fixed in advance can be answered this way: an adaptive one (`AttackSpec.adaptive`,
HopSkipJump's `boundary`) is refused by `attacks.audit_scope.audit_scope(offline=True)`. Both steps resolve the
options the same way, so an export answers an audit only with the options it was exported with (the export id
says whether the inputs are the same).
"""

from __future__ import annotations

import hashlib
import time
from functools import partial

import numpy as np
import pyarrow as pa

from attacks.audit import tuned_responses, with_target_answers
from attacks.audit_scope import AuditOptions, Scope, audit_scope
from attacks.compute.requery import target_pred
from attacks.loader import load_responses
from attacks.oracles.journal import Journal, open_journal, row_keys
from attacks.oracles.journaled import JournaledOracle
from attacks.oracles.model import split_uri
from attacks.targets import journal_dir, open_target
from farm.errors import ConfigError, DataError
from farm.plan import Plan, load_plan
from farm.shards import schema
from farm.storage import RunDir

QUERIES, MANIFEST, ANSWERS = "queries.parquet", "manifest.json", "answers.parquet"
FORMAT = "shadowfarm-queries"


def queries_schema(width: int) -> pa.Schema:
    """queries.parquet: one row per distinct input; `input` float32[width], an example's values flat in C order."""
    return schema([("query_id", pa.int64()), ("example_id", pa.int32()),
                   ("input", pa.list_(pa.float32(), width))], file="audit_queries")


class _Recorder:
    """A stand-in target that writes down every batch it is asked (rows of the scored examples) and answers 0."""

    def __init__(self, examples: np.ndarray):
        self.examples, self.rows, self.queries_used, self.budget = examples, [], 0, None

    def predict_labels(self, x) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        if len(x) != len(self.examples):
            raise AssertionError(f"the audit asked {len(x)} rows, not one per scored example ({len(self.examples)})")
        self.rows.append(x)
        return np.zeros(len(x), dtype=np.int64)


def asked(plan: Plan, options: AuditOptions, *, progress: bool) -> tuple[Scope, np.ndarray, np.ndarray, list[bytes]]:
    """(scope, inputs float32[U, *shape], example ids int32[U], keys): every distinct input the audit of `options`
    asks its target, in the order it first asks them, with the example each perturbs (the first, if several)."""
    responses = load_responses(plan.run, logits=False)
    scope = audit_scope(plan, responses, options, target="answers", offline=True)
    recorder = _Recorder(scope.scored)
    responses, _ = with_target_answers(plan, responses, recorder, examples=scope.scored, member=scope.member,
                                       progress=progress)
    answer = partial(target_pred, recorder, info=plan.dataset.info, x=plan.dataset.x, examples=scope.scored,
                     progress=progress)
    for name in scope.names:
        tuned_responses(plan, responses, answer, scope.tuned.get(name), examples=scope.scored, shadows=scope.shadows,
                        progress=progress)
    x = np.concatenate(recorder.rows)
    keys = row_keys(x)
    seen: dict[bytes, int] = {}
    for i, key in enumerate(keys):
        seen.setdefault(key, i)
    first = np.fromiter(seen.values(), dtype=np.intp, count=len(seen))  # first asks, in order
    example_ids = np.tile(scope.scored, len(recorder.rows))[first].astype(np.int32)
    return scope, x[first], example_ids, [keys[i] for i in first]


def export_id(keys: list[bytes]) -> str:
    """16 hex digits over the keys of an export's inputs, in order."""
    return hashlib.sha256(b"".join(keys)).hexdigest()[:16]


def export_queries(run_uri: str, folder: str, *, options: AuditOptions, progress: bool = True) -> dict:
    """Write the queries of the audit of `options` to `folder` (queries.parquet, then manifest.json); the manifest."""
    plan = load_plan(run_uri)
    scope, x, example_ids, keys = asked(plan, options, progress=progress)
    width, info = int(np.prod(x.shape[1:])), plan.dataset.info
    table = pa.table({"query_id": pa.array(np.arange(len(x)), pa.int64()),
                      "example_id": pa.array(example_ids, pa.int32()),
                      "input": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), width)},
                     schema=queries_schema(width))
    manifest = {"format": FORMAT, "version": 1, "count": len(x), "run_hash": plan.config_hash,
                "export_id": export_id(keys), "run": plan.run.uri, "dataset": info.name,
                "num_classes": info.num_classes,
                "input": {"column": "input", "dtype": "float32", "shape": list(x.shape[1:]),
                          "layout": "each row flat in C order: reshape it to shape"},
                "answers": {"file": ANSWERS, "query_id": "int, every query id exactly once",
                            "label": f"int in [0, {info.num_classes})"},
                "attacks": scope.names, "n_examples": len(scope.scored), "examples": options.examples,
                "seed": options.seed, "tuned": options.tuned, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                     time.gmtime())}
    out = RunDir(folder)
    out.write_table(QUERIES, table)
    out.write_json(MANIFEST, manifest)  # last: a folder with a manifest holds a whole export
    return manifest


def _one_line(text: str) -> str:
    return " ".join(text.split())[:120]


def _read_answers(folder: RunDir, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(query ids int64[R], labels int64[R]) of an answers file, or a one-line DataError naming it."""
    where = folder.path(name)
    if not folder.is_file(name):
        raise DataError(f"{where}: file not found (--answers: the model owner's answers.parquet)")
    try:
        table = folder.read_table(name)
    except (OSError, pa.ArrowException) as exc:
        cause = _one_line(str(exc).replace(where, name))
        raise DataError(f"{where}: not a Parquet file of answers ({cause})") from None
    columns = []
    for column in ("query_id", "label"):
        if column not in table.column_names:
            raise DataError(f"{where}: no column {column!r} (columns: {', '.join(table.column_names)}); expected "
                            "query_id and label")
        values = table[column]
        if not pa.types.is_integer(values.type):
            raise DataError(f"{where}: column {column!r} is {values.type}; expected integers")
        if values.null_count:
            row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{where} row {row}: {column} is empty")
        columns.append(values.to_numpy().astype(np.int64))
    return columns[0], columns[1]


def _read_manifest(folder: RunDir, plan: Plan) -> dict:
    """The manifest beside the answers, checked to be an export of this run."""
    where = folder.path(MANIFEST)
    if not folder.is_file(MANIFEST):
        raise DataError(f"{where}: file not found (the export's manifest.json goes back with its answers)")
    try:
        manifest = folder.read_json(MANIFEST)
        count, run_hash, exported = int(manifest["count"]), str(manifest["run_hash"]), str(manifest["export_id"])
        if manifest["format"] != FORMAT:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{where}: not the manifest of `shadowfarm audit --export-queries`") from None
    if run_hash != plan.config_hash:
        raise DataError(f"{where}: exported from another run (run hash {run_hash}; {plan.run.uri} has "
                        f"{plan.config_hash})")
    return {**manifest, "count": count, "export_id": exported}


def check_answers(where: str, query_ids: np.ndarray, labels: np.ndarray, *, count: int,
                  num_classes: int) -> np.ndarray:
    """labels int64[count] by query id, or a one-line DataError naming the first bad row (a query id outside
    [0, count), one answered twice, a label outside [0, num_classes)), else the first query id without an answer."""
    bad = {}
    outside = np.flatnonzero((query_ids < 0) | (query_ids >= count))
    if len(outside):
        bad[outside[0]] = f"query id {query_ids[outside[0]]} is not in the export (0..{count - 1})"
    order = np.argsort(query_ids, kind="stable")
    again = order[1:][query_ids[order[1:]] == query_ids[order[:-1]]]
    if len(again):
        row = int(again.min())
        bad[row] = (f"query id {query_ids[row]} answered again (first at row "
                    f"{int(np.flatnonzero(query_ids == query_ids[row])[0])})")
    wrong = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(wrong):
        bad[wrong[0]] = f"label {labels[wrong[0]]} of query id {query_ids[wrong[0]]} is not in [0, {num_classes})"
    if bad:
        row = min(bad)
        raise DataError(f"{where} row {row}: {bad[row]}")
    answered = np.full(count, -1, dtype=np.int64)
    answered[query_ids] = labels
    if (missing := np.flatnonzero(answered < 0)).size:
        raise DataError(f"{where}: query id {missing[0]} has no answer ({len(missing)} of {count} unanswered)")
    return answered


def open_answers(run_uri: str, answers: str, *, options: AuditOptions, target: str | None = None,
                 new_journal: bool = False, progress: bool = True, **target_kwargs) -> tuple[JournaledOracle, str]:
    """(an oracle answering from the journal the checked answers went to, the audit's target name); see the module
    docstring. target_kwargs go to `attacks.targets.open_target` (http settings, token)."""
    folder, name = split_uri(answers)
    where = folder.path(name)
    query_ids, labels = _read_answers(folder, name)
    plan = load_plan(run_uri)
    manifest = _read_manifest(folder, plan)
    labels = check_answers(where, query_ids, labels, count=manifest["count"], num_classes=plan.dataset.info.num_classes)
    _, x, _, keys = asked(plan, options, progress=progress)
    if len(keys) != manifest["count"] or export_id(keys) != manifest["export_id"]:
        raise DataError(f"{folder.path(MANIFEST)}: export {manifest['export_id']} holds {manifest['count']} other "
                        f"inputs than this audit asks ({len(keys)}, export {export_id(keys)}): give the audit the "
                        "options of the export (--attacks, --examples, --nonmembers, --tuned, --seed)")
    journal, name, notes = _journal(run_uri, target, manifest["export_id"], new_journal=new_journal, **target_kwargs)
    held = journal.get(keys)
    if (differ := np.flatnonzero((held >= 0) & (held != labels))).size:
        row = int(np.flatnonzero(query_ids == differ[0])[0])
        raise DataError(f"{where} row {row}: query id {differ[0]} answered {labels[differ[0]]}, but the journal "
                        f"{journal.where} holds {held[differ[0]]} for that input (another model's answers?); "
                        "--new-journal starts a new journal")
    new = np.flatnonzero(held < 0)
    if len(new):
        journal.append([keys[i] for i in new], labels[new])
    oracle = JournaledOracle(None, journal, source=where)
    oracle.notes.extend(notes + [f"{len(new)} of {len(keys)} answers from {where} added to the journal "
                                 f"{journal.where}"])
    return oracle, name


def _journal(run_uri: str, target: str | None, exported: str, *, new_journal: bool,
             **target_kwargs) -> tuple[Journal, str, list[str]]:
    """(journal, target name, notes): `target`'s journal (a URL or an ONNX file: a target that keeps one), else
    the journal of the answers to this export."""
    if target is None:
        name = f"answers:{exported}"
        journal, notes = open_journal(RunDir(run_uri), journal_dir(name), {"answers": exported}, new=new_journal)
        return journal, name, notes
    oracle, name = open_target(run_uri, target, new_journal=new_journal, **target_kwargs)
    if getattr(oracle, "journal", None) is None:
        raise ConfigError(f"--target {target} with --answers: it keeps no journal to put the answers in (an "
                          "http(s) URL or an ONNX file does); drop --target")
    return oracle.journal, name, list(getattr(oracle, "notes", []))
