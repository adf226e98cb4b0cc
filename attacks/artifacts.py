"""Every file the attack stage writes: its path (relative to the run, or to a study folder) and Parquet schema.

    attacks/<attack>/scores.parquet    `ATTACK_SCORES_SCHEMA`: one row per (target, example)
    attacks/<attack>/metrics.json      `attacks.stats.metrics.evaluate` plus the game's settings and `settings_hash`
    attacks/<attack>/_SUCCESS          the settings hash, then the sha256 and size of both (`farm.content`)
    audit/<key>/target.json            the audited target (key: `attacks.audit.target_key`), budget, timings
    audit/<key>/<attack>/scores.parquet, metrics.json   `AUDIT_SCORES_SCHEMA`
    audit/<key>/journal/<identity>-<gen>/   HTTP answers, per model identity (`attacks.oracles.journal`)
    tune/<attack>/best.json            the setting `shadowfarm tune` chose (tune/_ray: Ray Tune's own files)
    studies/worst_case.parquet, outliers.parquet, ood.parquet, calibration.parquet, queries.parquet   the studies
                                       of one run
    study.json, studies/defenses.parquet   a defense study's folder (`MATRIX` is copied into its undefended farm)

Schemas are built by `farm.shards.schema`, so every file names itself and its version in its metadata; a
study adds its description (JSON) under "shadowfarm.study" (`with_study_metadata`). `jsonable` turns what
the stage writes as JSON into plain values.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from attacks.stats.metrics import DEFAULT_FPRS, fpr_column
from farm.content import checked_bytes, write_recorded
from farm.errors import RunError
from farm.shards import schema
from farm.storage import RunDir, table_bytes

ATTACKS_DIR = "attacks"
TUNE_DIR = "tune"
TUNE_RAY_DIR = "tune/_ray"
WORST_CASE = "studies/worst_case.parquet"
OUTLIERS = "studies/outliers.parquet"
OOD = "studies/ood.parquet"
CALIBRATION = "studies/calibration.parquet"
QUERIES = "studies/queries.parquet"
MATRIX = "studies/defenses.parquet"
STUDY_JSON = "study.json"
STUDY_METADATA = b"shadowfarm.study"

POPULATION = "population"  # the `family` of OOD rows measured on the targets' own population non-members
MATRIX_FPRS = (0.01, 0.001)  # the matrix's TPR columns, in column order

ATTACK_SCORES_SCHEMA = schema(
    [("target_model_id", pa.int32()), ("example_id", pa.int32()), ("member", pa.bool_()), ("score", pa.float64())],
    file="scores",
)
AUDIT_SCORES_SCHEMA = schema(
    [("example_id", pa.int32()), ("score", pa.float64()), ("flagged", pa.bool_()), ("member", pa.bool_())],
    file="audit_scores",
)

_F, _I = pa.float64(), pa.int64()
WORST_CASE_SCHEMA = schema(
    [("attack", pa.string()), ("label_only", pa.bool_()), ("subset", pa.string()), ("n_examples", _I),
     ("n_members", _I), ("n_nonmembers", _I), ("auc", _F)]
    + [(fpr_column(col, f), t) for f in DEFAULT_FPRS for col, t in (("tpr_at_fpr", _F),
                                                                   ("false_positives_allowed", _I))]
    + [("requested_fpr", _F), ("n_shadow_nonmembers", _I), ("subset_threshold", _F), ("subset_threshold_fpr", _F),
       ("subset_threshold_tpr", _F), ("population_threshold", _F), ("population_threshold_fpr", _F),
       ("population_threshold_tpr", _F)],
    file="worst_case",
)
QUERIES_SCHEMA = schema(  # the query-budget frontier: one row per (attack, setting)
    [("attack", pa.string()), ("label_only", pa.bool_()), ("setting", pa.string()),  # JSON: the settings changed
     ("how", pa.string()), ("queries_per_example", _F), ("auc", _F)]
    + [(fpr_column(col, f), t) for f in DEFAULT_FPRS for col, t in (("tpr_at_fpr", _F),
                                                                   ("false_positives_allowed", _I))]
    + [(fpr_column(col, f), _F) for f in DEFAULT_FPRS for col in ("shadow_threshold_fpr", "shadow_threshold_tpr")]
    + [("n_members", _I), ("n_nonmembers", _I), ("n_targets", _I), ("n_pseudo_targets", _I)]
    + [(name, _F) for name in ("auc_ci_low", "auc_ci_high")]  # 95% bootstrap intervals; null without --bootstrap
    + [(fpr_column(col, f), _F) for f in DEFAULT_FPRS for col in ("tpr_at_fpr_ci_low", "tpr_at_fpr_ci_high")],
    file="queries",
)
OUTLIERS_SCHEMA = schema(
    [("example_id", pa.int32()), ("label", pa.int64()), ("outlier", pa.bool_()), ("rank", pa.int32())],
    file="outliers",
)
OOD_SCHEMA = schema(
    [("attack", pa.string()), ("label_only", pa.bool_()), ("scoring", pa.string()), ("family", pa.string()),
     ("threshold", pa.string()), ("threshold_value", _F), ("n_inputs", _I),
     ("false_positives", _I), ("fpr", _F), ("n_targets", _I),
     ("population_tpr", _F), ("n_members", _I)],
    file="ood",
)
MATRIX_SCHEMA = schema([
    ("defense", pa.string()),  # "weight_decay=0.01", "none + top1": the training label, then the output defense
    ("training_defense", pa.string()),  # attacks.studies.defenses.TRAINING_DEFENSES name
    ("strength", _F),  # its value (NaN for none)
    ("output_defense", pa.string()),  # none | memguard | flatten | top1 | round
    ("attack", pa.string()),
    ("label_only", pa.bool_()),
    ("auc", _F),
    *((fpr_column("tpr_at_fpr", f), _F) for f in MATRIX_FPRS),
    ("balanced_accuracy", _F),  # at the threshold chosen on shadows
    ("n_members", _I),
    ("n_nonmembers", _I),
    ("same_as_undefended", pa.bool_()),  # label-only row under an output defense: identical inputs
    ("test_accuracy", _F),
    ("train_accuracy", _F),
    ("epsilon", _F),  # spent ε, NaN without DP
    ("run", pa.string()),  # the farm's run directory, relative to the study
], file="defenses")


def attack_dir(name: str) -> str:
    return f"{ATTACKS_DIR}/{name}"


def attack_scores(name: str) -> str:
    return f"{attack_dir(name)}/scores.parquet"


def attack_metrics(name: str) -> str:
    return f"{attack_dir(name)}/metrics.json"


def _result_bytes(run: RunDir, name: str, file: str) -> bytes:
    """A file of attack `name`'s result, checked against its `_SUCCESS` record (RunError naming it and what to
    run when it differs; a result written before records: unchecked, with the run's note)."""
    return checked_bytes(run, attack_dir(name), file, redo=f"run `shadowfarm attack {run.path()} --attacks {name}` "
                         "again: it computes a result that does not match its record again")


def read_scores(run: RunDir, name: str, columns: list[str] | None = None) -> pa.Table:
    """attacks/<name>/scores.parquet, content-checked (`_result_bytes`)."""
    return pq.read_table(pa.BufferReader(_result_bytes(run, name, "scores.parquet")), columns=columns)


def read_attack_metrics(run: RunDir, name: str) -> dict:
    """attacks/<name>/metrics.json, content-checked (`_result_bytes`)."""
    return json.loads(_result_bytes(run, name, "metrics.json"))


def attack_names(run: RunDir) -> list[str]:
    """Names of the attacks with a result (attacks/<name>/metrics.json, written after the scores)."""
    return [name for name in run.listdir(ATTACKS_DIR)
            if not name.startswith(".") and run.is_file(attack_metrics(name))]


def audit_dir(key: str) -> str:
    """The folder of one audited target (key: `attacks.audit.target_key`)."""
    return f"audit/{key}"


def audit_scores(key: str, attack: str) -> str:
    return f"{audit_dir(key)}/{attack}/scores.parquet"


def audit_metrics(key: str, attack: str) -> str:
    return f"{audit_dir(key)}/{attack}/metrics.json"


def audit_target(key: str) -> str:
    return f"{audit_dir(key)}/target.json"


def audit_journal(key: str) -> str:
    return f"{audit_dir(key)}/journal"


def tune_best(attack: str) -> str:
    return f"{TUNE_DIR}/{attack}/best.json"


def with_study_metadata(table_schema: pa.Schema, meta: dict) -> pa.Schema:
    """`table_schema` with a study's description `meta` (JSON) under "shadowfarm.study", for the report."""
    return table_schema.with_metadata({**table_schema.metadata, STUDY_METADATA: json.dumps(meta)})


def study_meta(run: RunDir, rel: str) -> dict:
    """The JSON a study stores in its file's schema metadata (`with_study_metadata`; {} when none)."""
    return json.loads((run.read_schema(rel).metadata or {}).get(STUDY_METADATA, b"{}"))


def read_matrix(study: RunDir | str) -> pa.Table:
    """studies/defenses.parquet of a study, checked against `MATRIX_SCHEMA`."""
    study = RunDir(study) if isinstance(study, str) else study
    if not study.is_file(MATRIX):
        raise RunError(f"{study.path(MATRIX)}: not found; run `shadowfarm study defenses` first")
    table = study.read_table(MATRIX)
    if not table.schema.equals(MATRIX_SCHEMA, check_metadata=False):
        raise RunError(f"{study.path(MATRIX)}: not a defenses matrix of this version")
    return table


def write_study(run: RunDir, rel: str, table: pa.Table) -> None:
    """A study's table, with its sha256 and size beside it (`farm.content.write_recorded`: `verify` checks it, the
    report names it when it was changed after it was written)."""
    write_recorded(run, rel, table_bytes(table))


def jsonable(obj):
    """`obj` for JSON: keys as strings, tuples as lists, numpy scalars as Python values, and Python floats
    that are NaN or infinite as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
