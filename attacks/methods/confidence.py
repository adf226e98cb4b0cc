"""Confidence-based reference baselines (NOT label-only): they read the clean-query logits.

These exist to show what label-only attacks are measured against, and that output-side defenses
(confidence masking) break them while label-only attacks are unaffected. Same signature as every
attack: fn(responses, *, target, shadows, **settings) -> float64[N]; they read `logits`, `labels`
and `member[shadows]`, never `member[target]`. ConfigError when `responses.logits` is None.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import log_softmax, logsumexp, softmax

from attacks.methods.calibrated import calibrate
from attacks.responses import Responses
from attacks.stats.correctness import check_game
from attacks.stats.shadow_game import fit_on_shadows
from farm.errors import ConfigError


def _require_logits(responses: Responses, *, attack: str) -> None:
    if responses.logits is None:
        raise ConfigError(f"attack {attack!r} needs logits; this run's shards have none (label-only "
                          f"responses, or an output-side defense removed them): pick a label-only attack")


def _logits(responses: Responses, *, attack: str, models: Sequence[int]) -> np.ndarray:
    """float64[M', N, C] logits of `models`; ConfigError when the run saved none."""
    _require_logits(responses, attack=attack)
    return np.asarray(responses.logits[np.asarray(models, dtype=np.intp)], dtype=np.float64)


def _check_target(responses: Responses, target: int) -> None:
    if not 0 <= int(target) < responses.n_models:
        raise ConfigError(f"target {target} is out of range: this run has {responses.n_models} models")


def true_label_log_prob(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log softmax(logits)[label] = minus the cross-entropy loss.

    logits: float[..., N, C]; labels: int[N]; returns float64[..., N].
    """
    log_p = log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    return np.take_along_axis(log_p, _label_index(labels, log_p.ndim), axis=-1)[..., 0]


def logit_scaled_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's statistic log(p / (1 - p)) at the true label, computed stably from logits.

    With p = softmax(z)[y]: log p - log(1 - p) = z_y - logsumexp_{c != y} z_c, which never forms p or
    1 - p (p rounds to 1.0 for confident models). logits: float[..., N, C]; returns float64[..., N].
    """
    z = np.asarray(logits, dtype=np.float64)
    index = _label_index(labels, z.ndim)
    z_true = np.take_along_axis(z, index, axis=-1)[..., 0]
    others = z.copy()
    np.put_along_axis(others, index, -np.inf, axis=-1)
    return z_true - logsumexp(others, axis=-1)


def _label_index(labels: np.ndarray, ndim: int) -> np.ndarray:
    index = np.asarray(labels, dtype=np.intp)[:, None]
    return index.reshape((1,) * (ndim - 2) + index.shape)


def loss(responses: Responses, *, target: int, shadows: Sequence[int]) -> np.ndarray:
    """Loss attack (Yeom et al.): score = -cross-entropy of the target's logits at the true label.

    Shadows unused (accepted for a uniform signature; the threshold comes from shadow scores).
    Returns float64[N].
    """
    _check_target(responses, target)
    return true_label_log_prob(_logits(responses, attack="loss", models=[target])[0], responses.labels)


def confidence_features(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Class-agnostic attack features: softmax sorted descending, plus the logit-scaled true-label confidence.

    Sorting drops the class identity so that one attack model serves every class (Salem et al.'s
    simplification of Shokri et al.'s per-class models); the true-label confidence adds back what
    sorting hides: whether the top class is the right one. logits: float[..., N, C]; labels: int[N];
    returns float64[..., N, C + 1].
    """
    probs = -np.sort(-softmax(np.asarray(logits, dtype=np.float64), axis=-1), axis=-1)
    return np.concatenate([probs, logit_scaled_confidence(logits, labels)[..., None]], axis=-1)


def confidence_classifier(responses: Responses, *, target: int, shadows: Sequence[int], variant: str = "pooled",
                          max_iter: int = 100, max_fit_rows: int | None = 200_000, seed: int = 0) -> np.ndarray:
    """Shokri-style attack model on confidence vectors, fit on shadow rows with membership labels.

    variant "pooled": one attack model for every class on `confidence_features` (sorted confidences);
    "per_class": Shokri et al.'s design, one attack model per true class on `class_features` (the
    unsorted confidence vector: within one class the class identity is fixed, so nothing needs sorting).
    Classifier: scikit-learn HistGradientBoostingClassifier (`max_iter` boosting rounds, no early
    stopping, `seed`): nonlinear like Shokri's MLP, but fast, deterministic and scale-free (the
    features mix probabilities and logits). At most `max_fit_rows` (shadow, example) rows, subsampled
    with `seed` (`fit_on_shadows`; a disjoint run fits on the shadow pool). Returns float64[N]: P(member).
    """
    # Imported here: sklearn.ensemble takes seconds to import and most runs never call this baseline.
    from sklearn.ensemble import HistGradientBoostingClassifier

    if variant not in ("pooled", "per_class"):
        raise ConfigError(f"attack 'confidence_classifier': unknown variant {variant!r} (valid: per_class, pooled)")
    shadows = check_game(responses, target=target, shadows=shadows)
    if max_iter < 1:
        raise ConfigError(f"max_iter must be at least 1, got {max_iter}")
    _require_logits(responses, attack="confidence_classifier")
    features = class_features if variant == "per_class" else confidence_features

    def row_features(models: np.ndarray, examples: np.ndarray) -> np.ndarray:
        return features(responses.logits[models, examples], responses.labels[examples])

    return fit_on_shadows(
        lambda: HistGradientBoostingClassifier(max_iter=max_iter, early_stopping=False, random_state=seed),
        responses, row_features=row_features, target=target, shadows=shadows, max_rows=max_fit_rows,
        seed=seed, per_class=variant == "per_class")


def class_features(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-class attack features (Shokri et al.): the softmax vector in class order, plus the logit-scaled
    true-label confidence. logits: float[..., N, C]; labels: int[N]; returns float64[..., N, C + 1]."""
    probs = softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    return np.concatenate([probs, logit_scaled_confidence(logits, labels)[..., None]], axis=-1)


def lira_confidence(responses: Responses, *, target: int, shadows: Sequence[int], variant: str = "online",
                    global_variance: bool | str = "auto", min_std: float = 0.01, empty: str = "pooled") -> np.ndarray:
    """LiRA (Carlini et al.) on the logit-scaled confidence at the true label; see `lira_scores`.

    variant "online" | "offline"; global_variance True | False | "auto" (global below 64 shadows);
    min_std floors every std; empty: "pooled", "global" or "error" for examples without IN/OUT shadows (`lira_scores`).
    Returns float64[N].
    """
    shadows = check_game(responses, target=target, shadows=shadows)
    statistic = lira_statistic(responses, np.concatenate([[int(target)], shadows]), {})
    return calibrate(statistic, responses.member[shadows], variant=variant, global_variance=global_variance,
                     min_std=min_std, empty=empty)


def lira_statistic(responses: Responses, models: np.ndarray, settings: dict) -> np.ndarray:
    """float64[len(models), N]: the statistic `lira_confidence` calibrates (the logit-scaled confidence at the
    true label) for `models`; settings unused."""
    return logit_scaled_confidence(_logits(responses, attack="lira_confidence", models=models), responses.labels)
