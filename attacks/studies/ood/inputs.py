"""Out-of-distribution inputs (Hintersdorf et al. 2111.09076): inputs no model of the run trained on, and not
drawn from its population. Pure and seeded: the same (population, family, n, seed) gives the same inputs.

Families (registry `OOD_FAMILIES`), each float32[n, *info.shape] inside `info.bounds`:
- uniform:     every feature uniform in info.bounds (binary features: fair coin flips).
- gaussian:    every feature Gaussian with the population's per-feature mean and standard deviation, clipped
               to the bounds (binary features: coin flips with the population's frequency of 1): noise that
               matches the data's first two moments, a harder case than uniform noise.
- permuted:    a population example (drawn at random) with its features/pixels in a random order of its own:
               the same values, no structure.
- scaled_up:   a population example with its continuous features (every pixel of an image) times 3, clipped.
- scaled_down: the same times 0.3 (a faint image; shrunk tabular features). Binary features stay as they were.
- other:       another data set of the same input shape (`other_x`, e.g. the registered `synthetic` data set
               for a tabular run), clipped to the bounds; absent when none is given.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import numpy as np

from farm.data import DatasetInfo
from farm.errors import ConfigError, unknown_name

SCALE_UP, SCALE_DOWN = 3.0, 0.3


def _binary(info: DatasetInfo) -> np.ndarray:
    """bool[D]: which flattened features are binary (none for images)."""
    d = int(np.prod(info.shape))
    return np.array(info.binary_features if info.binary_features else (False,) * d, dtype=bool)


def _uniform(x, info, n, rng):
    lo, hi = info.bounds
    out = rng.uniform(lo, hi, size=(n, x.shape[1]))
    binary = _binary(info)
    out[:, binary] = rng.integers(0, 2, size=(n, int(binary.sum())))
    return out


def _gaussian(x, info, n, rng):
    out = rng.normal(x.mean(axis=0), x.std(axis=0), size=(n, x.shape[1]))
    binary = _binary(info)
    out[:, binary] = rng.random((n, int(binary.sum()))) < x[:, binary].mean(axis=0)
    return out


def _permuted(x, info, n, rng):
    source = x[rng.integers(0, len(x), size=n)]
    return np.take_along_axis(source, rng.random(source.shape).argsort(axis=1), axis=1)


def _scaled(factor: float):
    def make(x, info, n, rng):
        out = x[rng.integers(0, len(x), size=n)].astype(np.float64)
        continuous = ~_binary(info)
        out[:, continuous] *= factor
        return out
    return make


OOD_FAMILIES: dict[str, Callable] = {
    "uniform": _uniform, "gaussian": _gaussian, "permuted": _permuted,
    "scaled_up": _scaled(SCALE_UP), "scaled_down": _scaled(SCALE_DOWN), "other": None,
}
DESCRIPTIONS = {
    "uniform": "uniform noise in the data's bounds",
    "gaussian": "Gaussian noise with the population's per-feature mean and std",
    "permuted": "population examples with their features/pixels randomly permuted (per input)",
    "scaled_up": f"population examples, continuous features x{SCALE_UP:g} (clipped)",
    "scaled_down": f"population examples, continuous features x{SCALE_DOWN:g}",
    "other": "another data set of the same input shape",
}


def family_seed(seed: int, family: str) -> list[int]:
    """RNG seed of a family: a pure function of (seed, family name), so families never share noise."""
    return [seed, zlib.crc32(family.encode())]


def ood_inputs(*, x: np.ndarray, info: DatasetInfo, n: int, seed: int, families: Sequence[str] | None = None,
               other_x: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """{family: float32[n_f, *info.shape]} for the requested families (default: all; "other" only with other_x).

    x: float32[N, *info.shape] the population; n: inputs per family (the "other" family takes its first n rows,
    or all of them when it has fewer). ConfigError for an unknown family, n < 1, or "other" without other_x.
    """
    if n < 1:
        raise ConfigError(f"--n-inputs: expected at least 1, got {n}")
    families = [f for f in OOD_FAMILIES if f != "other" or other_x is not None] if families is None else families
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    lo, hi = info.bounds
    out = {}
    for family in families:
        if family not in OOD_FAMILIES:
            raise unknown_name("OOD family", family, OOD_FAMILIES)
        if family == "other":
            if other_x is None:
                raise ConfigError("OOD family 'other' needs another data set of the same shape (--other-data)")
            if tuple(other_x.shape[1:]) != tuple(info.shape):
                raise ConfigError(f"--other-data: inputs of shape {tuple(other_x.shape[1:])}, the run's are "
                                  f"{tuple(info.shape)}")
            values = np.asarray(other_x[:n], dtype=np.float64).reshape(-1, flat.shape[1])
        else:
            values = OOD_FAMILIES[family](flat, info, n, np.random.default_rng(family_seed(seed, family)))
        out[family] = np.ascontiguousarray(np.clip(values, lo, hi).reshape(-1, *info.shape), dtype=np.float32)
    return out
