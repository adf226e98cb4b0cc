"""Data registry: every data set becomes one `Dataset` (the population) with a declared kind.

Perturbations and models read only `DatasetInfo` (kind, shape, binary features, bounds):
there are no dataset branches elsewhere.

`load_dataset(cfg, seed=...)` looks `cfg.name` up in `DATASETS`, loads, validates and
(optionally) subsamples. Each entry reads its source into raw arrays (`farm.readers`), then
declares the population: every loader returns `x` float32[N, *shape] C-contiguous and
`y` int64[N]; `num_classes` is `max(y) + 1` of the full data set (before subsampling).
No loader touches the network unless `data.download: true` (torchvision only).
`data.split` is read by the torchvision loaders only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from farm.config import DataConfig
from farm.errors import DataError, unknown_name
from farm.readers import (
    TORCHVISION,
    make_synthetic,
    read_adult,
    read_digits,
    read_label_first,
    read_npz,
    read_torchvision,
    seeded_rng,
)

_MAX_LABEL = 2**15 - 1  # responses.parquet stores labels as int16 (DESIGN §2)
_SUBSAMPLE_STREAM = 2  # RNG stream of the subsample, derived from the run seed (farm.readers: synthetic on 1)


@dataclass(frozen=True)
class DatasetInfo:
    """What perturbations and models may know about a data set (no arrays)."""

    name: str
    kind: str  # "image" | "tabular"
    shape: tuple[int, ...]  # one example: (C, H, W) for images, (D,) for tabular
    num_classes: int
    binary_features: tuple[bool, ...] | None = None  # tabular: which features are 0/1
    bounds: tuple[float, float] = (0.0, 1.0)  # valid feature range, for clipping

    @property
    def has_binary(self) -> bool:
        return bool(self.binary_features) and any(self.binary_features)

    @property
    def has_continuous(self) -> bool:
        return self.binary_features is None or not all(self.binary_features)


@dataclass(frozen=True, eq=False)
class Dataset:
    """The population: `x` float32[N, *info.shape], `y` int64[N] in [0, num_classes)."""

    info: DatasetInfo
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


# ---------------------------------------------------------------- validation


def _validate(x: np.ndarray, y: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Check a loaded pair; return `x` float32 C-contiguous and `y` int64, or raise `DataError`."""
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{source}: y must be one label per example, got shape {y.shape}")
    if x.ndim == 0 or len(x) == 0 or x[0].size == 0:
        raise DataError(f"{source}: x is empty (shape {x.shape})")
    if len(x) != len(y):
        raise DataError(f"{source}: x has {len(x)} rows but y has {len(y)}")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{source}: x must be numeric, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{source}: x contains NaN or inf")
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise DataError(f"{source}: y must be integer class labels, found non-integer values")
    elif y.dtype.kind not in "biu":
        raise DataError(f"{source}: y must be integer class labels, got dtype {y.dtype}")
    if y.min() < 0 or y.max() > _MAX_LABEL:
        raise DataError(f"{source}: labels must be in [0, {_MAX_LABEL}], got [{y.min()}, {y.max()}]")
    y = y.astype(np.int64)
    n_classes = len(np.unique(y))
    if len(y) < 2 or n_classes < 2:
        raise DataError(f"{source}: need at least 2 examples and 2 classes, got {len(y)} example(s) "
                        f"of {n_classes} class(es)")
    return x, y


def _dataset(name: str, kind: str, x, y, source: str, *, binary=None, bounds=None) -> Dataset:
    x, y = _validate(x, y, source)
    if bounds is None:
        bounds = (float(x.min()), float(x.max()))
    info = DatasetInfo(name=name, kind=kind, shape=tuple(x.shape[1:]), num_classes=int(y.max()) + 1,
                       binary_features=None if binary is None else tuple(bool(b) for b in binary),
                       bounds=(float(bounds[0]), float(bounds[1])))
    return Dataset(info=info, x=x, y=y)


def _with_binary_columns(data: Dataset) -> Dataset:
    """Mark the tabular columns whose values are all 0 or 1 as binary features."""
    binary = tuple(bool(b) for b in ((data.x == 0) | (data.x == 1)).all(axis=0))
    return replace(data, info=replace(data.info, binary_features=binary))


# ---------------------------------------------------------------- the registry: sources (farm.readers) as populations


def _digits(cfg: DataConfig, seed: int) -> Dataset:
    """scikit-learn digits: 1797 images (1, 8, 8) in [0, 1], 10 classes."""
    x, y = read_digits()
    return _dataset("digits", "image", x, y, "sklearn digits", bounds=(0, 1))


def _adult(cfg: DataConfig, seed: int) -> Dataset:
    """UCI Adult: the shipped copy (`farm/datasets/adult.csv.gz`, 32,561 rows) or `data.path`.

    Reads the UCI raw format (`adult.data`/`adult.test`: no header, ", "-separated, '?' for
    missing, labels '>50K'/'<=50K' with an optional trailing '.') or the same columns with a
    header row. Rows with any missing value are dropped (2,399 of the shipped 32,561, leaving
    30,162). Features, float32[N, 104] for the shipped file: the 6 numeric columns (fnlwgt
    included) standardized to mean 0 / std 1, then the 8 categorical columns one-hot (the
    `binary_features`, in sorted category order). Label 1 = '>50K' (about 24.9%).
    """
    x, y, binary, source = read_adult(cfg)
    return _dataset("adult", "tabular", x, y, source, binary=binary)


def _npz(cfg: DataConfig, seed: int) -> Dataset:
    """Arrays `x` (numeric [N, D], [N, H, W] or [N, C, H, W]) and `y` (integer labels [N]) at `data.path`.

    4-d and 3-d `x` are images (a channel axis is added to [N, H, W]; bounds (0, 1) when x is
    already in [0, 1], else its min/max); 2-d `x` is tabular, with the columns whose values are
    all 0 or 1 marked binary and bounds = min/max of x.
    """
    x, y, source = read_npz(cfg)
    if x.ndim == 4:
        data = _dataset("npz", "image", x, y, source)
        lo, hi = data.info.bounds
        return replace(data, info=replace(data.info, bounds=(0.0, 1.0))) if lo >= 0 and hi <= 1 else data
    return _with_binary_columns(_dataset("npz", "tabular", x, y, source))


def _synthetic(cfg: DataConfig, seed: int) -> Dataset:
    """Gaussian class clusters (`farm.readers.make_synthetic`): float32[n_examples, n_features]."""
    x, y = make_synthetic(cfg, seed)
    return _dataset("synthetic", "tabular", x, y, "data.synthetic", binary=[False] * cfg.synthetic.n_features)


def _label_first(name: str, n_features: int, cfg: DataConfig, seed: int) -> Dataset:
    """Shokri et al.'s CSV files (`label, f1, ..., f{n_features}`), 0/1 features marked binary."""
    x, y, source = read_label_first(name, n_features, cfg)
    return _with_binary_columns(_dataset(name, "tabular", x, y, source))


def _torchvision(name: str, cfg: DataConfig, seed: int) -> Dataset:
    """A torchvision data set from the local root `data.path`: float32[N, C, H, W] in [0, 1]."""
    x, y, source = read_torchvision(name, cfg)
    return _dataset(name, "image", x, y, source, bounds=(0, 1))


DATASETS: dict[str, Callable[[DataConfig, int], Dataset]] = {
    "digits": _digits,
    "adult": _adult,
    "npz": _npz,
    "synthetic": _synthetic,
    "purchase100": partial(_label_first, "purchase100", 600),
    "location30": partial(_label_first, "location30", 446),
    **{name: partial(_torchvision, name) for name in TORCHVISION},
}


def load_dataset(cfg: DataConfig, *, seed: int) -> Dataset:
    """The population for `cfg`: `x` float32[N, *info.shape], `y` int64[N].

    With `cfg.subsample` set, N = subsample examples drawn without replacement by a RNG
    derived from `seed` (same seed, same examples, kept in their original order);
    `info` (num_classes, bounds) still describes the full data set.
    """
    if cfg.name not in DATASETS:
        raise unknown_name("dataset", cfg.name, DATASETS)
    data = DATASETS[cfg.name](cfg, seed)
    if cfg.subsample is None:
        return data
    if cfg.subsample > len(data):
        raise DataError(f"data.subsample: {cfg.subsample} exceeds the {len(data)} examples of {cfg.name}")
    rng = seeded_rng(seed, _SUBSAMPLE_STREAM)
    keep = np.sort(rng.choice(len(data), size=cfg.subsample, replace=False))
    x, y = _validate(data.x[keep], data.y[keep], "data.subsample")
    return Dataset(info=data.info, x=x, y=y)
