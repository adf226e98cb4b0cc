"""Batched HopSkipJump (Chen, Jordan & Wainwright 2020, arXiv 1904.02144): untargeted, L2, labels only.

The `boundary` attack's signal (DESIGN §6): per example, the L2 distance from the clean input to the closest
point found that the model labels differently. All examples advance together; each phase (random starts,
gradient probes, step-size search, binary search) concatenates the probes of all active examples and sends
them to `predict_labels` in calls of at most `chunk_size` rows (random starts and gradient probes are built
for as many whole examples as fit in one call at a time, to bound memory). Only `predict_labels` touches the
model. `hopskipjump`'s loop is the paper's steps: binary search to the boundary (`_to_boundary`, first from
`_random_starts`), gradient-direction estimate (`_gradient_directions`), geometric step size (`_step_sizes`).

Counting and budget: every row sent is one query of the example it was made for, the clean input included.
Each phase's queries are planned before anything is sent; an example that cannot afford the next phase within
`budget` stops there and keeps the best adversarial point found so far, so no example ever exceeds `budget`.

Determinism: every random number of example i comes from its own Philox generator keyed by
(seed, example_ids[i]) and is drawn in the same order whatever the batch (its gradient directions from torch's
generator reseeded, per example and iteration, with a number drawn from that stream: torch draws normals about
3x faster), so a result depends only on (seed, example id, model) and the numpy and torch versions (RANDOM_STREAMS
names the streams' scheme): not on the other examples of the batch, nor on `chunk_size`. This assumes the model
labels a row the same whatever else is in its call; a model's float outputs can change in the last bits with
the batch (BLAS blocking), which argmax labels make practically, not provably, irrelevant.

Choices (the paper, its reference code github.com/Jianbo-Lab/HSJA, and ART's HopSkipJump):
- theta = gamma / (d * sqrt(d)), d = prod(shape): a binary search halves the blend interval [0, 1] between
  the clean input and an adversarial point until it is below theta: ceil(log2(1 / theta)) queries, the same
  for every example. The adversarial end is kept, so every boundary point is a verified adversarial point.
- delta_t = sqrt(d) * theta * dist_{t-1} (the paper's rule for every t >= 1, dist_0 the distance after the
  initial binary search; the reference code uses 0.1 * (hi - lo) at t = 1 instead).
- n_t = min(int(init_evals * sqrt(t)), max_evals) random unit directions, clipped to `bounds`; sign estimate
  phi = +1 (adversarial) / -1, minus its mean unless all signs agree.
- step size xi = dist / sqrt(t), halved until the step lands adversarial (at most 25 halvings, else no move).
- random starts: up to 100 uniform draws in `bounds` per example, sent in rounds of 1, 2, 4, ..., 32, 37
  (a round is sent whole; its first adversarial draw is the start).
- no adversarial start found (or a budget below 2 + ceil(log2(1 / theta)), one start and its binary search):
  success=False and distance = sqrt(d) * (hi - lo), the domain's diameter (no point of the domain is
  farther), so such examples rank as "far from the boundary".
- misclassified clean input (label != labels[i]): distance 0, success=True, 1 query.
- the distance reported is the smallest over the example's boundary points (in practice the last one).
Memory: the gradient phase holds about 1 float32 array of chunk_size x d (lower chunk_size for big inputs).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from farm.errors import ConfigError, DataError

_START_ROUNDS = (1, 2, 4, 8, 16, 32, 37)  # doubling: few wasted queries when starts are easy, 100 at most
_MAX_HALVINGS = 25
_UNLIMITED = np.iinfo(np.int64).max // 4
RANDOM_STREAMS = 2  # bump when a seed's random numbers change (cached distances are keyed by it)


@dataclass(frozen=True)
class HsjaResult:
    """Per example: `distance` float32[B] (see the module docstring), `queries` int32[B] rows sent on its
    behalf, `success` bool[B] (False: no adversarial start was found, distance = the domain's diameter)."""

    distance: np.ndarray
    queries: np.ndarray
    success: np.ndarray


class _Oracle:
    """Answers "is this probe adversarial for its example?" in calls of at most `chunk_size` rows.

    Probes float[K, d], already clipped to the bounds by the caller, are sent as float32[K, *shape] (no copy
    when float32 already); `owner` int[K] names the example each row is for, and counts as its query."""

    def __init__(self, predict_labels, labels, shape, bounds, chunk_size, budget):
        self.predict_labels, self.labels, self.shape = predict_labels, labels, shape
        self.lo, self.hi = bounds
        self.chunk_size, self.budget = chunk_size, _UNLIMITED if budget is None else budget
        self.queries = np.zeros(len(labels), dtype=np.int64)

    def remaining(self, idx: np.ndarray) -> np.ndarray:
        return self.budget - self.queries[idx]

    def can_afford(self, idx: np.ndarray, queries: int) -> np.ndarray:
        """bool[len(idx)]: which examples have `queries` more queries left in their budget."""
        return self.remaining(idx) >= queries

    def adversarial(self, points: np.ndarray, owner: np.ndarray) -> np.ndarray:
        self.queries += np.bincount(owner, minlength=len(self.queries))
        if self.queries.max(initial=0) > self.budget:  # the phases plan their queries: this is a bug, not input
            raise RuntimeError("hopskipjump: an example's query plan went over the budget")
        rows = points.astype(np.float32, copy=False).reshape(len(points), *self.shape)
        predicted = np.empty(len(rows), dtype=np.int64)
        for start in range(0, len(rows), self.chunk_size):
            chunk = rows[start:start + self.chunk_size]
            answer = np.asarray(self.predict_labels(chunk))
            if answer.shape != (len(chunk),):
                raise DataError(f"predict_labels answered shape {answer.shape} for a batch of {len(chunk)}")
            predicted[start:start + len(chunk)] = answer
        return predicted != self.labels[owner]


def _groups(idx: np.ndarray, rows: int, chunk_size: int) -> list[np.ndarray]:
    """Split example indices so that one group's probes (`rows` each) fill about one call: bounds memory."""
    size = max(1, chunk_size // max(rows, 1))
    return [idx[i:i + size] for i in range(0, len(idx), size)]


def _boundary(oracle: _Oracle, x0: np.ndarray, idx: np.ndarray, adv: np.ndarray, steps: int) -> np.ndarray:
    """Binary search on (1 - a) x0[idx] + a adv, a in [0, 1], `steps` queries per example.

    adv float64[A, d]: verified adversarial points. Returns float64[A, d], the adversarial ends (a = 1 gives
    adv exactly, so the result is always a point the model labelled adversarial)."""
    low, high = np.zeros(len(idx)), np.ones(len(idx))
    blend = lambda a: np.clip((1.0 - a)[:, None] * x0[idx] + a[:, None] * adv, oracle.lo, oracle.hi)
    for _ in range(steps):
        mid = (low + high) / 2.0
        is_adv = oracle.adversarial(blend(mid), idx)
        high, low = np.where(is_adv, mid, high), np.where(is_adv, low, mid)
    return blend(high)


def _direction(oracle: _Oracle, normal: torch.Generator, seeds: np.ndarray, point: np.ndarray, delta: np.ndarray,
               members: np.ndarray, n_t: int) -> np.ndarray:
    """Monte-Carlo estimate of the boundary's normal (pointing to the adversarial side) at point float64[g, d]
    for examples `members` int[g], with probe radius delta float64[g]: unit vectors float64[g, d] (0 if none).
    Example j's n_t random directions come from the torch generator `normal` seeded with seeds[j]."""
    g, d = point.shape
    probes = torch.empty(g, n_t, d)
    for row, seed in zip(probes, seeds.tolist(), strict=True):
        row.normal_(generator=normal.manual_seed(seed))
    base = torch.from_numpy(point.astype(np.float32))[:, None]
    radius = torch.from_numpy(delta.astype(np.float32))[:, None, None]
    probes.mul_(radius / torch.linalg.vector_norm(probes, dim=2, keepdim=True)).add_(base).clamp_(oracle.lo, oracle.hi)
    hit = oracle.adversarial(probes.numpy().reshape(-1, d), np.repeat(members, n_t))
    phi = torch.from_numpy(hit.reshape(g, n_t)).to(torch.float32).mul_(2.0).sub_(1.0)
    mean = phi.mean(dim=1, keepdim=True)
    phi = torch.where(mean.abs() == 1.0, phi, phi - mean)  # baseline only when the signs disagree (paper §4.2)
    # phi @ (probes - base): the directions actually probed (after clipping), times delta, which norm drops
    grad = torch.bmm(phi[:, None], probes.sub_(base))[:, 0].numpy().astype(np.float64)
    norm = np.linalg.norm(grad, axis=1, keepdims=True)
    return np.divide(grad, norm, out=np.zeros_like(grad), where=norm > 0)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_batch(x, labels, bounds) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(x, labels, lo, hi) once x is finite float[B, *shape] inside bounds and labels is int[B]."""
    x, labels = np.asarray(x), np.asarray(labels)
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise DataError(f"x: expected finite float32[B, *shape], got {x.dtype}{list(x.shape)}")
    n = x.shape[0]
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels: expected int[{n}], got {labels.dtype}{list(labels.shape)}")
    lo, hi = (float(b) for b in bounds)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(f"bounds: expected finite (lo, hi) with lo < hi, got {bounds!r}")
    if n and (x.min() < lo or x.max() > hi):
        raise DataError(f"x: values in [{x.min()}, {x.max()}] leave bounds {bounds!r}; pass the data's domain")
    return x, labels, lo, hi


def _check_settings(max_iter, init_evals, max_evals, chunk_size, seed, budget, gamma) -> tuple:
    """(max_iter, init_evals, max_evals, chunk_size, seed, budget) as ints (budget None: unlimited) once every
    setting is valid."""
    checked = (_check_int("max_iter", max_iter, 0), _check_int("init_evals", init_evals, 1),
               _check_int("max_evals", max_evals, 1), _check_int("chunk_size", chunk_size, 1),
               _check_int("seed", seed, 0), None if budget is None else _check_int("budget", budget, 1))
    if not (isinstance(gamma, numbers.Real) and math.isfinite(gamma) and gamma > 0):
        raise ConfigError(f"gamma: expected a positive number, got {gamma!r}")
    return checked


def _random_streams(seed: int, example_ids, n: int, max_iter: int) -> tuple[list[np.random.Generator], np.ndarray]:
    """Per example, its Philox generator keyed by (seed, example id), and the torch seeds int64[n, max_iter] of its
    gradient directions, one per iteration, drawn first from that generator (see Determinism above)."""
    ids = np.arange(n) if example_ids is None else np.asarray(example_ids)
    if ids.shape != (n,) or (n and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0)):
        raise DataError(f"example_ids: expected int[{n}] >= 0, got {ids.dtype}{list(ids.shape)}")
    rngs = [np.random.Generator(np.random.Philox(key=[seed, int(i)])) for i in ids]
    normal_seeds = np.array([rng.integers(2**63, size=max_iter) for rng in rngs]).reshape(n, max_iter)
    return rngs, normal_seeds


def _random_starts(oracle: _Oracle, rngs: list[np.random.Generator], searching: np.ndarray, d: int,
                   steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(start float64[B, d], found bool[B]): the first adversarial uniform draw of each example of `searching`,
    in rounds of _START_ROUNDS draws; an example tries only what leaves room for its binary search (`steps`)."""
    start, found = np.zeros((len(rngs), d)), np.zeros(len(rngs), dtype=bool)
    for k in _START_ROUNDS:
        tries = np.minimum(k, oracle.remaining(searching) - steps)
        searching, tries = searching[tries >= 1], tries[tries >= 1]
        for group in _groups(np.arange(len(searching)), k, oracle.chunk_size):
            members, counts = searching[group], tries[group]
            draws = [rngs[i].uniform(oracle.lo, oracle.hi, size=(k, d))[:c]
                     for i, c in zip(members, counts, strict=True)]
            hits = np.split(oracle.adversarial(np.concatenate(draws), np.repeat(members, counts)),
                            np.cumsum(counts)[:-1])
            for i, draw, hit in zip(members, draws, hits, strict=True):
                if hit.any():
                    start[i], found[i] = draw[np.argmax(hit)], True
        searching = searching[~found[searching]]
    return start, found


def _to_boundary(oracle: _Oracle, x0: np.ndarray, idx: np.ndarray, adv: np.ndarray, steps: int, point: np.ndarray,
                 dist: np.ndarray) -> None:
    """Binary search from the adversarial points adv float64[A, d] back to the boundary: sets point[idx] and
    dist[idx], the boundary points and their L2 distances to the clean inputs."""
    point[idx] = _boundary(oracle, x0, idx, adv, steps)
    dist[idx] = np.linalg.norm(point[idx] - x0[idx], axis=1)


def _gradient_directions(oracle: _Oracle, normal: torch.Generator, seeds: np.ndarray, point: np.ndarray,
                         dist: np.ndarray, active: np.ndarray, n_t: int, theta: float) -> np.ndarray:
    """float64[A, d]: the estimated boundary normals at the boundary points of `active`, probed at radius
    delta_t = sqrt(d) * theta * dist; seeds int64[B]: this iteration's torch seed of every example."""
    d = point.shape[1]
    direction = np.zeros((len(active), d))
    for group in _groups(np.arange(len(active)), n_t, oracle.chunk_size):
        members = active[group]
        delta = math.sqrt(d) * theta * dist[members]
        direction[group] = _direction(oracle, normal, seeds[members], point[members], delta, members, n_t)
    return direction


def _step_sizes(oracle: _Oracle, point: np.ndarray, direction: np.ndarray, xi: np.ndarray, active: np.ndarray,
                steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geometric step-size search: xi float64[A] halved until point + xi * direction lands adversarial, one query
    per example per round. Returns (xi, moved bool[A], keep bool[A]: still within budget for the next iteration);
    an example without a direction keeps its point, one that cannot afford another try stops."""
    moved, keep = np.zeros(len(active), dtype=bool), np.ones(len(active), dtype=bool)
    pending = np.flatnonzero(np.linalg.norm(direction, axis=1) > 0)
    for _ in range(_MAX_HALVINGS + 1):
        affordable = oracle.can_afford(active[pending], 1 + steps)
        keep[pending[~affordable]], pending = False, pending[affordable]
        if not len(pending):
            break
        candidate = np.clip(point[active[pending]] + xi[pending, None] * direction[pending], oracle.lo, oracle.hi)
        hit = oracle.adversarial(candidate, active[pending])
        moved[pending[hit]] = True
        xi[pending[~hit]] /= 2.0
        pending = pending[~hit]
    return xi, moved, keep


def hopskipjump(predict_labels: Callable[[np.ndarray], np.ndarray], x: np.ndarray, labels: np.ndarray, *,
                bounds: tuple[float, float] = (0.0, 1.0), max_iter: int = 20, init_evals: int = 100,
                max_evals: int = 1000, budget: int | None = None, gamma: float = 1.0, chunk_size: int = 65536,
                seed: int = 0, example_ids: np.ndarray | None = None) -> HsjaResult:
    """Untargeted L2 HopSkipJump over a batch: distance to the decision boundary per example, labels only.

    predict_labels: float32[K, *shape] -> int[K] labels (e.g. `LabelOracle.predict_labels`); every row
      counts, called with at most `chunk_size` rows at a time.
    x: float32[B, *shape] clean inputs inside `bounds` (lo, hi), the data domain every probe is clipped to.
    labels: int[B] true labels; a point is adversarial for example i when it is labelled != labels[i].
    max_iter: HSJA iterations per example; init_evals, max_evals: gradient probes n_t = min(init_evals * sqrt(t),
      max_evals); gamma: binary-search tolerance theta = gamma / d^1.5; budget: queries per example (None =
      unlimited; at least 1, the clean query); seed, example_ids int[B] (default arange(B)): example i's
      random numbers depend only on (seed, example_ids[i]).
    Returns HsjaResult(distance float32[B], queries int32[B], success bool[B]); see the module docstring.
    """
    x, labels, lo, hi = _check_batch(x, labels, bounds)
    max_iter, init_evals, max_evals, chunk_size, seed, budget = _check_settings(
        max_iter, init_evals, max_evals, chunk_size, seed, budget, gamma)
    n, d = x.shape[0], int(np.prod(x.shape[1:]))
    rngs, normal_seeds = _random_streams(seed, example_ids, n, max_iter)
    theta = gamma / (d * math.sqrt(d))
    steps = max(0, math.ceil(math.log2(1.0 / theta)))  # queries per binary search
    normal, x0 = torch.Generator(), x.reshape(n, d).astype(np.float64)
    oracle = _Oracle(predict_labels, labels.astype(np.int64), x.shape[1:], (lo, hi), chunk_size, budget)
    distance, success = np.full(n, math.sqrt(d) * (hi - lo)), np.zeros(n, dtype=bool)

    misclassified = oracle.adversarial(x0, np.arange(n))
    distance[misclassified], success[misclassified] = 0.0, True
    # (1) random starts, then a binary search to the boundary
    start, found = _random_starts(oracle, rngs, np.flatnonzero(~misclassified), d, steps)
    active, point, dist = np.flatnonzero(found), np.zeros_like(x0), np.zeros(n)
    _to_boundary(oracle, x0, active, start[active], steps, point, dist)
    distance[active], success[active] = dist[active], True
    for t in range(1, max_iter + 1):
        n_t = int(min(init_evals * math.sqrt(t), max_evals))
        active = active[oracle.can_afford(active, n_t + 1 + steps)]  # gradient + one step + binary search
        if not len(active):
            break
        # (2) gradient direction at the boundary point, (3) geometric step-size search
        direction = _gradient_directions(oracle, normal, normal_seeds[:, t - 1], point, dist, active, n_t, theta)
        xi, moved, keep = _step_sizes(oracle, point, direction, dist[active] / math.sqrt(t), active, steps)
        # (4) binary search back to the boundary
        stepped = active[moved]
        target = np.clip(point[stepped] + xi[moved, None] * direction[moved], lo, hi)
        _to_boundary(oracle, x0, stepped, target, steps, point, dist)
        distance[stepped] = np.minimum(distance[stepped], dist[stepped])
        active = active[keep]
    return HsjaResult(distance=distance.astype(np.float32), queries=oracle.queries.astype(np.int32), success=success)
