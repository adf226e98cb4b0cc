"""The bad-input catalogue's cases (run by tests/test_catalogue.py): every malformed input a user can hand
shadowfarm, one `Case` each; `make_files` (tests/catalogue_files.py) writes the malformed files they name.

Configs (types, ranges, unknown keys), data sets (the user-supplied npz and CSV files), command-line
arguments and oracle answers. Each case gives the command line (or the oracle's answer) and a part of the one
error line it must print.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from catalogue_files import make_files  # noqa: F401  (the catalogue's files: run with its cases)

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"


@dataclass(frozen=True)
class Case:
    """One malformed input. argv(ctx) -> command line; `expected` must appear in the error line.

    kind: "new" (a fresh --out that must not be created), "run" (against the shared tiny run, which must
    stay byte-identical), "argparse" (argument syntax; argparse exits 2), "oracle" (argv is the answer).
    """

    id: str
    input: str
    argv: Callable
    expected: str
    kind: str = "new"


def _set(*pairs: str) -> list[str]:
    return [a for pair in pairs for a in ("--set", pair)]


def _train(*pairs: str) -> Callable:
    return lambda c: ["train", "quickstart", *_set(*pairs), "--out", c.out, "--quiet"]


def _data(kind: str, name: str) -> Callable:
    return lambda c: ["train", "quickstart", *_set(f"data.name={kind}", f"data.path={c.files}/{name}"), "--out",
                      c.out, "--quiet"]


def _file_config(name: str) -> Callable:
    return lambda c: ["train", f"{c.files}/{name}", "--out", c.out, "--quiet"]


def _audit(*args: str) -> Callable:
    """`shadowfarm audit RUN ARGS --quiet`, {files} and {out} in ARGS standing for the case's folders."""
    return lambda c: ["audit", c.run, *(a.format(files=c.files, out=c.out) for a in args), "--quiet"]


def _on_file(command: str, name: str) -> Callable:
    return lambda c: [command, f"{c.files}/{name}"]


def _on_run(command: str, *args: str) -> Callable:
    return lambda c: [*command.split(), c.run, *args]


CASES = [
    # ---------------------------------------------------------------- configs
    Case("config-unknown-key", "`--set train.epoch=3`", _train("train.epoch=3"), "unknown config key 'train.epoch'"),
    Case("config-unknown-key-in-yaml", "a YAML file with `train: {epochz: 1}`", _file_config("unknown.yaml"),
         "unknown config key 'train.epochz' (valid: optimizer"),
    Case("config-not-an-integer", "`--set train.epochs=five`", _train("train.epochs=five"),
         "train.epochs: expected an integer, got 'five'"),
    Case("config-fraction-for-integer", "`--set train.epochs=2.5`", _train("train.epochs=2.5"),
         "train.epochs: expected an integer, got 2.5"),
    Case("config-not-a-boolean", "`--set record_logits=maybe`", _train("record_logits=maybe"),
         "record_logits: expected true or false, got 'maybe'"),
    Case("config-section-not-a-mapping", "`--set train=5`", _train("train=5"), "train: expected a mapping, got 5"),
    Case("config-nan", "`--set membership.p_in=.nan`", _train("membership.p_in=.nan"),
         "membership.p_in: expected a finite number, got nan"),
    Case("config-infinite", "`--set train.lr=.inf`", _train("train.lr=.inf"),
         "train.lr: expected a finite number, got inf"),
    Case("config-n-models-below-2", "`--set membership.n_models=1`", _train("membership.n_models=1"),
         "membership.n_models: expected at least 2, got 1"),
    Case("config-reference-too-large", "`--set membership.reference=0.9`", _train("membership.reference=0.9"),
         "membership.reference: 0.9 of"),
    Case("config-p-in-out-of-range", "`--set membership.p_in=1.2`", _train("membership.p_in=1.2"),
         "membership.p_in: expected a value in (0, 1), got 1.2"),
    Case("config-target-not-a-model", "`--set membership.target_ids=[70]`", _train("membership.target_ids=[70]"),
         "membership.target_ids: 70 is not a model id in [0, 64)"),
    Case("config-negative-seed", "`--set seed=-1`", _train("seed=-1"), "seed: expected an integer >= 0, got -1"),
    Case("config-dropout-out-of-range", "`--set model.dropout=1`", _train("model.dropout=1"),
         "model.dropout: expected a value in [0, 1), got 1.0"),
    Case("config-unknown-dataset", "`--set data.name=imagenet`", _train("data.name=imagenet"),
         "unknown dataset 'imagenet' (valid: adult,"),
    Case("config-unknown-model", "`--set model.name=vit`", _train("model.name=vit"), "unknown model 'vit' (valid:"),
    Case("config-unknown-query-kind", "`--set queries=[blur]`", _train("queries=[blur]"),
         "unknown query kind 'blur' (valid:"),
    Case("config-query-parameter-out-of-range", "`--set queries=[{kind: translate, d: 100}]` on 8x8 digits",
         _train("queries=[{kind: translate, d: 100}]"),
         "queries[0] (translate): parameter 'd' must be an integer in [1, 7], got 100"),
    Case("config-query-unknown-parameter", "`--set queries=[{kind: gaussian, sigma: 1, n: 2, mean: 0}]`",
         _train("queries=[{kind: gaussian, sigma: 1, n: 2, mean: 0}]"),
         "queries[0] (gaussian): unknown parameter 'mean' (valid: sigma, n)"),
    Case("config-query-wrong-for-the-data", "`--set data.name=synthetic --set queries=[flip]` (tabular data)",
         _train("data.name=synthetic", "queries=[flip]"), "flip"),
    Case("config-subsample-too-large", "`--set data.subsample=100000` (digits has 1,797)",
         _train("data.subsample=100000"), "data.subsample: 100000 exceeds the 1797 examples of digits"),
    Case("config-invalid-yaml", "a config file holding `train: [`", _file_config("invalid.yaml"),
         "invalid.yaml': invalid YAML at line 2"),
    Case("config-yaml-not-a-mapping", "a config file holding a list", _file_config("list.yaml"),
         "list.yaml': expected a mapping at the top level"),
    Case("config-file-missing", "`shadowfarm train nope.yaml`", _file_config("nope.yaml"),
         "config file '{files}/nope.yaml' not found"),
    Case("config-not-utf8", "a config file with a byte that is not UTF-8", _file_config("latin1.yaml"),
         "latin1.yaml': not UTF-8 text (byte 0xe9 at offset 22); save it as UTF-8"),
    Case("config-duplicate-key", "a config file giving `seed` twice", _file_config("duplicate.yaml"),
         "duplicate.yaml': duplicate key 'seed' at line 2"),
    Case("set-duplicate-key", "`--set queries=[{kind: gaussian, kind: flip}]`",
         _train("queries=[{kind: gaussian, kind: flip}]"), "duplicate key 'kind'"),
    Case("config-anchor-bomb", "a 236-byte config whose YAML anchors expand to 6 million values",
         _file_config("bomb.yaml"), "bomb.yaml': expands to 6,053,444 values (YAML anchors repeated?)"),
    Case("config-long-value-cut",
         "`membership.target_ids` in 215 bytes of YAML (anchors) printing as 2 million characters",
         _file_config("long_ids.yaml"), "got [[0, 0, 0, 0, 0, 0, 0, 0, 0], [[0, 0, 0,"),
    Case("run-json-not-an-object", "`shadowfarm verify` a run whose run.json holds `[]`",
         _on_file("verify", "list_run"), "run.json: expected a JSON object (as shadowfarm writes it)"),
    Case("run-json-edited-config", "`shadowfarm attack` a run whose run.json's config was edited (n_models 10^9)",
         _on_file("attack", "edited_run"), "run.json: its config does not match its config_hash"),
    Case("run-json-edited-data-path", "`shadowfarm verify` a run whose run.json's data.path became /etc/shadow",
         _on_file("verify", "shadow_run"), "run.json: its config does not match its config_hash"),
    # memory: checked against SHADOWFARM_MEMORY_BYTES=8 GiB (tests/test_catalogue.py), before anything is allocated
    Case("config-too-many-queries", "`queries=[clean, {kind: gaussian, sigma: 0.1, n: 1000000000}]`",
         _train("queries=[clean, {kind: gaussian, sigma: 0.1, n: 1000000000}]"),
         "queries: 1,000,000,001 queries in total (through queries[1] (gaussian)), at most 32,767 are supported"),
    Case("config-responses-exceed-memory", "2,000 models x 30,001 queries (responses of 201 GiB)",
         _train("membership.n_models=2000", "queries=[clean, {kind: gaussian, sigma: 0.1, n: 30000}]"),
         "queries: the responses of 2,000 models x 1,797 examples x 30,001 queries"),
    Case("config-batch-exceeds-memory", "`--set train.batch_size=1000000000000`",
         _train("train.batch_size=1000000000000"), "train.batch_size: a trainer actor's index streams and activations"),
    Case("config-n-models-exceeds-memory", "`--set membership.n_models=1000000000`",
         _train("membership.n_models=1000000000"),
         "membership.n_models: the membership matrix and table of 1,000,000,000 models x 1,797 examples need about"),
    Case("config-n-models-beyond-int64", "`--set membership.n_models=18446744073709551617` (2^64 + 1)",
         _train("membership.n_models=18446744073709551617"),
         "membership.n_models: the membership matrix and table of 18,446,744,073,709,551,617 models"),
    Case("config-model-exceeds-memory", "`--set model.hidden=[100000000]`", _train("model.hidden=[100000000]"),
         "farm.group_size: the weights, gradients and optimizer state of 16 models of 7,500,000,010 parameters"),
    Case("set-without-equals", "`--set train.epochs`", _train("train.epochs"),
         "--set 'train.epochs': expected KEY=VALUE, e.g. train.epochs=5"),
    Case("set-empty-key", "`--set =5`", _train("=5"), "--set '=5': expected KEY=VALUE with a dotted KEY"),
    Case("set-into-a-value", "`--set seed.x=1`", _train("seed.x=1"), "--set 'seed.x=1': 'seed' is not a section"),
    # ---------------------------------------------------------------- data sets (npz and CSV files)
    Case("npz-missing-file", "`data.path` names no file", _data("npz", "none.npz"), "{files}/none.npz: file not found"),
    Case("npz-path-is-a-directory", "`data.path` is a directory", _data("npz", "folder.npz"),
         "folder.npz: is a directory; data.path of the npz data set must be a file"),
    Case("npz-without-path", "`--set data.name=npz`, no `data.path`", _train("data.name=npz"),
         "data.path: the npz data set needs a path to an .npz file"),
    Case("npz-corrupt", "a truncated .npz", _data("npz", "truncated.npz"), "truncated.npz: cannot read (BadZipFile"),
    Case("npz-not-an-archive", "an .npy file given as the .npz", _data("npz", "array.npy"),
         "array.npy: not an .npz archive (save one with numpy.savez(path, x=x, y=y))"),
    Case("npz-missing-array", "an .npz without `y`", _data("npz", "no_y.npz"), "no_y.npz: missing array(s) ['y']"),
    Case("npz-object-array", "an .npz whose `x` is an object array (a pickle)", _data("npz", "objects.npz"),
         "objects.npz: array 'x' holds Python objects (a pickle), which shadowfarm never loads"),
    Case("npz-length-mismatch", "20 rows of `x`, 19 labels", _data("npz", "mismatched.npz"),
         "mismatched.npz: x has 20 rows but y has 19"),
    Case("npz-nan", "a NaN in `x`", _data("npz", "nan.npz"), "nan.npz: x contains NaN or inf"),
    Case("npz-inf", "an inf in `x`", _data("npz", "inf.npz"), "inf.npz: x contains NaN or inf"),
    Case("npz-negative-label", "a label -1", _data("npz", "negative.npz"),
         "negative.npz: labels must be in [0, 32767]"),
    Case("npz-label-too-large", "a label 40000 (labels are stored as int16)", _data("npz", "large.npz"),
         "large.npz: labels must be in [0, 32767], got [0, 40000]"),
    Case("npz-fractional-label", "a label 0.5", _data("npz", "fractional.npz"),
         "fractional.npz: y must be integer class labels, found non-integer values"),
    Case("npz-string-label", "labels 'a', 'b'", _data("npz", "strings.npz"),
         "strings.npz: y must be integer class labels, got dtype <U1"),
    Case("npz-wrong-dimensions", "a 1-d `x`", _data("npz", "flat.npz"),
         "flat.npz: x must be [N, D], [N, H, W] or [N, C, H, W], got shape (20,)"),
    Case("npz-empty", "`x` of shape (0, 4)", _data("npz", "empty.npz"), "empty.npz: x is empty (shape (0, 4))"),
    Case("npz-one-class", "every label 0", _data("npz", "one_class.npz"),
         "one_class.npz: need at least 2 examples and 2 classes"),
    Case("csv-wrong-columns", "a purchase100 CSV with 3 columns", _data("purchase100", "narrow.csv"),
         "narrow.csv: expected a label and 600 features per row, got 3 columns"),
    Case("csv-not-numeric", "a purchase100 CSV with a word among the numbers", _data("purchase100", "words.csv"),
         "words.csv: cannot read (ValueError: could not convert string to float: 'x')"),
    Case("csv-adult-wrong-columns", "an Adult CSV with 3 columns", _data("adult", "narrow.csv"),
         "narrow.csv: expected 15 columns (14 UCI Adult attributes and the income label), got 3"),
    Case("torchvision-files-missing", "`data.name=mnist` with an empty root", _data("mnist", "empty_root"),
         "empty_root: mnist train files not found or corrupted under this root (set data.download: true"),
    # ---------------------------------------------------------------- run directories and the command line
    Case("out-not-a-run", "`--out` a directory holding other files",
         lambda c: ["train", "quickstart", "--out", f"{c.files}/not_a_run", "--quiet"],
         "not_a_run: exists and is not a shadowfarm run (no run.json); choose a new --out"),
    Case("out-another-config", "`--out` a run made with another config",
         lambda c: ["train", "quickstart", "--out", c.run, "--quiet"],
         "run.json: the run was created with another config", "run"),
    Case("bad-input-into-existing-run", "`--set membership.n_models=1 --out` an existing run",
         lambda c: ["train", "quickstart", *_set("membership.n_models=1"), "--out", c.run, "--quiet"],
         "membership.n_models: expected at least 2, got 1", "run"),
    Case("out-with-credentials", "`--out s3://KEY:SECRET@bucket/run`",
         lambda c: ["train", "quickstart", "--out", f"s3://AKIAEXAMPLE:{SECRET}@bucket/run", "--quiet"],
         "s3://bucket/run: credentials in a run URI would be written into logs and the report"),
    Case("attack-run-with-credentials", "`shadowfarm attack s3://bucket/run?secret_key=SECRET`",
         lambda c: ["attack", f"s3://bucket/run?secret_key={SECRET}"], "s3://bucket/run: credentials in a run URI"),
    Case("attack-missing-run", "`shadowfarm attack` a nonexistent directory",
         _on_file("attack", "nothing"), "{files}/nothing/run.json: not found; is"),
    Case("verify-missing-run", "`shadowfarm verify` a nonexistent directory",
         _on_file("verify", "nothing"), "{files}/nothing/run.json: not found; is"),
    Case("report-missing-run", "`shadowfarm report` a nonexistent directory",
         _on_file("report", "nothing"), "{files}/nothing/run.json: not found; is"),
    Case("attack-unknown-attack", "`--attacks nope`", _on_run("attack", "--attacks", "nope", "--quiet"),
         "unknown attack 'nope' (valid: augmentation, boundary, calibrated,", "run"),
    Case("attack-fixed-direction-steps", "`--attacks fixed_direction --setting fixed_direction.steps=40`",
         _on_run("attack", "--attacks", "fixed_direction", "--setting", "fixed_direction.steps=40", "--quiet"),
         "attack 'fixed_direction': steps must be an integer in [5, 30], got 40", "run"),
    Case("attack-yoqo-margins-global", "`--setting yoqo.score=margins --setting yoqo.variant=global`", _on_run(
        "attack", "--attacks", "yoqo", "--setting", "yoqo.score=margins", "--setting", "yoqo.variant=global"),
         "attack 'yoqo': score 'margins' is calibrated per example; use variant online or offline", "run"),
    Case("attack-target-not-in-run", "`--targets 99` on a run of 8 models", _on_run("attack", "--targets", "99"),
         "--targets: 99 is not a model id in [0, 8)", "run"),
    Case("attack-fpr-out-of-range", "`--fpr 2`", _on_run("attack", "--fpr", "2"),
         "--fpr: expected a value in (0, 1), got 2.0", "run"),
    Case("attack-fpr-nan", "`--fpr nan`", _on_run("attack", "--fpr", "nan"),
         "--fpr: expected a value in (0, 1), got nan", "run"),
    Case("attack-not-applicable", "`--attacks augmentation` on a run without flips/shifts/rotations",
         _on_run("attack", "--attacks", "augmentation", "--quiet"),
         "attack 'augmentation' cannot run on this run: needs queries of kind flip or translate or rotate", "run"),
    Case("attack-unknown-setting", "`--setting calibrated.bogus=1`",
         _on_run("attack", "--attacks", "calibrated", "--setting", "calibrated.bogus=1", "--quiet"),
         "attack 'calibrated': unknown setting(s) bogus (valid:", "run"),
    Case("attack-setting-without-equals", "`--setting calibrated`", _on_run("attack", "--setting", "calibrated"),
         "--setting 'calibrated': expected KEY=VALUE, e.g. calibrated.variant=offline", "run"),
    Case("attack-no-targets", "`--targets ,`", _on_run("attack", "--targets", ","),
         "--targets: expected at least one model id", "run"),
    Case("attack-negative-bootstrap", "`--bootstrap -1`", _on_run("attack", "--bootstrap", "-1"),
         "--bootstrap: expected >= 0 (0: no intervals), got -1", "run"),
    Case("attack-no-pseudo-targets", "`--pseudo-targets 0`", _on_run("attack", "--pseudo-targets", "0"),
         "--pseudo-targets: expected at least 1, got 0", "run"),
    Case("attack-unknown-variant", "`--setting calibrated.variant=bogus`",
         _on_run("attack", "--attacks", "calibrated", "--setting", "calibrated.variant=bogus", "--quiet"),
         "attack 'calibrated': unknown variant 'bogus' (valid: offline, online)", "run"),
    Case("attack-tuned-without-tune", "`--tuned` before any `shadowfarm tune`", _on_run("attack", "--tuned"),
         "--tuned: no tune results under", "run"),
    Case("report-without-attacks", "`shadowfarm report` before any attack", _on_run("report"),
         "/attacks: no attack results; run `shadowfarm attack RUN` first", "run"),
    Case("tune-unknown-attack", "`shadowfarm tune RUN --attack nope`", _on_run("tune", "--attack", "nope", "--quiet"),
         "unknown attack 'nope' (valid:", "run"),
    Case("tune-unknown-metric", "`--metric bogus`", _on_run("tune", "--metric", "bogus", "--quiet"),
         "--metric: expected one of auc, tpr@1%fpr, tpr@0.1%fpr, got 'bogus'", "run"),
    Case("study-target-not-in-run", "`shadowfarm study calibration RUN --targets 99`",
         _on_run("study calibration", "--targets", "99"), "--targets: 99 is not a model id in [0, 8)", "run"),
    Case("study-queries-unknown-attack", "`shadowfarm study queries RUN --attacks nope`",
         _on_run("study queries", "--attacks", "nope"), "unknown attack 'nope' (valid:", "run"),
    Case("study-queries-not-label-only", "`shadowfarm study queries RUN --attacks loss`",
         _on_run("study queries", "--attacks", "loss"), "'loss' is not in the query-budget study: it has no", "run"),
    Case("study-queries-copies-out-of-range", "`shadowfarm study queries RUN --copies 0,4`",
         _on_run("study queries", "--copies", "0,4"), "--copies: expected integers in [1, 1024], got 0", "run"),
    Case("study-queries-bootstrap", "`--bootstrap -1`", _on_run("study queries", "--bootstrap", "-1"),
         "--bootstrap: expected an integer in [0, 10000] (0: no intervals), got -1", "run"),
    Case("audit-nonmember-not-in-population", "`shadowfarm audit RUN --nonmembers FILE` naming example 99999",
         lambda c: ["audit", c.run, "--target", "model:0", "--nonmembers", f"{c.files}/far_ids.txt", "--quiet"],
         "--nonmembers: example id 99999 is not in the population [0, 120)", "run"),
    Case("audit-nonmembers-file-missing", "`--nonmembers` naming no file",
         lambda c: ["audit", c.run, "--target", "model:0", "--nonmembers", f"{c.files}/none.txt", "--quiet"],
         "none.txt: file not found (--nonmembers: a file of example ids)", "run"),
    Case("audit-calibrate-without-nonmembers", "`--calibrate nonmembers` without `--nonmembers`",
         lambda c: ["audit", c.run, "--target", "model:0", "--calibrate", "nonmembers", "--quiet"],
         "--calibrate nonmembers needs known non-members (--nonmembers FILE)", "run"),
    Case("audit-no-reference-pool", "`--nonmembers reference` on a run that reserves none",
         _audit("--target", "model:0", "--nonmembers", "reference"),
         "--nonmembers reference: this run reserves no reference pool (membership.reference)", "run"),
    Case("attack-calibrate-without-pool", "`attack --calibrate nonmembers` on a run with no reference pool",
         lambda c: ["attack", c.run, "--attacks", "gap", "--calibrate", "nonmembers", "--quiet", "--no-report"],
         "--calibrate nonmembers: 0 known non-members (the run's reference pool", "run"),
    Case("cli-unknown-command", "`shadowfarm frobnicate`", lambda c: ["frobnicate"],
         "argument COMMAND: invalid choice: 'frobnicate'", "argparse"),
    Case("attack-fpr-not-a-number", "`--fpr abc`", lambda c: ["attack", f"{c.files}/nothing", "--fpr", "abc"],
         "argument --fpr: invalid float value: 'abc'", "argparse"),
    Case("attack-targets-not-ids", "`--targets a,b`", lambda c: ["attack", f"{c.files}/nothing", "--targets", "a,b"],
         "argument --targets: expected comma-separated model ids, got 'a,b'", "argparse"),
    # ---------------------------------------------------------------- oracle answers (to a batch of 4 inputs)
    Case("oracle-wrong-length", "3 labels for 4 inputs", lambda c: [0, 1, 2],
         "malformed answer: got labels of shape (3,) for a batch of 4; expected one label per input", "oracle"),
    Case("oracle-wrong-shape", "labels of shape (4, 2)", lambda c: np.zeros((4, 2), int),
         "malformed answer: got labels of shape (4, 2) for a batch of 4", "oracle"),
    Case("oracle-non-integer", "labels 0.5, 1, 2, 3", lambda c: [0.5, 1.0, 2.0, 3.0],
         "malformed answer: non-integer labels (e.g. 0.5); expected integer class labels", "oracle"),
    Case("oracle-nan", "a NaN label", lambda c: [0.0, np.nan, 1.0, 2.0],
         "malformed answer: NaN or inf among the labels; expected integer class labels", "oracle"),
    Case("oracle-negative", "a label -1", lambda c: [0, -1, 1, 2],
         "malformed answer: labels in [-1, 2]; expected labels in [0, 9]", "oracle"),
    Case("oracle-out-of-range", "a label 10 from a 10-class target", lambda c: [0, 10, 1, 2],
         "malformed answer: labels in [0, 10]; expected labels in [0, 9]", "oracle"),
    Case("oracle-not-numbers", "labels 'cat', 'dog', ...", lambda c: ["cat", "dog", "cat", "dog"],
         "malformed answer: labels of dtype <U3; expected integer class labels", "oracle"),
    Case("oracle-ragged", "a ragged nested list", lambda c: [[0], [1, 2], 3, 4],
         "malformed answer: not an array of 4 labels (list)", "oracle"),
]

from catalogue_targets import TARGET_CASES  # noqa: E402  (they use Case and the helpers above)

CASES += TARGET_CASES
