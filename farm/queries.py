"""Label-only query registry (DESIGN §4): a query set is a list of perturbed copies of the inputs.

A `QuerySpec` from the config (``{kind: translate, d: 1}``) expands into single `Query`s, each ONE
perturbed version of the population, numbered ``query_id`` 0..Q-1 in config order (the order of
``queries.parquet`` and of the ``pred`` column). Kinds:

=========  ========================  =================================================  ==========
kind       spec parameters           single-query params (in order)                      data
=========  ========================  =================================================  ==========
clean      -                         ``{}``                                              any
flip       -                         ``{}`` (horizontal flip)                            image
translate  ``d`` int in [1, min(H,W)) ``{"dx": i, "dy": 0}`` for i = -d..d, then          image
                                     ``{"dx": 0, "dy": j}`` for j = -d..d, j != 0: 4d+1
rotate     ``r`` int in [1, 180]     ``{"degrees": a}`` for a = -r..r (counter-clockwise) image
gaussian   ``sigma`` > 0, ``n`` >= 1 ``{"sigma": s, "copy": k}`` for k = 0..n-1          continuous
bitflip    ``p`` in (0, 1), ``n``    ``{"p": p, "copy": k}`` for k = 0..n-1              binary
toward     ``point``, ``steps``      ``{"point": p, "step": k, "steps": K}``, k = 1..K  any
=========  ========================  =================================================  ==========

``toward`` walks each input in K equal steps toward a fixed point (DHAttack's fixed direction): step k is
x + (k / (K + 1)) (p - x), stopping one step short of p (where every input would be the same), with p the
per-feature mean of the population (``point: mean``) or every feature set to one number in ``info.bounds``
(``point: 0.5``: a gray image). No randomness.

Shifted-in and rotated-in pixels get the fill value 0 clipped into ``info.bounds`` (0 for the
usual [0, 1] images). Gaussian noise touches only non-binary features (all pixels of images) and
is clipped to ``info.bounds``; bitflip maps a binary feature v to 1 - v.

Common random numbers: a query's seed is a pure function of (run seed, query_id) and its noise is
drawn on the CPU for the whole population, so every model on every device sees the same inputs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from farm.config import QuerySpec
from farm.data import DatasetInfo
from farm.errors import ConfigError, shown, unknown_name

MAX_QUERIES = 2**15 - 1  # query_id is int16 in queries.parquet


@dataclass(frozen=True)
class Query:
    """One perturbed version of the inputs; `params` is JSON-able (written to queries.parquet)."""

    query_id: int
    kind: str
    params: dict
    seed: int


def query_seed(run_seed: int, query_id: int) -> int:
    """Seed of one query (non-negative int64), a pure function of (run seed, query_id)."""
    digest = hashlib.sha256(f"{run_seed}:query:{query_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ---------------------------------------------------------------- parameter checks
# A checker returns an error phrase ("must be ...") or None when the value is fine.


def _int_range(lo: int, hi_of: Callable[[DatasetInfo], int] | None = None):
    def check(value, info: DatasetInfo):
        hi = hi_of(info) if hi_of else None
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo
        if ok and (hi is None or value <= hi):
            return None
        return f"must be an integer >= {lo}" if hi is None else f"must be an integer in [{lo}, {hi}]"
    return check


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value, info: DatasetInfo):
    return None if _real(value) and value > 0 else "must be a number > 0"


def _probability(value, info: DatasetInfo):
    return None if _real(value) and 0 < value < 1 else "must be a number in (0, 1)"


def _point(value, info: DatasetInfo):
    lo, hi = info.bounds
    if value == "mean" or (_real(value) and lo <= value <= hi):
        return None
    return f"must be 'mean' or a number in [{lo}, {hi}]"


def _max_shift(info: DatasetInfo) -> int:
    return min(info.shape[-2:]) - 1


# ---------------------------------------------------------------- perturbations
# Each takes x: float[N, *info.shape] and returns a new tensor of the same shape/dtype/device.


def _fill(info: DatasetInfo) -> float:
    lo, hi = info.bounds
    return min(max(0.0, lo), hi)


def _clean(x, params, seed, info):
    return x.clone()


def _flip(x, params, seed, info):
    return torch.flip(x, dims=(-1,))


def _translate(x, params, seed, info):
    dx, dy = params["dx"], params["dy"]
    out = torch.full_like(x, _fill(info))
    h, w = x.shape[-2:]
    # out[y, x] = in[y - dy, x - dx]: positive dx moves content right, positive dy down.
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def _rotate(x, params, seed, info):
    if params["degrees"] == 0:
        return x.clone()
    # On first use: importing torchvision imports torchvision.models and with it torch._dynamo (~1.5 s in every
    # process: trainer actors, tasks, each command), and most query sets have no rotation.
    from torchvision.transforms.v2 import functional as TF

    return TF.rotate(x, float(params["degrees"]), interpolation=TF.InterpolationMode.BILINEAR,
                     fill=[_fill(info)])


def _draw(x: torch.Tensor, seed: int, sampler) -> torch.Tensor:
    """float32 random tensor of x's full shape, drawn on the CPU (identical on every device)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return sampler(tuple(x.shape), generator=generator, dtype=torch.float32).to(x.device)


def _feature_mask(info: DatasetInfo, binary: bool, x: torch.Tensor) -> torch.Tensor:
    """bool[*info.shape]: the binary (or the continuous) features; images are all continuous."""
    flags = info.binary_features or (False,) * math.prod(info.shape)
    mask = torch.tensor(flags, dtype=torch.bool, device=x.device).reshape(info.shape)
    return mask if binary else ~mask


def _gaussian(x, params, seed, info):
    noise = (_draw(x, seed, torch.randn) * params["sigma"]).to(x.dtype)
    noisy = torch.where(_feature_mask(info, False, x), x + noise, x)
    return noisy.clamp(*info.bounds)


def _bitflip(x, params, seed, info):
    flip = (_draw(x, seed, torch.rand) < params["p"]) & _feature_mask(info, True, x)
    return torch.where(flip, 1 - x, x)


def _toward(x, params, seed, info):
    point = x.mean(dim=0, keepdim=True) if params["point"] == "mean" else torch.full_like(x[:1], params["point"])
    return x + (params["step"] / (params["steps"] + 1)) * (point - x)


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Kind:
    checks: dict[str, Callable]  # parameter name -> checker
    expand: Callable[[dict], list[dict]]  # spec params -> single-query params
    apply: Callable  # (x, params, seed, info) -> perturbed x
    requires: Callable[[DatasetInfo], str | None] = lambda info: None  # reason it does not apply


def _image_only(info: DatasetInfo):
    return None if info.kind == "image" else f"applies to image data, but {info.name!r} is {info.kind}"


def _continuous_only(info: DatasetInfo):
    return None if info.has_continuous else f"needs continuous features, but {info.name!r} has none"


def _binary_only(info: DatasetInfo):
    if info.has_binary:
        return None
    what = "is image data" if info.kind == "image" else "has no binary features"
    return f"applies to tabular data with binary features, but {info.name!r} {what}"


def _shifts(d: int) -> list[dict]:
    horizontal = [{"dx": i, "dy": 0} for i in range(-d, d + 1)]
    return horizontal + [{"dx": 0, "dy": j} for j in range(-d, d + 1) if j != 0]


QUERY_KINDS: dict[str, _Kind] = {
    "clean": _Kind({}, lambda p: [{}], _clean),
    "flip": _Kind({}, lambda p: [{}], _flip, _image_only),
    "translate": _Kind({"d": _int_range(1, _max_shift)}, lambda p: _shifts(p["d"]), _translate, _image_only),
    "rotate": _Kind({"r": _int_range(1, lambda info: 180)},
                    lambda p: [{"degrees": a} for a in range(-p["r"], p["r"] + 1)], _rotate, _image_only),
    "gaussian": _Kind({"sigma": _positive, "n": _int_range(1)},
                      lambda p: [{"sigma": float(p["sigma"]), "copy": k} for k in range(p["n"])],
                      _gaussian, _continuous_only),
    "bitflip": _Kind({"p": _probability, "n": _int_range(1)},
                     lambda p: [{"p": float(p["p"]), "copy": k} for k in range(p["n"])],
                     _bitflip, _binary_only),
    "toward": _Kind({"point": _point, "steps": _int_range(1, lambda info: 1000)},
                    lambda p: [{"point": p["point"], "step": k, "steps": p["steps"]} for k in range(1, p["steps"] + 1)],
                    _toward),
}


def _kind(name: str, where: str) -> _Kind:
    if name not in QUERY_KINDS:
        raise ConfigError(f"{where}: {unknown_name('query kind', name, QUERY_KINDS)}")
    return QUERY_KINDS[name]


def _checked_params(spec: QuerySpec, kind: _Kind, where: str, info: DatasetInfo) -> dict:
    params = dict(spec.params)
    expected = ", ".join(kind.checks) or "none"
    for name in params:
        if name not in kind.checks:
            raise ConfigError(f"{where}: unknown parameter {name!r} (valid: {expected})")
    for name in kind.checks:
        if name not in params:
            raise ConfigError(f"{where}: missing parameter {name!r} (expects: {expected})")
    reason = kind.requires(info)
    if reason:
        raise ConfigError(f"{where}: {reason}")
    for name, check in kind.checks.items():
        problem = check(params[name], info)
        if problem:
            raise ConfigError(f"{where}: parameter {name!r} {problem}, got {shown(params[name])}")
    return params


def expand_queries(specs: Sequence[QuerySpec], *, info: DatasetInfo, seed: int) -> list[Query]:
    """Check every spec against `info` and expand them into single queries, ids 0..Q-1 in order.

    Raises `ConfigError` naming the spec (``queries[i] (kind): ...``) for an unknown kind, a
    missing/unknown/wrong-typed/out-of-range parameter, a kind that does not apply to the data
    set, or more than `MAX_QUERIES` queries. Pure: call it before creating any files.
    """
    checked, total = [], 0
    for i, spec in enumerate(specs):
        kind = _kind(spec.kind, f"queries[{i}]")
        params = _checked_params(spec, kind, f"queries[{i}] ({spec.kind})", info)
        # counted before anything is expanded: `n` copies cost memory, a count does not
        total += params["n"] if "n" in kind.checks else len(kind.expand(params))
        if total > MAX_QUERIES:
            raise ConfigError(f"queries: {total:,} queries in total (through queries[{i}] ({spec.kind})), at most "
                              f"{MAX_QUERIES:,} are supported")
        checked.append((spec.kind, kind, params))
    expanded = [(name, single) for name, kind, params in checked for single in kind.expand(params)]
    return [Query(query_id, name, params, query_seed(seed, query_id))
            for query_id, (name, params) in enumerate(expanded)]


def apply_query(query: Query, x: torch.Tensor, *, info: DatasetInfo) -> torch.Tensor:
    """The perturbed copy of `x` under `query`: float32[N, *info.shape] -> same shape/dtype/device.

    `x` must be the WHOLE population in example_id order: random noise is drawn for x's full
    shape from the query's seed, so row i gets the same noise only if x is always the same
    tensor. To work in chunks, perturb the whole population once and slice the result.
    Deterministic and independent of torch's global RNG; `x` is never modified.
    """
    if tuple(x.shape[1:]) != tuple(info.shape):
        raise ValueError(f"apply_query: x has shape {tuple(x.shape)}, expected [N, *{tuple(info.shape)}]")
    return _kind(query.kind, f"query {query.query_id}").apply(x, query.params, query.seed, info)
