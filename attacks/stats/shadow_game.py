"""Fitting on shadow models only: attack classifiers, and the pseudo-target game that yields shadow scores.

Two things live here because both are "learn from shadows, never from the target":

- `fit_on_shadows`: fit a scikit-learn classifier on per-(shadow, example) feature rows labelled by the
  shadows' membership, then score the target's rows.
- the shadow game: `shadow_scores` runs an attack with some shadows playing the target (each pseudo-target
  attacked with the *other* shadows; the real target is never one of them) and pools their (scores, member)
  pairs; `play` is the whole game as the attack stage, the audit and the studies play it: the targets'
  scores, and thresholds for the requested FPRs and for best balanced accuracy chosen on the pooled shadow
  scores (`attacks.stats.metrics.shadow_thresholds`), to be applied to the targets' scores.

Pure: no I/O, no logging; randomness only from explicit seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from attacks.responses import Responses
from attacks.stats.metrics import pool, shadow_thresholds
from farm.errors import ConfigError


def shadow_rows(responses: Responses, *, shadows: np.ndarray, max_rows: int | None,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (shadow, example) rows an attack classifier is fit on, subsampled (seeded) to `max_rows`.

    The examples are `responses.fit_examples` (None: all N; a disjoint run's target view: the shadow pool,
    where the shadows are IN and OUT). Returns (models int[R], examples int[R]) with R = min(S*F, max_rows),
    shadow-major order. Rows are chosen before any feature is built, so memory stays O(max_rows * features)
    however many shadows and queries the run has.
    """
    examples = (np.arange(responses.n_examples) if responses.fit_examples is None
                else np.asarray(responses.fit_examples, dtype=np.intp))
    n_rows = len(shadows) * len(examples)
    flat = np.arange(n_rows)
    if max_rows is not None and n_rows > max_rows:
        if max_rows < 2:
            raise ConfigError(f"max_fit_rows must be at least 2, got {max_rows}")
        flat = np.sort(np.random.default_rng(seed).choice(n_rows, size=max_rows, replace=False))
    return shadows[flat // len(examples)], examples[flat % len(examples)]


def fit_on_shadows(make_classifier: Callable[[], object], responses: Responses, *,
                   row_features: Callable[[np.ndarray, np.ndarray], np.ndarray], target: int,
                   shadows: np.ndarray, max_rows: int | None, seed: int, per_class: bool = False) -> np.ndarray:
    """Fit a classifier on shadow rows (label = that shadow's membership) and score the target's rows.

    row_features(models int[R], examples int[R]) -> float[R, F]: the features of those rows.
    make_classifier: returns an unfitted scikit-learn classifier with `predict_proba`.
    per_class: one classifier per true class (Shokri et al.'s attack models), each fit on the rows of that
    class's examples and scoring the target's examples of that class; a class whose fit rows hold one
    membership value only (or none) scores its examples with the members' share of all fit rows.
    Reads member[shadows] only. Returns float64[N]: P(member) for each of the target's examples.
    """
    models, examples = shadow_rows(responses, shadows=np.asarray(shadows, dtype=np.intp),
                                   max_rows=max_rows, seed=seed)
    y = responses.member[models, examples]
    if y.all() or not y.any():
        raise ConfigError("the shadow rows used to fit the attack classifier hold only one class; "
                          "raise max_fit_rows or use more shadows")
    all_examples = np.arange(responses.n_examples)
    if not per_class:
        return _fit_and_score(make_classifier, row_features(models, examples), y,
                              row_features(np.full(responses.n_examples, int(target)), all_examples))
    scores = np.full(responses.n_examples, float(y.mean()))
    row_class, example_class = responses.labels[examples], responses.labels
    for c in np.unique(example_class):
        rows, scored = row_class == c, all_examples[example_class == c]
        if y[rows].all() or not y[rows].any():
            continue
        scores[scored] = _fit_and_score(make_classifier, row_features(models[rows], examples[rows]), y[rows],
                                        row_features(np.full(len(scored), int(target)), scored))
    return scores


def _fit_and_score(make_classifier: Callable[[], object], x: np.ndarray, y: np.ndarray,
                   x_target: np.ndarray) -> np.ndarray:
    """P(member) float64[K] of `x_target` under a classifier fit on (x, y)."""
    classifier = make_classifier()
    classifier.fit(x, y)
    member_column = list(classifier.classes_).index(True)
    return classifier.predict_proba(x_target)[:, member_column].astype(np.float64)


def pseudo_targets(shadows: Sequence[int] | np.ndarray, *, n_pseudo: int, seed: int) -> np.ndarray:
    """The shadows (int[P], P = min(n_pseudo, S)) that play the target in the shadow game; seeded choice."""
    shadows = np.asarray(shadows, dtype=np.intp).reshape(-1)
    if n_pseudo < 1:
        raise ConfigError(f"n_pseudo must be at least 1, got {n_pseudo}")
    if len(shadows) < 3:
        raise ConfigError(f"the shadow game needs at least 3 shadows (pseudo-target + 2 of its own), "
                          f"got {len(shadows)}")
    if n_pseudo >= len(shadows):
        return shadows.copy()
    return np.sort(np.random.default_rng(seed).choice(shadows, size=n_pseudo, replace=False))


def shadow_scores(attack_fn: Callable[..., np.ndarray], responses: Responses, *, target: int,
                  shadows: Sequence[int] | np.ndarray, n_pseudo: int = 8, seed: int = 0,
                  **settings) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the same attack on shadows acting as targets: the calibration set for thresholds.

    Each pseudo-target p (chosen from `shadows`, seeded) is attacked with shadows = the other shadows;
    the real `target` is excluded from every step, so nothing here depends on `member[target]` or on
    the target's responses. Each pseudo-target has one shadow fewer than the real target: close
    enough for thresholds, and it keeps the game honest.

    attack_fn: an attack with signature fn(responses, *, target, shadows, **settings) -> float64[N].
    Returns (scores float64[P*N], member bool[P*N]), pooled over the P pseudo-targets.
    """
    shadows = np.asarray(shadows, dtype=np.intp).reshape(-1)
    if int(target) in set(shadows.tolist()):
        raise ConfigError(f"target {target} is listed among its own shadows; its membership must stay unseen")
    scores, member = [], []
    for pseudo in pseudo_targets(shadows, n_pseudo=n_pseudo, seed=seed):
        others = shadows[shadows != pseudo]
        scores.append(np.asarray(attack_fn(responses, target=int(pseudo), shadows=others, **settings),
                                 dtype=np.float64))
        member.append(responses.member[pseudo])
    return np.concatenate(scores), np.concatenate(member).astype(bool)


@dataclass(frozen=True)
class GameResult:
    """One attack's shadow game on its targets.

    scores float64[T*E], member bool[T*E]: the targets' scores and membership on the challenge examples,
    target-major (pooled in the order of `targets`); thresholds: `shadow_thresholds` of the pseudo-targets'
    pooled scores; examples: the challenge example ids int[E] of each target's scores (None: all N in order).
    """

    scores: np.ndarray
    member: np.ndarray
    thresholds: dict[str, float]
    examples: np.ndarray | None = None


def play(attack_fn: Callable[..., np.ndarray], responses: Responses, *, targets: Sequence[int],
         shadows: Sequence[int] | np.ndarray, n_pseudo: int, seed: int, fprs: Sequence[float],
         on_target: Callable[[int], None] | None = None, target_pool: np.ndarray | None = None) -> GameResult:
    """Attack every target with `shadows`; choose the thresholds for `fprs` on the shadow game only.

    attack_fn: fn(responses, *, target, shadows) -> float64[N]. The shadow game does not depend on which
    target it protects (its pseudo-targets are drawn from the same shadows), so it is played once and its
    scores pooled once per target, as if played per target. on_target(t): called after each target.

    target_pool bool[N] (a disjoint run, Shokri et al.; None: a lira run, every example is a challenge): the
    targets trained on target-pool examples only and the shadows on the others (the shadow pool), so no
    shadow is IN on a target-pool example. The shadow game is then played on the shadow pool only
    (`Responses.restricted`: pseudo-targets are shadows, their members and non-members within the shadow
    pool), and each target is attacked on the whole population with its attack classifiers fit on the
    shadows' shadow-pool rows (`Responses.fitting_on`); its scores and membership are kept on the target
    pool only (`GameResult.examples`), so no shadow-pool row enters a target's figures and no target-pool
    row enters a threshold.
    """
    targets = list(targets)
    if not targets:
        raise ConfigError("the shadow game needs at least one target")
    game_view, target_view, challenge = responses, responses, None
    if target_pool is not None:
        in_pool = np.asarray(target_pool, dtype=bool)
        challenge, shadow_pool = np.flatnonzero(in_pool), np.flatnonzero(~in_pool)
        if not len(challenge) or not len(shadow_pool):
            raise ConfigError("membership.target_fraction: a disjoint run needs a non-empty target pool and "
                              "shadow pool")
        game_view, target_view = responses.restricted(shadow_pool), responses.fitting_on(shadow_pool)
    game = shadow_scores(attack_fn, game_view, target=targets[0], shadows=shadows, n_pseudo=n_pseudo, seed=seed)
    shadow_ids = set(np.asarray(shadows).reshape(-1).tolist())
    keep = slice(None) if challenge is None else challenge
    target_pairs = []
    for t in targets:
        if int(t) in shadow_ids:
            raise ConfigError(f"target {t} is listed among its own shadows; its membership must stay unseen")
        target_pairs.append((np.asarray(attack_fn(target_view, target=t, shadows=shadows))[keep],
                             responses.member[t][keep]))
        if on_target is not None:
            on_target(t)
    scores, member = pool(target_pairs)
    return GameResult(scores, member, shadow_thresholds(*pool([game] * len(targets)), fprs=fprs), challenge)
