"""Typed, frozen run configuration; YAML is only its serialization.

`load_config(path, overrides)` reads a YAML file, applies `--set a.b=value` overrides and returns a validated
`RunConfig`. Unknown keys, wrong types and out-of-range values raise `ConfigError` naming the dotted field (e.g.
``train.epochs``): the types are checked by `farm.typed.build` (from the annotations here), the ranges by `validate`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from farm.errors import ConfigError, shown
from farm.overrides import apply_overrides, read_yaml
from farm.teacher_config import TeacherConfig, check_teacher_config
from farm.typed import build


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the seeded `synthetic` data set (Gaussian class clusters)."""

    n_examples: int = 1000
    n_features: int = 20
    n_classes: int = 2
    separation: float = 1.0


@dataclass(frozen=True)
class DataConfig:
    """Which data set forms the population; see `farm.data.DATASETS` for names."""

    name: str = "digits"
    path: str | None = None  # npz/adult/purchase100-style file, or torchvision root
    download: bool = False  # torchvision only: fetch when missing (never by default)
    split: str = "train"  # torchvision split
    subsample: int | None = None  # population size, seeded; None = all examples
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture; see `farm.models.MODELS` for names."""

    name: str = "mlp"
    hidden: tuple[int, ...] = (256,)  # mlp hidden widths
    width: int = 32  # cnn / resnet18 base channels
    dropout: float = 0.0


@dataclass(frozen=True)
class AugmentationConfig:
    """Training-time data augmentation (images only), drawn per example from each model's own seed."""

    flip: bool = False  # horizontal flip with probability 1/2
    translate: int = 0  # shift by up to this many pixels along each axis (0: off); shifted-in pixels are 0


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Early stopping on a validation split carved out of each model's OWN training members.

    The held-out members stay members of the membership game (the training procedure received them);
    they are never used for a gradient step, only to pick the epoch whose weights are kept.
    """

    patience: int = 0  # epochs without a lower validation loss before stopping; 0: off
    validation_fraction: float = 0.1  # share of the model's members held out for validation


@dataclass(frozen=True)
class DpSgdConfig:
    """DP-SGD through Opacus: Poisson sampling, per-example clipping, Gaussian noise for a target (ε, δ)."""

    epsilon: float = 8.0  # target ε after `train.epochs` epochs
    delta: float = 1e-5
    max_grad_norm: float = 1.0  # per-example clipping norm
    accountant: str = "prv"  # prv | rdp | gdp (Opacus accountants)


@dataclass(frozen=True)
class TrainConfig:
    """Per-model training; every model of a group gets the same settings and its own seed.

    Training-time defenses (DESIGN §7): `weight_decay`, `label_smoothing`, `mixup_alpha`, `augmentation`,
    `early_stopping`, `dp_sgd` here, and `model.dropout`.
    """

    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    epochs: int = 30
    batch_size: int = 128
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0  # MixUp with lambda ~ Beta(alpha, alpha); 0: off
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    dp_sgd: DpSgdConfig | None = None  # None: ordinary training; a mapping (may be {}): DP-SGD


@dataclass(frozen=True)
class MembershipConfig:
    """The membership game (DESIGN §3)."""

    mode: str = "lira"  # lira | disjoint
    n_models: int = 64
    p_in: float = 0.5
    target_ids: tuple[int, ...] = (0,)
    target_fraction: float = 0.5  # disjoint: share of the population in the target pool
    reference: float = 0.0  # share of the population reserved as known non-members of every target


@dataclass(frozen=True)
class QuerySpec:
    """One entry of the query set, e.g. ``{kind: translate, d: 1}``; expanded by `farm.queries`."""

    kind: str
    params: tuple[tuple[str, typing.Any], ...] = ()

    def as_dict(self) -> dict:
        return {"kind": self.kind, **dict(self.params)}

    @classmethod
    def from_plain(cls, value, where: str) -> QuerySpec:
        """``"clean"`` or ``{kind: translate, d: 1}`` -> QuerySpec (`farm.typed` reads query entries with it)."""
        if isinstance(value, str):
            value = {"kind": value}
        if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
            raise ConfigError(f"{where}: expected a mapping with a 'kind', got {shown(value)}")
        params = {k: v for k, v in value.items() if k != "kind"}
        return cls(value["kind"], tuple(sorted(params.items())))


DEFAULT_QUERIES = (QuerySpec("clean"),)


@dataclass(frozen=True)
class FarmConfig:
    """How the farm runs on Ray. Not part of the config hash: it does not change results."""

    group_size: int = 16  # models trained together as one vmapped ensemble
    num_actors: int | None = None  # None: as many as the cluster's resources allow
    num_cpus: float = 1.0  # per trainer actor
    num_gpus: float = 0.0  # per trainer actor; fractional packs several actors on a GPU
    max_retries: int = 3  # restarts of a dead actor / retries of its group
    device: str = "auto"  # auto (cuda when Ray assigned a GPU) | cpu | cuda


@dataclass(frozen=True)
class RunConfig:
    """A whole farm run."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    queries: tuple[QuerySpec, ...] = DEFAULT_QUERIES
    record_logits: bool = True  # clean logits in the shards, for the confidence baselines only
    farm: FarmConfig = field(default_factory=FarmConfig)
    teacher: TeacherConfig | None = None  # None: models train from scratch; a mapping (may be {}): transfer


# Sections that do not change what a run computes: excluded from the hash.
_UNHASHED = ("farm",)
# Fields added after runs existed: left out of the hash while at their defaults, so that a run made
# before they existed keeps its hash (and resumes) as long as it does not use them (so is `teacher` while None).
_HASHED_UNLESS_DEFAULT = {"train": ("mixup_alpha", "augmentation", "early_stopping", "dp_sgd"),
                          "membership": ("reference",)}


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _check_membership(m: MembershipConfig) -> None:
    _check(m.mode in ("lira", "disjoint"), f"membership.mode: expected 'lira' or 'disjoint', got {m.mode!r}")
    _check(m.n_models >= 2, f"membership.n_models: expected at least 2, got {m.n_models}")
    _check(0.0 < m.p_in < 1.0, f"membership.p_in: expected a value in (0, 1), got {m.p_in}")
    _check(0.0 < m.target_fraction < 1.0,
           f"membership.target_fraction: expected a value in (0, 1), got {m.target_fraction}")
    _check(len(m.target_ids) >= 1, "membership.target_ids: expected at least one model id")
    _check(0.0 <= m.reference < 1.0, f"membership.reference: expected a value in [0, 1), got {m.reference}")
    for i in m.target_ids:
        _check(0 <= i < m.n_models, f"membership.target_ids: {i} is not a model id in [0, {m.n_models})")
    if m.mode == "disjoint":
        _check(len(m.target_ids) < m.n_models, "membership.target_ids: disjoint mode needs at least one shadow")


def _check_train(t: TrainConfig) -> None:
    _check(t.optimizer in ("adam", "sgd"), f"train.optimizer: expected 'adam' or 'sgd', got {t.optimizer!r}")
    _check(t.lr > 0, f"train.lr: expected a positive number, got {t.lr}")
    _check(t.epochs >= 1, f"train.epochs: expected at least 1, got {t.epochs}")
    _check(t.batch_size >= 1, f"train.batch_size: expected at least 1, got {t.batch_size}")
    _check(t.weight_decay >= 0, f"train.weight_decay: expected >= 0, got {t.weight_decay}")
    _check(0 <= t.label_smoothing < 1, f"train.label_smoothing: expected a value in [0, 1), got {t.label_smoothing}")
    _check(t.mixup_alpha >= 0, f"train.mixup_alpha: expected >= 0, got {t.mixup_alpha}")
    shift = t.augmentation.translate
    _check(shift >= 0, f"train.augmentation.translate: expected >= 0, got {shift}")
    es = t.early_stopping
    _check(es.patience >= 0, f"train.early_stopping.patience: expected >= 0, got {es.patience}")
    _check(0 < es.validation_fraction < 1,
           f"train.early_stopping.validation_fraction: expected a value in (0, 1), got {es.validation_fraction}")
    if t.dp_sgd is not None:
        _check_dp_sgd(t)


def _check_dp_sgd(t: TrainConfig) -> None:
    dp = t.dp_sgd
    _check(dp.epsilon > 0, f"train.dp_sgd.epsilon: expected a positive number, got {dp.epsilon}")
    _check(0 < dp.delta < 1, f"train.dp_sgd.delta: expected a value in (0, 1), got {dp.delta}")
    _check(dp.max_grad_norm > 0, f"train.dp_sgd.max_grad_norm: expected a positive number, got {dp.max_grad_norm}")
    _check(dp.accountant in ("prv", "rdp", "gdp"),
           f"train.dp_sgd.accountant: expected prv, rdp or gdp, got {dp.accountant!r}")
    # MixUp mixes two examples into one gradient and early stopping selects weights on data outside
    # the DP mechanism: either would void the per-example (ε, δ) guarantee.
    _check(t.mixup_alpha == 0, "train.dp_sgd: cannot be combined with train.mixup_alpha (breaks per-example "
                               "clipping); set train.mixup_alpha=0")
    _check(t.early_stopping.patience == 0, "train.dp_sgd: cannot be combined with train.early_stopping (model "
                                           "selection is not private); set train.early_stopping.patience=0")
    _check(not (t.augmentation.flip or t.augmentation.translate),
           "train.dp_sgd: train.augmentation is not supported with DP-SGD (Poisson batches); turn it off")


def _check_farm(f: FarmConfig) -> None:
    _check(f.group_size >= 1, f"farm.group_size: expected at least 1, got {f.group_size}")
    _check(f.num_actors is None or f.num_actors >= 1, f"farm.num_actors: expected at least 1, got {f.num_actors}")
    _check(f.num_cpus > 0, f"farm.num_cpus: expected a positive number, got {f.num_cpus}")
    _check(f.num_gpus >= 0, f"farm.num_gpus: expected >= 0, got {f.num_gpus}")
    _check(f.max_retries >= 0, f"farm.max_retries: expected >= 0, got {f.max_retries}")
    _check(f.device in ("auto", "cpu", "cuda"), f"farm.device: expected auto, cpu or cuda, got {f.device!r}")


def validate(cfg: RunConfig) -> RunConfig:
    """Range checks that types cannot express, section by section. Registry names are checked by their registries."""
    _check(cfg.seed >= 0, f"seed: expected an integer >= 0, got {cfg.seed}")
    _check_membership(cfg.membership)
    _check_train(cfg.train)
    _check(0 <= cfg.model.dropout < 1, f"model.dropout: expected a value in [0, 1), got {cfg.model.dropout}")
    _check(all(h >= 1 for h in cfg.model.hidden), "model.hidden: expected positive widths")
    _check(cfg.model.width >= 1, f"model.width: expected at least 1, got {cfg.model.width}")
    _check_farm(cfg.farm)
    d = cfg.data
    _check(d.subsample is None or d.subsample >= 2, f"data.subsample: expected at least 2, got {d.subsample}")
    _check(len(cfg.queries) >= 1, "queries: expected at least one query")
    if cfg.teacher is not None:
        check_teacher_config(cfg.teacher)
    return cfg


# ---------------------------------------------------------------- public API


def from_dict(data: dict, cls=RunConfig):
    """Build and validate a config of type `cls` from plain data."""
    cfg = build(cls, data)
    return validate(cfg) if cls is RunConfig else cfg


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = (), cls=RunConfig):
    """Read YAML (or defaults when `path` is None), apply overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    return from_dict(apply_overrides(data, overrides), cls)


def to_dict(cfg) -> dict:
    """Plain JSON-able data that `from_dict` turns back into an equal config."""
    def conv(v):
        if isinstance(v, QuerySpec):
            return v.as_dict()
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v
    return conv(cfg)


def config_hash(cfg: RunConfig) -> str:
    """Hash of everything that changes what a run computes (not how it is scheduled)."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in _UNHASHED and not (k == "teacher" and v is None)}
    for section, names in _HASHED_UNLESS_DEFAULT.items():
        default = to_dict(type(getattr(cfg, section))())
        for name in names:
            if data[section][name] == default[name]:
                del data[section][name]
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_seed(run_seed: int, model_id: int) -> int:
    """Seed of one model, a pure function of (run seed, model_id)."""
    digest = hashlib.sha256(f"{run_seed}:{model_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
