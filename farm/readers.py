"""The data sets' sources, read into raw arrays: files (UCI Adult CSV, .npz, label-first CSV), torchvision
roots, scikit-learn's digits, and the seeded synthetic generator.

Each reader returns `x` and `y` as found (any numeric dtype) and raises `DataError` (`ConfigError` for a
setting) naming the file and what was expected; `farm.data` then validates the arrays and declares what
the population is (kind, shape, binary features, bounds). No reader touches the network unless
`data.download: true` (torchvision only).
"""

from __future__ import annotations

import importlib.resources
import zipfile
from pathlib import Path

import numpy as np

from farm.config import DataConfig
from farm.errors import ConfigError, DataError

SYNTHETIC_STREAM = 1  # RNG stream of the synthetic data, derived from the run seed (farm.data subsamples on 2)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def seeded_rng(seed: int, stream: int) -> np.random.Generator:
    if seed < 0:  # numpy seeds must be non-negative
        raise ConfigError(f"seed: expected a non-negative integer, got {seed}")
    return np.random.default_rng([seed, stream])


def _read_error(path, error: BaseException) -> DataError:
    return DataError(f"{path}: cannot read ({one_line(error)})")


def _file(cfg: DataConfig, what: str) -> Path:
    if cfg.path is None:
        raise DataError(f"data.path: the {cfg.name} data set needs {what}")
    path = Path(cfg.path).expanduser()
    if path.is_dir():
        raise DataError(f"{path}: is a directory; data.path of the {cfg.name} data set must be a file")
    if not path.is_file():
        raise DataError(f"{path}: file not found (data.path)")
    return path


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits (ships offline): x float64[1797, 1, 8, 8] in [0, 1], y in 0..9."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).reshape(-1, 1, 8, 8), y


ADULT_NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
                 "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
                 "hours-per-week", "native-country", "income"]


def read_adult(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, list[bool], str]:
    """(x, y, binary features, source) of UCI Adult: the shipped copy (`farm/datasets/adult.csv.gz`) or `data.path`."""
    import pandas as pd

    if cfg.path is None:
        ref = importlib.resources.files("farm") / "datasets/adult.csv.gz"
        with importlib.resources.as_file(ref) as path:
            return _adult_from(path, pd)
    return _adult_from(_file(cfg, "a path to the UCI Adult file"), pd)


def _adult_from(path: Path, pd) -> tuple[np.ndarray, np.ndarray, list[bool], str]:
    try:
        df = pd.read_csv(path, header=None, dtype=str, skipinitialspace=True, na_values="?", comment="|")
    except (OSError, ValueError) as e:
        raise _read_error(path, e) from None
    if df.shape[1] != len(ADULT_COLUMNS):
        raise DataError(f"{path}: expected {len(ADULT_COLUMNS)} columns (14 UCI Adult attributes and "
                        f"the income label), got {df.shape[1]}")
    if len(df) and pd.notna(df.iat[0, 0]) and not df.iat[0, 0].isdigit():  # a header: names are positional
        df = df.iloc[1:]
    df.columns = ADULT_COLUMNS
    df = df.dropna()
    label = df["income"].str.strip().str.rstrip(".")
    bad = sorted(set(label) - {">50K", "<=50K"})
    if bad:
        raise DataError(f"{path}: income labels must be '>50K' or '<=50K', found {bad[:3]}")
    try:
        numeric = df[ADULT_NUMERIC].astype(np.float64)
    except ValueError as e:
        raise DataError(f"{path}: non-numeric value in a numeric column ({one_line(e)})") from None
    std = numeric.std(ddof=0).replace(0.0, 1.0)
    numeric = (numeric - numeric.mean()) / std
    categorical = [c for c in ADULT_COLUMNS[:-1] if c not in ADULT_NUMERIC]
    onehot = pd.get_dummies(df[categorical], dtype=np.float64)
    x = np.concatenate([numeric.to_numpy(), onehot.to_numpy()], axis=1)
    binary = [False] * numeric.shape[1] + [True] * onehot.shape[1]
    return x, (label == ">50K").to_numpy(np.int64), binary, str(path)


def read_npz(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """(x, y, source) of the .npz at `data.path`: x [N, D] or [N, C, H, W] ([N, H, W] gets a channel axis)."""
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
    return x, y, str(path)


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


def make_synthetic(cfg: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian class clusters: means ~ N(0, separation²) per feature, unit noise; balanced classes.

    float64[n_examples, n_features], a pure function of (`data.synthetic`, run seed).
    """
    s = cfg.synthetic
    checks = (("n_classes", s.n_classes >= 2, ">= 2"), ("n_features", s.n_features >= 1, ">= 1"),
              ("n_examples", s.n_examples >= max(2, s.n_classes), ">= n_classes"),
              ("separation", s.separation >= 0, ">= 0"))
    for field, ok, need in checks:
        if not ok:
            raise ConfigError(f"data.synthetic.{field}: expected {need}, got {getattr(s, field)}")
    rng = seeded_rng(seed, SYNTHETIC_STREAM)
    means = rng.normal(scale=s.separation, size=(s.n_classes, s.n_features))
    y = rng.permutation(np.arange(s.n_examples) % s.n_classes)
    x = means[y] + rng.normal(size=(s.n_examples, s.n_features))
    return x, y


def read_label_first(name: str, n_features: int, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """(x, y, source) of comma-separated rows `label, f1, ..., f{n_features}` (Shokri et al.'s files).

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
    return x, y, str(path)


TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10",
               "cifar100": "CIFAR100", "svhn": "SVHN"}


def read_torchvision(name: str, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """(x float32[N, C, H, W] in [0, 1], y, source) of a torchvision data set under the local root `data.path`.

    Fetched only when `data.download: true`. `data.split`: train | test (svhn also extra).
    """
    if cfg.path is None:
        raise DataError(f"data.path: {name} needs a local root directory for its files")
    splits = ("train", "test", "extra") if name == "svhn" else ("train", "test")
    if cfg.split not in splits:
        raise ConfigError(f"data.split: expected one of {', '.join(splits)} for {name}, got {cfg.split!r}")
    import torchvision.datasets

    cls = getattr(torchvision.datasets, TORCHVISION[name])
    split = {"split": cfg.split} if name == "svhn" else {"train": cfg.split == "train"}
    try:
        ds = cls(root=cfg.path, download=cfg.download, **split)
    except RuntimeError as e:  # torchvision's "Dataset not found or corrupted"
        if cfg.download:
            raise DataError(f"{cfg.path}: {name} could not be loaded ({one_line(e)})") from None
        raise DataError(f"{cfg.path}: {name} {cfg.split} files not found or corrupted under this root "
                        "(set data.download: true to fetch them)") from None
    except (OSError, ValueError, TypeError, AssertionError) as e:  # failed download, malformed files
        raise DataError(f"{cfg.path}: {name} could not be loaded ({one_line(e)})") from None
    x = np.asarray(ds.data)  # uint8
    y = np.asarray(ds.labels if name == "svhn" else ds.targets)
    if x.ndim == 3:  # MNIST-like: [N, H, W]
        x = x[:, None]
    elif name.startswith("cifar"):  # stored [N, H, W, C]
        x = x.transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(x, dtype=np.float32)
    x /= 255.0  # in place: CIFAR-size arrays are large
    return x, y, f"{cfg.path} ({name})"
