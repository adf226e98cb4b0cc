"""Label-only attacks of Choquette-Choo et al. (2007.14321): gap, augmentation, noise.

Each attack: fn(responses, *, target, shadows, **settings) -> float64[N], one score per example as
seen by model `target` (higher = more likely member). They read `pred` and `labels`, and
`member[shadows]` to fit attack classifiers: never `member[target]`, never `logits`.
Thresholds are not chosen here: the caller picks them on shadow scores (`attacks.stats.shadow_game`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attacks.responses import Responses
from attacks.stats.correctness import (
    AUGMENTATION_KINDS,
    NOISE_KINDS,
    check_game,
    correct,
    count_correct,
    fraction_correct,
    query_indices,
    require_kinds,
)
from attacks.stats.shadow_game import fit_on_shadows
from farm.errors import ConfigError


def check_variant(attack: str, variant: str, valid: Sequence[str]) -> None:
    """ConfigError listing the valid variants when `variant` is not one of them."""
    if variant not in valid:
        raise ConfigError(f"attack {attack!r}: unknown variant {variant!r} (valid: {', '.join(valid)})")


def _logistic_regression(c: float, seed: int):
    def make():
        # Imported on first use: scikit-learn loaded before torch (importing this module first) binds its
        # OpenMP runtime beside torch's, and with two threads its boosting fits then ran ~10x slower.
        from sklearn.linear_model import LogisticRegression

        # lbfgs is deterministic; random_state only matters for other solvers but keeps the intent explicit.
        return LogisticRegression(C=c, max_iter=1000, random_state=seed)

    return make


def gap(responses: Responses, *, target: int, shadows: Sequence[int]) -> np.ndarray:
    """Gap attack (Yeom et al.): score 1.0 if the target labels the clean example correctly, else 0.0.

    Needs a "clean" query (the first one is used). Does not use the shadows (accepted for a uniform
    signature; thresholds on the 0/1 score are trivial). Returns float64[N].
    """
    require_kinds(responses, attack="gap", any_of=("clean",))
    if not 0 <= int(target) < responses.n_models:
        raise ConfigError(f"target {target} is out of range: this run has {responses.n_models} models")
    clean = responses.queries_of("clean")[0]
    return correct(responses.pred[[int(target)]], responses.labels, queries=clean)[0].astype(np.float64)


def augmentation(responses: Responses, *, target: int, shadows: Sequence[int], variant: str = "classifier",
                 c: float = 1.0, max_fit_rows: int | None = 200_000, seed: int = 0) -> np.ndarray:
    """Data-augmentation attack: the "label still correct?" vector over clean + flip/translate/rotate queries.

    variant "classifier": logistic regression (inverse regularization `c`) fit on the shadows' vectors,
      one row per (shadow, example), label = that shadow's membership; at most `max_fit_rows` rows,
      subsampled with `seed`. Score = predicted P(member) for the target's vectors.
    variant "count": score = number of correct queries in the vector (clean included when present).
    Needs at least one query of kind flip, translate or rotate. Returns float64[N].
    """
    check_variant("augmentation", variant, ("classifier", "count"))
    present = require_kinds(responses, attack="augmentation", any_of=AUGMENTATION_KINDS)
    kinds = ("clean",) + present
    shadows = check_game(responses, target=target, shadows=shadows)
    if variant == "count":
        queries = query_indices(responses, kinds=kinds)
        return count_correct(responses, queries=queries, models=[target])[0].astype(np.float64)
    return _classifier_scores(responses, kinds=kinds, target=target, shadows=shadows, c=c,
                              max_fit_rows=max_fit_rows, seed=seed)


def noise(responses: Responses, *, target: int, shadows: Sequence[int], variant: str = "threshold",
          c: float = 1.0, max_fit_rows: int | None = 200_000, seed: int = 0) -> np.ndarray:
    """Noise-robustness attack: how many gaussian/bitflip copies are still labelled correctly.

    variant "threshold": score = fraction of the gaussian and bitflip queries answered correctly
      (threshold chosen later on shadow scores).
    variant "classifier": logistic regression on the correctness vector over those queries, fit on
      shadow rows as in `augmentation`. Query j is the same noisy input for every model (common random
      numbers), so per-position weights can learn which copies are informative; a *sorted* vector
      of 0/1 values would carry only the count, i.e. the threshold variant.
    Needs at least one query of kind gaussian or bitflip. Returns float64[N].
    """
    check_variant("noise", variant, ("threshold", "classifier"))
    kinds = require_kinds(responses, attack="noise", any_of=NOISE_KINDS)
    shadows = check_game(responses, target=target, shadows=shadows)
    if variant == "threshold":
        return fraction_correct(responses, kinds=kinds, models=[target])[0]
    return _classifier_scores(responses, kinds=kinds, target=target, shadows=shadows, c=c,
                              max_fit_rows=max_fit_rows, seed=seed)


def _classifier_scores(responses: Responses, *, kinds: tuple[str, ...], target: int, shadows: np.ndarray,
                       c: float, max_fit_rows: int | None, seed: int) -> np.ndarray:
    if c <= 0:
        raise ConfigError(f"c (inverse regularization strength) must be > 0, got {c}")
    queries = query_indices(responses, kinds=kinds)

    def row_features(models: np.ndarray, examples: np.ndarray) -> np.ndarray:
        answers = responses.pred[models[:, None], examples[:, None], queries[None, :]]
        return (answers == responses.labels[examples, None]).astype(np.float32)

    return fit_on_shadows(_logistic_regression(c, seed), responses, row_features=row_features, target=target,
                          shadows=shadows, max_rows=max_fit_rows, seed=seed)
