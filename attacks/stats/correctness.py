"""Label-only statistics of a `Responses`, and the checks every attack shares. Pure: arrays in, arrays out.

"Correct" means the model's label for the (perturbed) query equals the example's true label. Every
statistic here reads `pred` and `labels` only: never `member`, never `logits`.

Memory: `pred` can be large (int16[M, N, Q] with M in the hundreds), so counts are computed one
model at a time and never materialize a bool[M, N, Q] array.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from attacks.responses import Responses
from farm.errors import ConfigError

AUGMENTATION_KINDS = ("flip", "translate", "rotate")
NOISE_KINDS = ("gaussian", "bitflip")
PERTURBATION_KINDS = AUGMENTATION_KINDS + NOISE_KINDS

# What to put in the farm config's `queries:` list for each kind; quoted in ConfigError messages.
_EXAMPLE_SPECS = {
    "clean": "{kind: clean}",
    "flip": "{kind: flip}",
    "translate": "{kind: translate, d: 1}",
    "rotate": "{kind: rotate, r: 4}",
    "gaussian": "{kind: gaussian, sigma: 0.1, n: 100}",
    "bitflip": "{kind: bitflip, p: 0.1, n: 100}",
}


def correct(pred: np.ndarray, labels: np.ndarray, *, queries: int | Sequence[int] | np.ndarray) -> np.ndarray:
    """Whether each model labels each query correctly.

    pred: int16[M, N, Q]; labels: int64[N]; queries: one query index q, or indices of Q' queries.
    Returns bool[M, N] for a single q, else bool[M, N, Q'].
    """
    if np.ndim(queries) == 0:
        return pred[:, :, int(queries)] == labels[None, :]
    return pred[:, :, np.asarray(queries, dtype=np.intp)] == labels[None, :, None]


def require_kinds(responses: Responses, *, attack: str, any_of: Iterable[str]) -> tuple[str, ...]:
    """The kinds of `any_of` present in `responses`; ConfigError naming the kinds to add if none is.

    Returns the present kinds, in the order of `any_of`.
    """
    wanted = tuple(any_of)
    present = tuple(kind for kind in wanted if kind in responses.query_kinds)
    if not present:
        examples = ", ".join(_EXAMPLE_SPECS.get(kind, f"{{kind: {kind}}}") for kind in wanted)
        have = ", ".join(sorted(set(responses.query_kinds))) or "none"
        raise ConfigError(
            f"attack {attack!r} needs queries of kind {' or '.join(wanted)}, but this run has only "
            f"{have}; add one of {examples} to `queries:` in the farm config")
    return present


def query_indices(responses: Responses, *, kinds: Iterable[str]) -> np.ndarray:
    """Indices (int[Q']) of the queries whose kind is in `kinds`; empty `kinds` selects none."""
    kinds = tuple(kinds)
    if not kinds:
        return np.zeros(0, dtype=int)
    return responses.queries_of(*kinds)


def with_copies(responses: Responses, kinds: Sequence[str], k: int) -> Responses:
    """`responses` with only the first k of its queries of `kinds` (the other kinds kept), in query order: what a
    run whose query set held k such copies would have recorded (a query's noise depends on its id, not on how many
    copies the set holds)."""
    from dataclasses import replace

    copies = query_indices(responses, kinds=kinds)
    keep = np.sort(np.r_[np.setdiff1d(np.arange(len(responses.query_kinds)), copies), copies[:k]])
    return replace(responses, pred=responses.pred[:, :, keep],
                   query_kinds=tuple(responses.query_kinds[q] for q in keep),
                   query_params=tuple(responses.query_params[q] for q in keep))


def count_correct(responses: Responses, *, queries: np.ndarray,
                  models: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Number of correct answers over `queries` (int[Q']): int32[M', N] for `models` (default: all)."""
    models = np.arange(responses.n_models) if models is None else np.asarray(models, dtype=np.intp)
    queries = np.asarray(queries, dtype=np.intp)
    out = np.empty((len(models), responses.n_examples), dtype=np.int32)
    labels = responses.labels[:, None]
    for row, model in enumerate(models):
        out[row] = np.count_nonzero(responses.pred[model][:, queries] == labels, axis=1)
    return out


def fraction_correct(responses: Responses, *, kinds: Iterable[str],
                     models: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Fraction of the queries of `kinds` answered correctly: float64[M', N] (M' = len(models) or M).

    ConfigError when no query has one of `kinds`.
    """
    kinds = tuple(kinds)
    queries = query_indices(responses, kinds=kinds)
    if len(queries) == 0:
        require_kinds(responses, attack="fraction_correct", any_of=kinds)
    return count_correct(responses, queries=queries, models=models) / len(queries)


def correctness_vector(responses: Responses, *, kinds: Iterable[str],
                       models: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """The 0/1 "label still correct?" vector over the queries of `kinds`, in query order.

    Returns float32[M', N, Q'] (M' = len(models) or M; Q' = number of queries of those kinds).
    Position j is the same perturbed input for every model (common random numbers), so the vectors
    of different models are comparable feature by feature.
    """
    models = np.arange(responses.n_models) if models is None else np.asarray(models, dtype=np.intp)
    queries = query_indices(responses, kinds=kinds)
    labels = responses.labels[:, None]
    out = np.empty((len(models), responses.n_examples, len(queries)), dtype=np.float32)
    for row, model in enumerate(models):
        out[row] = responses.pred[model][:, queries] == labels
    return out


def check_game(responses: Responses, *, target: int, shadows: Sequence[int] | np.ndarray) -> np.ndarray:
    """Validate a (target, shadows) split; return the shadows as int[S].

    ConfigError when the target or a shadow is out of range, the target is among its shadows, a shadow
    repeats, or the shadows hold no member or no non-member at all (nothing to calibrate on).
    Reads `member[shadows]` only.
    """
    shadows = np.asarray(shadows, dtype=np.intp).reshape(-1)
    n_models = responses.n_models
    if not 0 <= int(target) < n_models:
        raise ConfigError(f"target {target} is out of range: this run has {n_models} models "
                          f"(0..{n_models - 1})")
    if len(shadows) == 0:
        raise ConfigError(f"target {target} has no shadows; the attack needs at least one shadow model")
    if shadows.min() < 0 or shadows.max() >= n_models:
        raise ConfigError(f"shadow indices must lie in 0..{n_models - 1}, got {shadows.tolist()}")
    if int(target) in set(shadows.tolist()):
        raise ConfigError(f"target {target} is listed among its own shadows; its membership must stay unseen")
    if len(np.unique(shadows)) != len(shadows):
        raise ConfigError(f"shadows repeat: {shadows.tolist()}")
    shadow_member = responses.member[shadows]
    if shadow_member.all() or not shadow_member.any():
        raise ConfigError("the shadows' membership is all IN or all OUT; calibration needs both")
    return shadows
