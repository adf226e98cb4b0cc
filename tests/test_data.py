"""The data registry: shapes, dtypes, kinds, determinism, and every bad input as a one-line error."""

from __future__ import annotations

import gzip
import importlib.resources
import struct

import numpy as np
import pytest

from farm.config import DataConfig, SyntheticConfig
from farm.data import DATASETS, Dataset, load_dataset
from farm.errors import ConfigError, DataError


def _check_arrays(data: Dataset) -> None:
    assert data.x.dtype == np.float32 and data.x.flags.c_contiguous
    assert data.y.dtype == np.int64
    assert data.x.shape == (len(data), *data.info.shape)
    assert 0 <= data.y.min() and data.y.max() < data.info.num_classes
    lo, hi = data.info.bounds
    assert lo <= data.x.min() and data.x.max() <= hi


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return DataConfig(name="npz", path=str(path))


# ---------------------------------------------------------------- loaders


def test_digits_is_a_unit_range_image_set():
    data = load_dataset(DataConfig(name="digits"), seed=0)
    _check_arrays(data)
    assert data.x.shape == (1797, 1, 8, 8)
    assert (data.info.kind, data.info.shape, data.info.num_classes) == ("image", (1, 8, 8), 10)
    assert data.info.bounds == (0.0, 1.0) and data.x.max() == 1.0 and data.x.min() == 0.0
    assert data.info.binary_features is None


def test_adult_from_package_data():
    data = load_dataset(DataConfig(name="adult"), seed=0)
    _check_arrays(data)
    # 32,561 rows, of which 2,399 have a '?' and are dropped; 6 numeric + 98 one-hot columns
    assert data.x.shape == (30162, 104)
    info = data.info
    assert info.kind == "tabular" and info.num_classes == 2
    binary = np.array(info.binary_features)
    assert not binary[:6].any() and binary[6:].all()
    onehot = data.x[:, binary]
    assert set(np.unique(onehot)) == {0.0, 1.0}
    np.testing.assert_array_equal(onehot.sum(1), 8)  # one category per categorical column
    numeric = data.x[:, ~binary].astype(np.float64)
    np.testing.assert_allclose(numeric.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(numeric.std(0), 1, atol=1e-4)
    assert data.y.mean() == pytest.approx(0.249, abs=0.005)
    assert info.bounds == (float(data.x.min()), float(data.x.max()))


def test_adult_raw_uci_format(tmp_path):
    ref = importlib.resources.files("farm") / "datasets/adult.csv.gz"
    lines = gzip.decompress(ref.read_bytes()).decode().splitlines()[1:41]
    lines[3] = lines[3].replace("Private", "?")  # a missing value: the row is dropped
    lines = [line + "." for line in lines]  # adult.test style labels
    path = tmp_path / "adult.test"
    path.write_text("|1x3 Cross validator\n" + "\n".join(lines) + "\n")
    data = load_dataset(DataConfig(name="adult", path=str(path)), seed=0)
    _check_arrays(data)
    complete = [line for line in lines if "?" not in line]
    assert len(data) == len(complete) < len(lines) - 1
    np.testing.assert_array_equal(data.y, [int(">50K" in line) for line in complete])


def test_synthetic_is_deterministic_per_seed():
    cfg = DataConfig(name="synthetic", synthetic=SyntheticConfig(n_examples=300, n_features=5, n_classes=3))
    a, b, c = (load_dataset(cfg, seed=s) for s in (7, 7, 8))
    _check_arrays(a)
    assert a.x.shape == (300, 5) and a.info.kind == "tabular" and a.info.num_classes == 3
    assert not a.info.has_binary and a.info.has_continuous
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)
    np.testing.assert_array_equal(np.bincount(a.y), [100, 100, 100])


def test_subsample_is_seeded_and_sized():
    full = load_dataset(DataConfig(name="digits"), seed=0)
    cfg = DataConfig(name="digits", subsample=200)
    a, b, c = (load_dataset(cfg, seed=s) for s in (1, 1, 2))
    _check_arrays(a)
    assert len(a) == 200 and a.info == full.info
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    rows = {r.tobytes() for r in full.x.reshape(len(full), -1)}
    assert all(r.tobytes() in rows for r in a.x.reshape(len(a), -1))


def test_npz_tabular_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=50), rng.integers(0, 2, 50), rng.normal(size=50)])
    y = (np.arange(50) % 4).astype(np.float64)  # integer-valued floats are accepted
    data = load_dataset(_write_npz(tmp_path / "t.npz", x=x, y=y), seed=0)
    _check_arrays(data)
    assert data.info.kind == "tabular" and data.info.shape == (3,) and data.info.num_classes == 4
    assert data.info.binary_features == (False, True, False)
    assert data.info.bounds == (float(x.astype(np.float32).min()), float(x.astype(np.float32).max()))
    np.testing.assert_array_equal(data.x, x.astype(np.float32))
    np.testing.assert_array_equal(data.y, y.astype(np.int64))


@pytest.mark.parametrize(("shape", "scale", "bounds"), [
    ((6, 5, 5), 1.0, (0.0, 1.0)),
    ((6, 3, 4, 4), 1.0, (0.0, 1.0)),
    ((6, 3, 4, 4), 255.0, None),
])
def test_npz_image_round_trip(tmp_path, shape, scale, bounds):
    x = np.random.default_rng(0).random(shape) * scale
    data = load_dataset(_write_npz(tmp_path / "i.npz", x=x, y=np.arange(6) % 2), seed=0)
    _check_arrays(data)
    assert data.info.kind == "image" and data.info.binary_features is None
    assert data.info.shape == (shape[1:] if len(shape) == 4 else (1, *shape[1:]))
    assert data.info.bounds == (bounds or (float(data.x.min()), float(data.x.max())))


@pytest.mark.parametrize("name", ["purchase100", "location30"])
def test_label_first_files(tmp_path, name):
    n_features = {"purchase100": 600, "location30": 446}[name]
    rng = np.random.default_rng(0)
    labels = np.array([1, 2, 3, 1, 2])  # 1-based as distributed
    table = np.column_stack([labels, rng.integers(0, 2, (5, n_features))])
    path = tmp_path / name
    np.savetxt(path, table, fmt="%d", delimiter=",")
    data = load_dataset(DataConfig(name=name, path=str(path)), seed=0)
    _check_arrays(data)
    np.testing.assert_array_equal(data.y, labels - 1)
    assert data.info.shape == (n_features,) and all(data.info.binary_features)


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_from_raw_torchvision_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {p: rng.integers(0, 256, (n, 28, 28)) for p, n in (("train", 6), ("t10k", 4))}
    for prefix, img in images.items():
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", img)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(len(img)) % 3)
    data = load_dataset(DataConfig(name="mnist", path=str(tmp_path)), seed=0)
    _check_arrays(data)
    assert data.x.shape == (6, 1, 28, 28) and data.info.kind == "image" and data.info.bounds == (0.0, 1.0)
    np.testing.assert_allclose(data.x[:, 0], images["train"] / 255.0, rtol=1e-6)
    test = load_dataset(DataConfig(name="mnist", path=str(tmp_path), split="test"), seed=0)
    assert len(test) == 4


# ---------------------------------------------------------------- bad input


def _npz(**arrays):
    return lambda tmp: (_write_npz(tmp / "bad.npz", **arrays), str(tmp / "bad.npz"))


def _text(name, content, filename="file.csv"):
    def build(tmp):
        (tmp / filename).write_text(content)
        return DataConfig(name=name, path=str(tmp / filename)), str(tmp / filename)
    return build


def _cfg(fragment, **fields):
    return lambda tmp: (DataConfig(**fields), fragment)


def _npy(tmp):
    np.save(tmp / "x.npy", np.zeros((3, 2)))
    return DataConfig(name="npz", path=str(tmp / "x.npy")), "x.npy"


def _garbage_gzip(tmp):
    (tmp / "adult.csv.gz").write_bytes(b"\x1f\x8b not really gzip")
    return DataConfig(name="adult", path=str(tmp / "adult.csv.gz")), "adult.csv.gz"


def _truncated_npz(tmp):
    np.savez(tmp / "t.npz", x=np.zeros((100, 3)), y=np.arange(100) % 2)
    (tmp / "t.npz").write_bytes((tmp / "t.npz").read_bytes()[:300])
    return DataConfig(name="npz", path=str(tmp / "t.npz")), "t.npz"


_X, _Y = np.zeros((10, 3)), np.arange(10) % 2
_BAD = {
    "mismatched lengths": (_npz(x=_X, y=_Y[:9]), "x has 10 rows but y has 9"),
    "nan": (_npz(x=np.where(np.eye(10, 3) > 0, np.nan, 0.0), y=_Y), "NaN or inf"),
    "inf": (_npz(x=np.full((10, 3), np.inf), y=_Y), "NaN or inf"),
    "negative label": (_npz(x=_X, y=_Y - 1), "labels must be in"),
    "non-integer labels": (_npz(x=_X, y=_Y + 0.5), "non-integer"),
    "string labels": (_npz(x=_X, y=np.array(["a", "b"] * 5)), "integer class labels"),
    "string features": (_npz(x=np.array([["a"]] * 10), y=_Y), "numeric"),
    "empty": (_npz(x=np.zeros((0, 3)), y=np.zeros(0, int)), "empty"),
    "one class": (_npz(x=_X, y=np.zeros(10, int)), "2 classes"),
    "one example": (_npz(x=_X[:1], y=_Y[:1]), "2 classes"),
    "1-d x": (_npz(x=np.zeros(10), y=_Y), "x must be"),
    "missing y": (_npz(x=_X), "missing array"),
    "npy not npz": (_npy, "not an .npz archive"),
    "truncated npz": (_truncated_npz, "cannot read"),
    "missing file": (_cfg("nope.npz", name="npz", path="/nonexistent/nope.npz"), "file not found"),
    "garbage npz": (_text("npz", "not a zip", "g.npz"), "not an .npz archive"),
    "npz without path": (_cfg("data.path", name="npz"), "data.path"),
    "unknown name": (_cfg("'nope'", name="nope"), "valid: adult, cifar10"),
    "subsample too large": (_cfg("data.subsample", name="digits", subsample=5000), "exceeds the 1797"),
    "torchvision without root": (_cfg("data.path", name="cifar10"), "local root"),
    "torchvision bad split": (_cfg("data.split", name="mnist", path="/x", split="val"), "train, test"),
    "adult wrong columns": (_text("adult", "1, 2, 3\n4, 5, 6\n"), "expected 15 columns"),
    "adult bad label": (_text("adult", "39, a, 1, b, 13, c, d, e, f, g, 0, 0, 40, h, rich\n"),
                        "income labels"),
    "adult garbage gzip": (_garbage_gzip, "cannot read"),
    "purchase wrong width": (_text("purchase100", "1,0,1\n2,1,0\n"), "600 features"),
    "synthetic one class": (_cfg("data.synthetic.n_classes", name="synthetic",
                                 synthetic=SyntheticConfig(n_classes=1)), "expected >= 2"),
}


@pytest.mark.parametrize("case", list(_BAD), ids=list(_BAD))
def test_bad_input_raises_a_one_line_error_naming_the_source(tmp_path, case):
    build, message = _BAD[case]
    cfg, source = build(tmp_path)
    with pytest.raises((DataError, ConfigError)) as info:
        load_dataset(cfg, seed=0)
    text = str(info.value)
    assert "\n" not in text and source in text and message in text, text


def test_torchvision_missing_files_says_how_to_download(tmp_path):
    with pytest.raises(DataError, match=r"data\.download: true") as info:
        load_dataset(DataConfig(name="fashion_mnist", path=str(tmp_path)), seed=0)
    assert str(tmp_path) in str(info.value)
    assert not any(tmp_path.iterdir())  # nothing fetched, nothing written


@pytest.mark.parametrize("cfg", [DataConfig(name="synthetic"), DataConfig(name="digits", subsample=10)])
def test_negative_seed_is_a_config_error(cfg):
    with pytest.raises(ConfigError, match="seed: expected a non-negative integer"):
        load_dataset(cfg, seed=-1)


def test_registry_names():
    assert {"digits", "adult", "npz", "synthetic", "mnist", "fashion_mnist", "cifar10", "cifar100",
            "svhn", "purchase100", "location30"} <= set(DATASETS)
