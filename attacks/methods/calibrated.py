"""The `calibrated` attack: LiRA (Carlini et al.) on the label-only statistic "fraction of perturbed
queries still answered correctly", fit per example over the shadows (`attacks.stats.lira`). Pure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attacks.responses import Responses
from attacks.stats.correctness import PERTURBATION_KINDS, check_game, count_correct, query_indices, require_kinds
from attacks.stats.lira import lira_scores, smoothed_logit_fraction
from farm.errors import ConfigError

NAME = "calibrated"


def calibrated(responses: Responses, *, target: int, shadows: Sequence[int], variant: str = "online",
               kinds: Sequence[str] | None = None, global_variance: bool | str = "auto",
               min_std: float = 0.1, empty: str = "pooled") -> np.ndarray:
    """LiRA calibration of the label-only statistic "fraction of queries still answered correctly".

    Statistic per (model, example): k correct out of the n queries of `kinds` (default: every
    non-clean query of the run; every kind listed must be present), smoothed as
    logit((k + 0.5) / (n + 1)). Per example, Gaussians are fit over IN shadows and OUT shadows
    (`lira_scores`). variant "global" skips the calibration: the score is the target's statistic
    itself, to be thresholded globally (the baseline calibration is measured against). Needs at
    least one perturbation query (or a query of one of `kinds`). Returns float64[N].
    """
    chosen = _kinds(responses, kinds)
    shadows = check_game(responses, target=target, shadows=shadows)
    statistic = _statistic(responses, np.concatenate([[int(target)], shadows]), chosen)
    if variant == "global":
        return statistic[0]
    return calibrate(statistic, responses.member[shadows], variant=variant, global_variance=global_variance,
                     min_std=min_std, empty=empty)


def calibrate(statistic: np.ndarray, shadow_member: np.ndarray, *, variant: str = "online",
              global_variance: bool | str = "auto", min_std: float = 0.1, empty: str = "pooled") -> np.ndarray:
    """The per-example calibration every calibrated attack applies to its statistic: LiRA (`lira_scores`).

    statistic float[1 + S, N]: the target's row first, then its shadows'; shadow_member bool[S, N]: the
    shadows' membership (all False: the offline test of inputs no shadow trained on). Returns float64[N]."""
    return lira_scores(target_statistic=statistic[0], shadow_statistic=statistic[1:], shadow_member=shadow_member,
                       variant=variant, global_variance=global_variance, min_std=min_std, empty=empty)


def statistic(responses: Responses, models: np.ndarray, settings: dict) -> np.ndarray:
    """float64[len(models), N]: the statistic `calibrated` calibrates, for `models`: the smoothed fraction of the
    queries of settings["kinds"] (None: every non-clean query) answered correctly."""
    return _statistic(responses, models, _kinds(responses, settings.get("kinds")))


def _kinds(responses: Responses, kinds: Sequence[str] | None) -> tuple[str, ...]:
    if kinds is None:
        chosen = tuple(sorted({kind for kind in responses.query_kinds if kind != "clean"}))
        if not chosen:
            require_kinds(responses, attack=NAME, any_of=PERTURBATION_KINDS)
        return chosen
    chosen = tuple(kinds)
    for kind in chosen:  # every requested kind must be there: a silent subset would change the statistic
        require_kinds(responses, attack=NAME, any_of=(kind,))
    if not chosen:
        raise ConfigError(f"attack {NAME!r}: kinds is empty; leave it unset to use every non-clean query")
    return chosen


def _statistic(responses: Responses, models: np.ndarray, kinds: tuple[str, ...]) -> np.ndarray:
    queries = query_indices(responses, kinds=kinds)
    return smoothed_logit_fraction(count_correct(responses, queries=queries, models=models), len(queries))
