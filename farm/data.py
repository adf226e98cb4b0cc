"""Data registry: every data set becomes one `Dataset` (the population) with a declared kind.

Perturbations and models read only `DatasetInfo` (kind, shape, binary features, bounds):
there are no dataset branches elsewhere.

`load_dataset(cfg, seed=...)` looks `cfg.name` up in `DATASETS`, loads, validates and
(optionally) subsamples. Every loader returns `x` float32[N, *shape] C-contiguous and
`y` int64[N]; `num_classes` is `max(y) + 1` of the full data set (before subsampling).
No loader touches the network unless `data.download: true` (torchvision only).
`data.split` is read by the torchvision loaders only.
"""

from __future__ import annotations

import importlib.resources
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from farm.config import DataConfig
from farm.errors import ConfigError, DataError, unknown_name

_MAX_LABEL = 2**15 - 1  # responses.parquet stores labels as int16 (DESIGN §2)
_SYNTHETIC_STREAM, _SUBSAMPLE_STREAM = 1, 2  # independent RNG streams derived from the run seed


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


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


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


def _file(cfg: DataConfig, what: str) -> Path:
    if cfg.path is None:
        raise DataError(f"data.path: the {cfg.name} data set needs {what}")
    path = Path(cfg.path).expanduser()
    if path.is_dir():
        raise DataError(f"{path}: is a directory; data.path of the {cfg.name} data set must be a file")
    if not path.is_file():
        raise DataError(f"{path}: file not found (data.path)")
    return path


def _rng(seed: int, stream: int) -> np.random.Generator:
    if seed < 0:  # numpy seeds must be non-negative
        raise ConfigError(f"seed: expected a non-negative integer, got {seed}")
    return np.random.default_rng([seed, stream])


def _read_error(path, error: BaseException) -> DataError:
    return DataError(f"{path}: cannot read ({_one_line(error)})")


# ---------------------------------------------------------------- loaders


def _load_digits(cfg: DataConfig, seed: int) -> Dataset:
    """scikit-learn digits (ships offline): 1797 images (1, 8, 8) in [0, 1], 10 classes."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return _dataset("digits", "image", (x / 16.0).reshape(-1, 1, 8, 8), y, "sklearn digits", bounds=(0, 1))


_ADULT_NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
_ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
                  "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
                  "hours-per-week", "native-country", "income"]


def _load_adult(cfg: DataConfig, seed: int) -> Dataset:
    """UCI Adult: the shipped copy (`farm/datasets/adult.csv.gz`, 32,561 rows) or `data.path`.

    Reads the UCI raw format (`adult.data`/`adult.test`: no header, ", "-separated, '?' for
    missing, labels '>50K'/'<=50K' with an optional trailing '.') or the same columns with a
    header row. Rows with any missing value are dropped (2,399 of the shipped 32,561, leaving
    30,162). Features, float32[N, 104] for the shipped file: the 6 numeric columns (fnlwgt
    included) standardized to mean 0 / std 1, then the 8 categorical columns one-hot (the
    `binary_features`, in sorted category order). Label 1 = '>50K' (about 24.9%).
    """
    import pandas as pd

    if cfg.path is None:
        ref = importlib.resources.files("farm") / "datasets/adult.csv.gz"
        with importlib.resources.as_file(ref) as path:
            return _adult_from(path, pd)
    return _adult_from(_file(cfg, "a path to the UCI Adult file"), pd)


def _adult_from(path: Path, pd) -> Dataset:
    try:
        df = pd.read_csv(path, header=None, dtype=str, skipinitialspace=True, na_values="?", comment="|")
    except (OSError, ValueError) as e:
        raise _read_error(path, e) from None
    if df.shape[1] != len(_ADULT_COLUMNS):
        raise DataError(f"{path}: expected {len(_ADULT_COLUMNS)} columns (14 UCI Adult attributes and "
                        f"the income label), got {df.shape[1]}")
    if len(df) and pd.notna(df.iat[0, 0]) and not df.iat[0, 0].isdigit():  # a header: names are positional
        df = df.iloc[1:]
    df.columns = _ADULT_COLUMNS
    df = df.dropna()
    label = df["income"].str.strip().str.rstrip(".")
    bad = sorted(set(label) - {">50K", "<=50K"})
    if bad:
        raise DataError(f"{path}: income labels must be '>50K' or '<=50K', found {bad[:3]}")
    try:
        numeric = df[_ADULT_NUMERIC].astype(np.float64)
    except ValueError as e:
        raise DataError(f"{path}: non-numeric value in a numeric column ({_one_line(e)})") from None
    std = numeric.std(ddof=0).replace(0.0, 1.0)
    numeric = (numeric - numeric.mean()) / std
    categorical = [c for c in _ADULT_COLUMNS[:-1] if c not in _ADULT_NUMERIC]
    onehot = pd.get_dummies(df[categorical], dtype=np.float64)
    x = np.concatenate([numeric.to_numpy(), onehot.to_numpy()], axis=1)
    binary = [False] * numeric.shape[1] + [True] * onehot.shape[1]
    return _dataset("adult", "tabular", x, (label == ">50K").to_numpy(np.int64), str(path), binary=binary)


def _load_npz(cfg: DataConfig, seed: int) -> Dataset:
    """Arrays `x` (numeric [N, D], [N, H, W] or [N, C, H, W]) and `y` (integer labels [N]) at `data.path`.

    4-d and 3-d `x` are images (a channel axis is added to [N, H, W]; bounds (0, 1) when x is
    already in [0, 1], else its min/max); 2-d `x` is tabular, with the columns whose values are
    all 0 or 1 marked binary and bounds = min/max of x.
    """
    path = _file(cfg, "a path to an .npz file with arrays x and y")
    try:
        with open(path, "rb") as f:
            is_zip = f.read(2) == b"PK"
        if not is_zip:  # np.load would try, and refuse, to unpickle it; an .npy holds only one array
            raise DataError(f"{path}: not an .npz archive (save one with numpy.savez(path, x=x, y=y))")
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise DataError(f"{path}: missing array(s) {missing} (found: {archive.files})")
            x, y = _array(archive, "x", path), _array(archive, "y", path)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise _read_error(path, e) from None
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim not in (2, 4):
        raise DataError(f"{path}: x must be [N, D], [N, H, W] or [N, C, H, W], got shape {x.shape}")
    if x.ndim == 4:
        data = _dataset("npz", "image", x, y, str(path))
        lo, hi = data.info.bounds
        return replace(data, info=replace(data.info, bounds=(0.0, 1.0))) if lo >= 0 and hi <= 1 else data
    return _with_binary_columns(_dataset("npz", "tabular", x, y, str(path)))


def _array(archive, name: str, path: Path) -> np.ndarray:
    try:
        return archive[name]
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise
        # Object arrays are pickles: loading one could run code from the file, so it is never done.
        raise DataError(f"{path}: array {name!r} holds Python objects (a pickle), which shadowfarm never loads; "
                        "save numeric arrays, e.g. numpy.savez(path, x=x.astype('float32'), y=y.astype('int64'))"
                        ) from None


def _with_binary_columns(data: Dataset) -> Dataset:
    """Mark the tabular columns whose values are all 0 or 1 as binary features."""
    binary = tuple(bool(b) for b in ((data.x == 0) | (data.x == 1)).all(axis=0))
    return replace(data, info=replace(data.info, binary_features=binary))


def _load_synthetic(cfg: DataConfig, seed: int) -> Dataset:
    """Gaussian class clusters: means ~ N(0, separation²) per feature, unit noise; balanced classes.

    float32[n_examples, n_features], a pure function of (`data.synthetic`, run seed).
    """
    s = cfg.synthetic
    checks = (("n_classes", s.n_classes >= 2, ">= 2"), ("n_features", s.n_features >= 1, ">= 1"),
              ("n_examples", s.n_examples >= max(2, s.n_classes), ">= n_classes"),
              ("separation", s.separation >= 0, ">= 0"))
    for field, ok, need in checks:
        if not ok:
            raise ConfigError(f"data.synthetic.{field}: expected {need}, got {getattr(s, field)}")
    rng = _rng(seed, _SYNTHETIC_STREAM)
    means = rng.normal(scale=s.separation, size=(s.n_classes, s.n_features))
    y = rng.permutation(np.arange(s.n_examples) % s.n_classes)
    x = means[y] + rng.normal(size=(s.n_examples, s.n_features))
    return _dataset("synthetic", "tabular", x, y, "data.synthetic", binary=[False] * s.n_features)


def _load_label_first(name: str, n_features: int, cfg: DataConfig, seed: int) -> Dataset:
    """Comma-separated rows `label, f1, ..., f{n_features}` with 0/1 features (Shokri et al.'s files).

    Labels 1..K as distributed are shifted to 0..K-1; a file whose labels start at 0 is kept.
    """
    import pandas as pd

    path = _file(cfg, f"a path to the {name} file")
    try:
        table = pd.read_csv(path, header=None, dtype=np.float32).to_numpy()
    except (OSError, ValueError) as e:
        raise _read_error(path, e) from None
    if table.shape[1] != n_features + 1:
        raise DataError(f"{path}: expected a label and {n_features} features per row, "
                        f"got {table.shape[1]} columns")
    x, y = table[:, 1:], table[:, 0]
    if len(y) and y.min() >= 1:
        y = y - 1
    return _with_binary_columns(_dataset(name, "tabular", x, y, str(path)))


_TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10",
                "cifar100": "CIFAR100", "svhn": "SVHN"}


def _load_torchvision(name: str, cfg: DataConfig, seed: int) -> Dataset:
    """A torchvision data set from the local root `data.path`: float32[N, C, H, W] in [0, 1].

    Fetched only when `data.download: true`. `data.split`: train | test (svhn also extra).
    """
    if cfg.path is None:
        raise DataError(f"data.path: {name} needs a local root directory for its files")
    splits = ("train", "test", "extra") if name == "svhn" else ("train", "test")
    if cfg.split not in splits:
        raise ConfigError(f"data.split: expected one of {', '.join(splits)} for {name}, got {cfg.split!r}")
    import torchvision.datasets

    cls = getattr(torchvision.datasets, _TORCHVISION[name])
    split = {"split": cfg.split} if name == "svhn" else {"train": cfg.split == "train"}
    try:
        ds = cls(root=cfg.path, download=cfg.download, **split)
    except RuntimeError as e:  # torchvision's "Dataset not found or corrupted"
        if cfg.download:
            raise DataError(f"{cfg.path}: {name} could not be loaded ({_one_line(e)})") from None
        raise DataError(f"{cfg.path}: {name} {cfg.split} files not found or corrupted under this root "
                        "(set data.download: true to fetch them)") from None
    except (OSError, ValueError, TypeError, AssertionError) as e:  # failed download, malformed files
        raise DataError(f"{cfg.path}: {name} could not be loaded ({_one_line(e)})") from None
    x = np.asarray(ds.data)  # uint8
    y = np.asarray(ds.labels if name == "svhn" else ds.targets)
    if x.ndim == 3:  # MNIST-like: [N, H, W]
        x = x[:, None]
    elif name.startswith("cifar"):  # stored [N, H, W, C]
        x = x.transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(x, dtype=np.float32)
    x /= 255.0  # in place: CIFAR-size arrays are large
    return _dataset(name, "image", x, y, f"{cfg.path} ({name})", bounds=(0, 1))


DATASETS: dict[str, Callable[[DataConfig, int], Dataset]] = {
    "digits": _load_digits,
    "adult": _load_adult,
    "npz": _load_npz,
    "synthetic": _load_synthetic,
    "purchase100": partial(_load_label_first, "purchase100", 600),
    "location30": partial(_load_label_first, "location30", 446),
    **{name: partial(_load_torchvision, name) for name in _TORCHVISION},
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
    rng = _rng(seed, _SUBSAMPLE_STREAM)
    keep = np.sort(rng.choice(len(data), size=cfg.subsample, replace=False))
    x, y = _validate(data.x[keep], data.y[keep], "data.subsample")
    return Dataset(info=data.info, x=x, y=y)
