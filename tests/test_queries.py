"""Label-only query registry: expansion, determinism, perturbation semantics, error paths."""

from __future__ import annotations

import json

import pytest
import torch

from farm.config import QuerySpec
from farm.data import DatasetInfo
from farm.errors import ConfigError
from farm.queries import MAX_QUERIES, QUERY_KINDS, Query, apply_query, expand_queries, query_seed

IMAGE = DatasetInfo("digits", "image", (1, 8, 8), 10)
RGB = DatasetInfo("cifar10", "image", (3, 32, 32), 10)
BINARY = (True, False, True, False, False, True)
TABULAR = DatasetInfo("adult", "tabular", (6,), 2, binary_features=BINARY)
CONTINUOUS = DatasetInfo("synthetic", "tabular", (6,), 2)
ALL_BINARY = DatasetInfo("purchase100", "tabular", (6,), 100, binary_features=(True,) * 6)


def spec(kind: str, **params) -> QuerySpec:
    return QuerySpec(kind, tuple(sorted(params.items())))


def one(kind: str, info: DatasetInfo, seed: int = 0, **params) -> Query:
    return expand_queries([spec(kind, **params)], info=info, seed=seed)[0]


def images(n: int = 5, info: DatasetInfo = IMAGE) -> torch.Tensor:
    return torch.rand((n, *info.shape), generator=torch.Generator().manual_seed(1))


def table(n: int = 400) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    x = torch.rand((n, 6), generator=g)
    mask = torch.tensor(BINARY)
    return torch.where(mask, (x > 0.5).float(), x)


# ---------------------------------------------------------------- expansion


@pytest.mark.parametrize(("kind", "params", "info", "count"), [
    ("clean", {}, TABULAR, 1),
    ("flip", {}, IMAGE, 1),
    ("translate", {"d": 1}, IMAGE, 5),
    ("translate", {"d": 2}, IMAGE, 9),
    ("rotate", {"r": 3}, IMAGE, 7),
    ("gaussian", {"sigma": 0.1, "n": 5}, TABULAR, 5),
    ("gaussian", {"sigma": 1, "n": 2}, IMAGE, 2),
    ("bitflip", {"p": 0.1, "n": 4}, TABULAR, 4),
])
def test_count_per_kind(kind, params, info, count):
    assert len(expand_queries([spec(kind, **params)], info=info, seed=0)) == count


def test_ids_order_params_and_seeds():
    specs = [spec("clean"), spec("translate", d=1), spec("rotate", r=1), spec("flip")]
    queries = expand_queries(specs, info=IMAGE, seed=3)
    assert [q.query_id for q in queries] == list(range(10))
    assert [q.kind for q in queries] == ["clean"] + ["translate"] * 5 + ["rotate"] * 3 + ["flip"]
    shifts = [(q.params["dx"], q.params["dy"]) for q in queries[1:6]]
    assert shifts == [(-1, 0), (0, 0), (1, 0), (0, -1), (0, 1)]
    assert [q.params["degrees"] for q in queries[6:9]] == [-1, 0, 1]
    assert [q.seed for q in queries] == [query_seed(3, i) for i in range(10)]
    assert len({q.seed for q in queries}) == 10 and all(0 <= q.seed < 2**63 for q in queries)
    json.dumps([q.params for q in queries])  # JSON-able for queries.parquet
    assert expand_queries(specs, info=IMAGE, seed=3) == queries


def test_translate_covers_every_axis_shift():
    queries = expand_queries([spec("translate", d=2)], info=IMAGE, seed=0)
    shifts = {(q.params["dx"], q.params["dy"]) for q in queries}
    assert shifts == {(i, 0) for i in range(-2, 3)} | {(0, j) for j in range(-2, 3)}


# ---------------------------------------------------------------- perturbations


@pytest.mark.parametrize(("kind", "params", "info"), [
    ("gaussian", {"sigma": 0.3, "n": 1}, IMAGE),
    ("gaussian", {"sigma": 0.3, "n": 1}, TABULAR),
    ("bitflip", {"p": 0.3, "n": 1}, TABULAR),
])
def test_noise_same_seed_same_output_other_seed_differs(kind, params, info):
    x = images(info=info) if info.kind == "image" else table()
    a, b, c = (apply_query(one(kind, info, seed, **params), x, info=info) for seed in (0, 0, 1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(apply_query(one(kind, info, 0, **params), x, info=info), a)


def test_translate_moves_pixels_by_one():
    x = images()
    right = apply_query(Query(0, "translate", {"dx": 1, "dy": 0}, 0), x, info=IMAGE)
    assert torch.equal(right[..., :, 1:], x[..., :, :-1])
    assert torch.all(right[..., :, 0] == 0)
    down = apply_query(Query(0, "translate", {"dx": 0, "dy": -2}, 0), x, info=IMAGE)
    assert torch.equal(down[..., :-2, :], x[..., 2:, :])
    assert torch.all(down[..., -2:, :] == 0)
    assert torch.equal(apply_query(Query(0, "translate", {"dx": 0, "dy": 0}, 0), x, info=IMAGE), x)


def test_translate_fill_is_clipped_into_bounds():
    info = DatasetInfo("shifted", "image", (1, 8, 8), 10, bounds=(0.5, 2.0))
    out = apply_query(Query(0, "translate", {"dx": 3, "dy": 0}, 0), images() + 0.5, info=info)
    assert torch.all(out[..., :3] == 0.5)


def test_flip_twice_is_identity_and_mirrors_columns():
    x = images(info=RGB)
    query = one("flip", RGB)
    once = apply_query(query, x, info=RGB)
    assert torch.equal(once[..., 0], x[..., -1])
    assert torch.equal(apply_query(query, once, info=RGB), x)


def test_rotate_zero_is_identity_and_90_turns_counter_clockwise():
    x = images(info=RGB)
    assert torch.equal(apply_query(Query(0, "rotate", {"degrees": 0}, 0), x, info=RGB), x)
    turned = apply_query(Query(0, "rotate", {"degrees": 90}, 0), x, info=RGB)
    assert torch.allclose(turned, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5)
    small = apply_query(Query(0, "rotate", {"degrees": 3}, 0), x, info=RGB)
    assert small.shape == x.shape and not torch.equal(small, x)


def test_gaussian_on_tabular_leaves_binary_features_untouched():
    x = table()
    out = apply_query(one("gaussian", TABULAR, sigma=0.5, n=1), x, info=TABULAR)
    binary = torch.tensor(BINARY)
    assert torch.equal(out[:, binary], x[:, binary])
    assert (out[:, ~binary] != x[:, ~binary]).float().mean() > 0.9


def test_bitflip_changes_only_binary_features_at_rate_p():
    x = table(4000)
    out = apply_query(one("bitflip", TABULAR, p=0.2, n=1), x, info=TABULAR)
    binary = torch.tensor(BINARY)
    assert torch.equal(out[:, ~binary], x[:, ~binary])
    changed = out[:, binary] != x[:, binary]
    assert torch.equal(out[:, binary][changed], 1 - x[:, binary][changed])
    assert abs(changed.float().mean().item() - 0.2) < 0.02  # 12,000 draws: sd ~0.004


@pytest.mark.parametrize(("kind", "params", "info"), [
    ("gaussian", {"sigma": 2.0, "n": 1}, IMAGE),
    ("gaussian", {"sigma": 2.0, "n": 1}, TABULAR),
    ("rotate", {"r": 30}, IMAGE),
    ("translate", {"d": 3}, IMAGE),
])
def test_outputs_stay_within_bounds(kind, params, info):
    x = images(info=info) if info.kind == "image" else table()
    for query in expand_queries([spec(kind, **params)], info=info, seed=0):
        out = apply_query(query, x, info=info)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert out.min() >= info.bounds[0] and out.max() <= info.bounds[1]


def test_noise_is_drawn_on_cpu_whatever_the_dtype_or_device():
    x = images()
    query = one("gaussian", IMAGE, sigma=0.1, n=1)
    reference = apply_query(query, x, info=IMAGE)
    generator = torch.Generator().manual_seed(query.seed)
    expected = (x + 0.1 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    assert torch.allclose(reference, expected, atol=1e-6)
    as_double = apply_query(query, x.double(), info=IMAGE)
    assert as_double.dtype == torch.float64
    assert torch.allclose(as_double.float(), reference, atol=1e-6)
    if torch.cuda.is_available():
        on_gpu = apply_query(query, x.cuda(), info=IMAGE)
        assert on_gpu.is_cuda and torch.allclose(on_gpu.cpu(), reference, atol=1e-6)


def test_input_is_not_modified():
    x = images()
    before = x.clone()
    for kind, params in [("translate", {"d": 1}), ("gaussian", {"sigma": 0.5, "n": 1}), ("clean", {})]:
        for query in expand_queries([spec(kind, **params)], info=IMAGE, seed=0):
            apply_query(query, x, info=IMAGE)
    assert torch.equal(x, before)


def test_wrong_input_shape_is_an_error():
    with pytest.raises(ValueError, match="expected"):
        apply_query(one("clean", IMAGE), torch.zeros(2, 64), info=IMAGE)


# ---------------------------------------------------------------- error paths


@pytest.mark.parametrize(("specs", "info", "message"), [
    ([spec("clean"), spec("blur")], IMAGE,
     r"queries\[1\]: unknown query kind 'blur' \(valid: bitflip, clean, flip, gaussian, rotate, toward, translate\)"),
    ([spec("clean"), spec("clean"), spec("translate", d=0)], IMAGE,
     r"queries\[2\] \(translate\): parameter 'd' must be an integer in \[1, 7\], got 0"),
    ([spec("translate", d=8)], IMAGE, r"queries\[0\] \(translate\): parameter 'd' .* got 8"),
    ([spec("translate", d=1.0)], IMAGE, r"queries\[0\] \(translate\): parameter 'd' must be an integer"),
    ([spec("translate", d=True)], IMAGE, r"queries\[0\] \(translate\): parameter 'd' must be an integer"),
    ([spec("translate")], IMAGE, r"queries\[0\] \(translate\): missing parameter 'd'"),
    ([spec("translate", d=1, dx=2)], IMAGE,
     r"queries\[0\] \(translate\): unknown parameter 'dx' \(valid: d\)"),
    ([spec("clean", d=1)], IMAGE, r"queries\[0\] \(clean\): unknown parameter 'd' \(valid: none\)"),
    ([spec("rotate", r=0)], IMAGE,
     r"queries\[0\] \(rotate\): parameter 'r' must be an integer in \[1, 180\], got 0"),
    ([spec("rotate", r="5")], IMAGE, r"queries\[0\] \(rotate\): parameter 'r' .* got '5'"),
    ([spec("gaussian", sigma=0, n=2)], IMAGE,
     r"queries\[0\] \(gaussian\): parameter 'sigma' must be a number > 0, got 0"),
    ([spec("gaussian", sigma=float("nan"), n=2)], IMAGE, r"\(gaussian\): parameter 'sigma'"),
    ([spec("gaussian", sigma=0.1, n=0)], IMAGE,
     r"\(gaussian\): parameter 'n' must be an integer >= 1, got 0"),
    ([spec("gaussian", sigma=0.1)], IMAGE, r"\(gaussian\): missing parameter 'n' \(expects: sigma, n\)"),
    ([spec("bitflip", p=1.0, n=2)], TABULAR,
     r"queries\[0\] \(bitflip\): parameter 'p' must be a number in \(0, 1\), got 1.0"),
    ([spec("bitflip", p=0.1, n=-1)], TABULAR, r"\(bitflip\): parameter 'n' must be an integer >= 1"),
    ([spec("clean"), spec("flip")], TABULAR,
     r"queries\[1\] \(flip\): applies to image data, but 'adult' is tabular"),
    ([spec("translate", d=1)], TABULAR, r"queries\[0\] \(translate\): applies to image data"),
    ([spec("rotate", r=5)], CONTINUOUS, r"queries\[0\] \(rotate\): applies to image data, but 'synthetic'"),
    ([spec("bitflip", p=0.1, n=1)], IMAGE, r"queries\[0\] \(bitflip\): .* 'digits' is image data"),
    ([spec("bitflip", p=0.1, n=1)], CONTINUOUS, r"\(bitflip\): .* 'synthetic' has no binary features"),
    ([spec("gaussian", sigma=0.1, n=1)], ALL_BINARY,
     r"\(gaussian\): needs continuous features, but 'purchase100' has none"),
    ([spec("gaussian", sigma=0.1, n=MAX_QUERIES + 1)], IMAGE, r"at most 32,767"),
])
def test_errors_name_the_spec(specs, info, message):
    with pytest.raises(ConfigError, match=message):
        expand_queries(specs, info=info, seed=0)


def test_registry_lists_the_documented_kinds():
    assert set(QUERY_KINDS) == {"clean", "flip", "translate", "rotate", "gaussian", "bitflip", "toward"}
