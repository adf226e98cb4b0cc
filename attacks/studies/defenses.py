"""The defense × attack matrix (DESIGN §7): one farm per training-time defense, every attack on each,
every output-side defense applied to each; `studies/defenses.parquet`, a table and a figure.

A study folder holds one ordinary run directory per training-time defense setting, named by its label
(`none`, `weight_decay=0.01`, `dp_sgd=8`, ...), each trained with `farm.driver.train_farm` and attacked
with `attacks.stage.attack_run` (so `shadowfarm attack/report` work on each), plus (`attacks.artifacts`):

    <study>/study.json                 the settings, each farm's overrides, timings, machine
    <study>/studies/defenses.parquet   one row per (training defense, output defense, attack): `MATRIX_SCHEMA`
    <study>/none/studies/defenses.parquet  a copy in the undefended farm, whose report gets the Defenses section

`run_study` returns the matrix; the job (`jobs/study/defenses.py`) then writes <study>/report/ and the undefended
farm's report with `attacks.report.defenses.write_study_report`. Decisions:
- Training-time defenses are a registry of config overrides for a strength (`TRAINING_DEFENSES`); a
  setting is `name` (its default strengths) or `name=v1:v2`. `dp_sgd` also sets the batch size and
  learning rate it needs (noisy clipped gradients want large batches); `--set-for NAME:KEY=VALUE`
  changes any farm's settings.
- Output-side defenses mask only the logits (`attacks.oracles.output_defenses`): the confidence baselines
  play the attack stage's shadow game again on the masked responses; a label-only attack reads
  `responses.without_logits()`, which masking leaves bit-identical, so its row is the undefended one
  (checked here array by array, `same_as_undefended`).
- Everything is validated before any file is written. Farms train one after another (each on all
  actors); the attack stage then runs one Ray task per farm (1 CPU, one BLAS/OpenMP thread: with two
  threads on a busy 2-core machine the gradient-boosted baseline ran 35x slower).
- Test accuracy is the mean over the farm's models, each on its own non-members; ε the mean spent ε.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import ray

from attacks.artifacts import MATRIX, MATRIX_FPRS, MATRIX_SCHEMA, STUDY_JSON, write_study
from attacks.loader import load_responses
from attacks.modes import split_targets
from attacks.oracles.output_defenses import OUTPUT_DEFENSES, defended_responses
from attacks.registry import attack_with, get_attack
from attacks.stage import AttackOptions, attack_run
from attacks.stats.metrics import evaluate, fpr_column, fpr_key, reported_fprs
from attacks.stats.shadow_game import play
from farm.cluster import ensure_ray
from farm.config import from_dict, load_config, to_dict
from farm.defenses import check_defenses
from farm.driver import train_farm
from farm.errors import ConfigError, unknown_name
from farm.plan import Plan, plan_run
from farm.storage import RunDir


@dataclass(frozen=True)
class TrainingDefense:
    """A training-time defense: `overrides(value)` are config --set items; `extra` go with every value."""

    name: str
    overrides: Callable[[float], list[str]]
    defaults: tuple[float, ...]
    extra: tuple[str, ...] = ()
    description: str = ""


TRAINING_DEFENSES: dict[str, TrainingDefense] = {d.name: d for d in (
    TrainingDefense("none", lambda v: [], (), description="no defense: the config as it is"),
    TrainingDefense("weight_decay", lambda v: [f"train.weight_decay={v}"], (1e-3, 1e-2, 3e-2, 1e-1),
                    description="L2 penalty (train.weight_decay)"),
    TrainingDefense("label_smoothing", lambda v: [f"train.label_smoothing={v}"], (0.2,),
                    description="label smoothing (train.label_smoothing)"),
    TrainingDefense("dropout", lambda v: [f"model.dropout={v}"], (0.5,), description="dropout (model.dropout)"),
    TrainingDefense("mixup", lambda v: [f"train.mixup_alpha={v}"], (1.0,),
                    description="MixUp, lambda ~ Beta(alpha, alpha) (train.mixup_alpha)"),
    TrainingDefense("early_stopping", lambda v: [f"train.early_stopping.patience={int(v)}"], (3,),
                    description="early stopping on 10% of each model's own members (train.early_stopping)"),
    TrainingDefense("train_augmentation", lambda v: [f"train.augmentation.translate={int(v)}"], (1,),
                    description="random shifts of up to v pixels (train.augmentation)"),
    TrainingDefense("dp_sgd", lambda v: [f"train.dp_sgd.epsilon={v}"], (8.0,),
                    extra=("train.batch_size=256", "train.lr=0.01"),
                    description="DP-SGD via Opacus at target ε = v, δ = 1e-5, clip 1 (train.dp_sgd)"),
)}
DEFAULT_DEFENSES = tuple(TRAINING_DEFENSES)


@dataclass(frozen=True)
class DefenseSetting:
    """One farm of the study: `label` names its run directory."""

    name: str
    value: float | None
    overrides: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.name if self.value is None else f"{self.name}={self.value:g}"


def parse_defenses(items: Sequence[str], *, set_for: Sequence[str] = ()) -> list[DefenseSetting]:
    """`["none", "weight_decay=1e-3:1e-2", "dp_sgd"]` -> settings; set_for: "NAME:KEY=VALUE" extra overrides."""
    extra: dict[str, list[str]] = {}
    for text in set_for:
        name, sep, override = text.partition(":")
        if not sep or "=" not in override:
            raise ConfigError(f"--set-for {text!r}: expected DEFENSE:KEY=VALUE, e.g. dp_sgd:train.lr=0.02")
        if name not in TRAINING_DEFENSES:
            raise unknown_name("training defense", name, TRAINING_DEFENSES)
        extra.setdefault(name, []).append(override)
    settings = []
    for item in items:
        name, _, values = item.partition("=")
        if name not in TRAINING_DEFENSES:
            raise unknown_name("training defense", name, TRAINING_DEFENSES)
        spec = TRAINING_DEFENSES[name]
        try:
            chosen = [float(v) for v in values.split(":")] if values else list(spec.defaults)
        except ValueError:
            raise ConfigError(f"--defenses {item!r}: expected NAME or NAME=V1:V2, numbers after '='") from None
        if name == "none" and values:
            raise ConfigError("--defenses none: takes no value")
        for value in chosen or [None]:
            overrides = (*spec.extra, *spec.overrides(value), *extra.get(name, []))
            settings.append(DefenseSetting(name, value, tuple(overrides)))
    labels = [s.label for s in settings]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--defenses: a setting repeats ({', '.join(labels)})")
    return settings


@dataclass(frozen=True)
class StudyOptions:
    config: str | None  # YAML path (None: defaults)
    out: str
    overrides: tuple[str, ...] = ()
    defenses: tuple[DefenseSetting, ...] = field(default_factory=lambda: tuple(parse_defenses(DEFAULT_DEFENSES)))
    output_defenses: tuple[str, ...] = tuple(OUTPUT_DEFENSES)
    attack: AttackOptions = AttackOptions(n_pseudo=2, bootstrap=0)


def farm_uri(options: StudyOptions, setting: DefenseSetting) -> str:
    """The run directory of one farm of the study."""
    return f"{options.out.rstrip('/')}/{setting.label}"


def baseline_run(options: StudyOptions) -> RunDir | None:
    """The undefended farm (`none`), whose report shows the Defenses section; None when the study has none."""
    setting = next((s for s in options.defenses if s.name == "none"), None)
    return None if setting is None else RunDir(farm_uri(options, setting))


def plan_study(options: StudyOptions) -> list[tuple[DefenseSetting, Plan]]:
    """Every farm's validated plan; nothing is written. ConfigError naming the defense otherwise."""
    for name in options.output_defenses:
        if name not in OUTPUT_DEFENSES:
            raise unknown_name("output defense", name, OUTPUT_DEFENSES)
    for name in options.attack.attacks or ():
        get_attack(name)
    plans = []
    for setting in options.defenses:
        try:
            cfg = load_config(options.config, [*options.overrides, *setting.overrides])
            plan = plan_run(cfg, farm_uri(options, setting))
            check_defenses(cfg, info=plan.dataset.info)
        except ConfigError as exc:
            raise ConfigError(f"defense {setting.label}: {exc}") from None
        plans.append((setting, plan))
    return plans


def evaluate_attack(name: str, responses, *, targets: Sequence[int], shadows: np.ndarray,
                    options: AttackOptions) -> dict:
    """The runner's metrics of one attack on `responses` (e.g. masked ones): targets pooled, thresholds from
    the shadow game, exactly as `attacks.stage.attack_run` computes them (same settings, pseudo-targets)."""
    fprs = reported_fprs(options.fpr)
    game = play(attack_with(name, options.settings.get(name)), responses, targets=targets, shadows=shadows,
                n_pseudo=options.n_pseudo, seed=options.seed, fprs=fprs)
    return evaluate(game.scores, game.member, thresholds=game.thresholds, fprs=fprs)


def farm_stats(run: RunDir) -> dict:
    """Mean train/test accuracy and spent ε over a farm's models (from models/*/metrics.json)."""
    records = [run.read_json(f"models/{d}/metrics.json") for d in run.listdir("models")
               if run.is_file(f"models/{d}/metrics.json")]
    def mean(key):
        values = [r[key] for r in records if r.get(key) is not None]
        return float(np.mean(values)) if values else math.nan
    return {"test_accuracy": mean("test_accuracy"), "train_accuracy": mean("train_accuracy"),
            "epsilon": mean("epsilon"), "n_models": len(records)}


def _row(metrics: dict, *, setting: DefenseSetting, output: str, label_only: bool, same: bool, stats: dict) -> dict:
    return {"defense": setting.label if output == "none" else f"{setting.label} + {output}",
            "training_defense": setting.name, "strength": math.nan if setting.value is None else setting.value,
            "output_defense": output, "attack": metrics["attack"], "label_only": label_only,
            "auc": metrics["auc"],
            **{fpr_column("tpr_at_fpr", f): metrics["tpr_at_fpr"][fpr_key(f)] for f in MATRIX_FPRS},
            "balanced_accuracy": math.nan if metrics["balanced_accuracy"] is None else metrics["balanced_accuracy"],
            "n_members": metrics["n_members"], "n_nonmembers": metrics["n_nonmembers"], "same_as_undefended": same,
            "test_accuracy": stats["test_accuracy"], "train_accuracy": stats["train_accuracy"],
            "epsilon": stats["epsilon"], "run": setting.label}


def attack_farm(run_uri: str, setting: DefenseSetting, *, options: AttackOptions,
                output_defenses: Sequence[str]) -> list[dict]:
    """Matrix rows of one farm: every attack undefended, then every output defense on the logits."""
    results = [r for r in attack_run(run_uri, options, progress=False) if "skipped" not in r]
    run, stats = RunDir(run_uri), farm_stats(RunDir(run_uri))
    rows = [_row(r, setting=setting, output="none", label_only=r["label_only"], same=True, stats=stats)
            for r in results]
    responses = load_responses(run)
    targets, shadows = split_targets(from_dict(run.read_json("run.json")["config"]).membership, options.targets)
    label_view = responses.without_logits()
    for output in output_defenses:
        masked = defended_responses(responses, output)
        same = _same_arrays(masked.without_logits(), label_view)
        for r in results:
            if r["label_only"] or get_attack(r["attack"]).white_box:  # white-box reads unmasked weights
                rows.append(_row(r, setting=setting, output=output, label_only=r["label_only"], same=same, stats=stats))
            else:
                metrics = {"attack": r["attack"], **evaluate_attack(r["attack"], masked, targets=targets,
                                                                   shadows=shadows, options=options)}
                rows.append(_row(metrics, setting=setting, output=output, label_only=False, same=False, stats=stats))
    return rows


def _same_arrays(a, b) -> bool:
    return (a.logits is None and b.logits is None and all(np.array_equal(getattr(a, k), getattr(b, k))
            for k in ("member", "pred", "labels")) and a.query_kinds == b.query_kinds
            and a.query_params == b.query_params)


@ray.remote(num_cpus=1)
def _attack_farm_task(run_uri, setting, options, output_defenses):
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(1):
        return attack_farm(run_uri, setting, options=options, output_defenses=output_defenses)


def run_study(options: StudyOptions, *, progress: bool = True, log=print) -> pa.Table:
    """Train every farm, attack each, write studies/defenses.parquet (into the study and its undefended farm)
    and study.json; returns the matrix."""
    plans = plan_study(options)
    started, load_at_start = time.perf_counter(), os.getloadavg()
    farms = _train_farms(plans, progress=progress, log=log)
    trained_at = time.perf_counter()
    rows_of = _attack_farms(plans, options, log=log)
    table = pa.Table.from_pylist([row for setting, _ in plans for row in rows_of[setting.label]], schema=MATRIX_SCHEMA)
    study = RunDir(options.out)
    write_study(study, MATRIX, table)
    baseline = baseline_run(options)
    if baseline is not None:  # DESIGN §2 keeps studies inside a run: the undefended farm's report shows it
        write_study(baseline, MATRIX, table)
    finished = time.perf_counter()
    study.write_json(STUDY_JSON, {
        "config": options.config, "overrides": list(options.overrides), "farms": farms,
        "output_defenses": list(options.output_defenses), "attack_options": to_dict(options.attack),
        "base_config": to_dict(plans[0][1].cfg) if plans else None,
        "seconds": {"train": trained_at - started, "attack": finished - trained_at, "total": finished - started},
        "machine": {"platform": platform.platform(), "cpus": ray.cluster_resources().get("CPU"),
                    "load_average_start": load_at_start, "load_average_end": os.getloadavg()},
    })
    return table


def _train_farms(plans: list[tuple[DefenseSetting, Plan]], *, progress: bool, log) -> dict[str, dict]:
    """Train the farms one after another (each on all actors); {label: what study.json says of its training}."""
    farms = {}
    for setting, plan in plans:
        start = time.perf_counter()
        trained = train_farm(plan, progress=progress)
        farms[setting.label] = {"overrides": list(setting.overrides), "config_hash": plan.config_hash,
                                "trained_now": len(trained), "train_seconds": time.perf_counter() - start}
        log(f"farm {setting.label}: {len(trained)} model(s) trained in {farms[setting.label]['train_seconds']:.0f} s")
    return farms


def _attack_farms(plans: list[tuple[DefenseSetting, Plan]], options: StudyOptions, *, log) -> dict[str, list[dict]]:
    """{label: matrix rows}: one Ray task per farm, at most one per CPU in flight."""
    ensure_ray()
    # At most one farm per CPU in flight: a task waiting for its transfer subtasks lends them its CPU, and
    # Ray would otherwise start another farm on it (three farms on two cores, each slower).
    queue, pending, rows_of = list(reversed(plans)), {}, {}
    in_flight = max(1, int(ray.cluster_resources().get("CPU", 1)))
    while queue or pending:
        while queue and len(pending) < in_flight:
            setting, plan = queue.pop()
            pending[_attack_farm_task.remote(plan.run.uri, setting, options.attack,
                                             tuple(options.output_defenses))] = setting
        [ref], _ = ray.wait(list(pending), num_returns=1)
        setting = pending.pop(ref)
        rows_of[setting.label] = ray.get(ref)
        log(f"farm {setting.label}: attacked ({len(rows_of[setting.label])} matrix rows)")
    return rows_of
