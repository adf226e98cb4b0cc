"""The `yoqo` attack (Wu et al., ICLR 2024, "You Only Query Once"): one crafted query per example (or a few, for
a graded score), calibrated per example on shadows that did not craft it. Pure.

`attacks.compute.yoqo` crafts the queries by gradient descent through the shadows' weights and asks every model
(and an audited target, through its oracle) to label them. A crafted input is fit to the shadows that crafted
it, so their answers on it are biased: the shadows are split into two crafting sets (`split`), each crafting the
queries the other set answers. A model's statistic is its answers on the queries crafted by the set it is not
in; the target answers those of set 0 and is calibrated against set 1, and a pseudo-target of the shadow game
answers the queries of the other set (crafting for it leaves it out) and is calibrated against its own set's
other members, which answered the same inputs without crafting them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attacks.methods.calibrated import calibrate, calibrated
from attacks.responses import Responses
from attacks.stats.correctness import NOISE_KINDS, query_indices, with_copies
from attacks.stats.lira import answer_scores
from farm.errors import ConfigError

STATISTIC = "yoqo"  # smoothed logit of the fraction of a model's crafted queries answered with the true label
FOLD = "yoqo_fold"  # the crafting set each model's row answered the queries of: 0 or 1 (one value per model)
# Every crafted attack's statistics also hold, per (model, example, query), "<statistic>_answers" (1: the true label)
# and, for the shadows only, "<statistic>_margins" (logit of the true label minus the largest other), for
# score "margins" (`attacks.stats.lira.answer_scores`).
SCORES = ("fraction", "margins")
CRAFTING = ("auto", "online", "offline")  # "auto": as the variant ("offline" crafts offline, the others online)
MAX_NOISE_COPIES = 1024
SCORING = ("score", "noise_copies")  # settings that change how the answers are scored, not what is crafted
PER_EXAMPLE = ("online", "offline")
VARIANTS = (*PER_EXAMPLE, "global")
MAX_QUERIES = 8
# score "fraction": scores within TIE_BREAK of each other are ordered by the margins score (where the shadows'
# margins are there); far below the gaps between distinct fraction scores, far above float64's resolution at them
TIE_BREAK = 1e-9


def queries_per_example(settings: dict) -> int:
    """Queries the attack sends the target per example of its own (`AttackSpec.queries`): its crafted queries (the
    noise copies it adds are the run's, which every audit asks once for all attacks)."""
    return int(settings["n_queries"])


def crafted_part(settings: dict) -> dict:
    """`settings` without the scoring ones (`SCORING`): what decides the crafted queries and their preparation."""
    return {k: v for k, v in settings.items() if k not in SCORING}


def check_settings(settings: dict) -> None:
    """ConfigError for a setting out of range (before any crafting starts)."""
    def bad(name: str, expected: str) -> ConfigError:
        return ConfigError(f"attack 'yoqo': {name} must be {expected}, got {settings[name]!r}")

    def integer(name: str) -> bool:
        return isinstance(settings[name], int) and not isinstance(settings[name], bool)

    if settings["variant"] not in VARIANTS:
        raise ConfigError(f"attack 'yoqo': unknown variant {settings['variant']!r} (valid: {', '.join(VARIANTS)})")
    check_score("yoqo", settings)
    if settings.get("crafting", "auto") not in CRAFTING:
        raise ConfigError(f"attack 'yoqo': crafting must be one of {', '.join(CRAFTING)}, got {settings['crafting']!r}")
    if not integer("n_queries") or not 1 <= settings["n_queries"] <= MAX_QUERIES:
        raise bad("n_queries", f"an integer in [1, {MAX_QUERIES}]")
    if not integer("steps") or not settings["n_queries"] <= settings["steps"] <= 1000:
        raise bad("steps", "an integer in [n_queries, 1000]")
    for name in ("lr", "alpha"):
        if isinstance(settings[name], bool) or not isinstance(settings[name], (int, float)) or not settings[name] > 0:
            raise bad(name, "a number > 0")


def check_score(attack: str, settings: dict) -> None:
    """ConfigError unless settings["score"] (default "fraction") is one of SCORES and settings["noise_copies"]
    (default 0) an integer in [0, MAX_NOISE_COPIES], each fitting the variant."""
    copies = settings.get("noise_copies", 0)
    if isinstance(copies, bool) or not isinstance(copies, int) or not 0 <= copies <= MAX_NOISE_COPIES:
        raise ConfigError(f"attack {attack!r}: noise_copies must be an integer in [0, {MAX_NOISE_COPIES}], "
                          f"got {copies!r}")
    if copies and settings["variant"] == "global":
        raise ConfigError(f"attack {attack!r}: noise_copies adds a per-example calibrated score; use variant "
                          "online or offline")
    score = settings.get("score", "fraction")
    if score not in SCORES:
        raise ConfigError(f"attack {attack!r}: score must be one of {', '.join(SCORES)}, got {score!r}")
    if score == "margins" and settings["variant"] == "global":
        raise ConfigError(f"attack {attack!r}: score 'margins' is calibrated per example; use variant online or "
                          "offline, or score 'fraction'")


def yoqo(responses: Responses, *, target: int, shadows: Sequence[int], variant: str = "online",
         n_queries: int = 1, steps: int = 40, lr: float = 0.02, alpha: float = 1.0, split: bool = True,
         score: str = "fraction", crafting: str = "auto", noise_copies: int = 0,
         global_variance: bool | str = "auto", min_std: float = 0.1, empty: str = "pooled") -> np.ndarray:
    """Scores float64[N]: the target's answers on its crafted queries, calibrated per example.

    variant "online": crafted so that IN shadows keep the label and OUT shadows lose it, scored by per-example
    IN/OUT Gaussians over the calibrating shadows; "offline": crafted to make OUT shadows lose the label at a
    small perturbation, scored against the OUT calibrating shadows alone; "global": online crafting, the target's
    statistic itself (a threshold is then chosen on shadows). score "fraction": the statistic is the smoothed
    fraction of the queries answered right, calibrated by `calibrate`, ties broken by the margins score (a few
    answers over a few shadows tie); "margins": the target's right and wrong answers, each weighed by the chance an
    IN and an OUT model answers that query right, modelled from the calibrating shadows' margins on it
    (`attacks.stats.lira.answer_scores`; graded where few answers tie).
    crafting: "auto" crafts as the variant says; "offline" (OUT shadows only) or "online" whatever the variant (e.g.
    queries crafted offline, then scored online). noise_copies k > 0: `calibrated`'s score on the first k of the
    run's noise copies (the same variant, every shadow calibrating: noise is not crafted) is added, two sources of
    evidence summed (online, both are log-likelihood ratios); the target answers n_queries + k queries per
    example (the k copies are the run's query set's). split False: one crafting set, all the shadows, which then also
    calibrate (biased: kept to show it, `tests/test_yoqo.py`). The crafting settings (n_queries, steps, lr, alpha,
    crafting) are used by the preparation step.
    """
    check_settings({"variant": variant, "n_queries": n_queries, "steps": steps, "lr": lr, "alpha": alpha,
                    "score": score, "crafting": crafting, "noise_copies": noise_copies})
    calibration = {"variant": variant, "global_variance": global_variance, "min_std": min_std, "empty": empty}
    scores = crafted_scores(responses, target=target, shadows=shadows, names=(STATISTIC, FOLD), score=score,
                            **calibration)
    return with_noise(STATISTIC, scores, responses, target=target, shadows=shadows, copies=noise_copies,
                      **calibration)


def with_noise(attack: str, scores: np.ndarray, responses: Responses, *, target: int, shadows: Sequence[int],
               copies: int, **calibration) -> np.ndarray:
    """`scores` plus `calibrated`'s on the first `copies` of the run's noise copies (none: `scores` itself);
    ConfigError naming what the run has when it holds fewer."""
    if not copies:
        return scores
    kinds = tuple(k for k in NOISE_KINDS if k in responses.query_kinds)
    have = len(query_indices(responses, kinds=kinds))
    if have < copies:
        raise ConfigError(f"attack {attack!r}: noise_copies {copies} needs that many noise copies (gaussian or "
                          f"bitflip) in the run's query set; it has {have}")
    return scores + calibrated(with_copies(responses, kinds, copies), target=target, shadows=shadows, kinds=kinds,
                               **calibration)


def crafted_scores(responses: Responses, *, target: int, shadows: Sequence[int], names: tuple[str, str],
                   variant: str, global_variance: bool | str, min_std: float, empty: str,
                   score: str = "fraction") -> np.ndarray:
    """Scores float64[N] of an attack on crafted queries: the target's statistic (names[0]) calibrated per example
    against the shadows that labelled the same crafted inputs (names[1]: the crafting set each row answered),
    online or offline (ties broken by the "margins" score where the shadows' margins are in the statistics), or not
    at all ("global"); score "margins": the target's answers weighed by those shadows' margins (`answer_scores`)."""
    attack = names[0]
    values, fold = responses.statistics.get(names[0]), responses.statistics.get(names[1])
    if values is None or fold is None or np.isnan(values[target]).all():
        raise ConfigError(f"attack {attack!r} needs the answers to its crafted queries; run it through "
                          "`shadowfarm attack` or `shadowfarm audit`")
    if variant == "global":
        return np.asarray(values[target], dtype=np.float64)
    shadows = np.asarray(shadows, dtype=np.intp)
    calibrating = shadows[fold[shadows, 0] == fold[target, 0]]
    if len(calibrating) < 1 or np.isnan(values[calibrating]).any():
        raise ConfigError(f"attack {attack!r} needs the answers of the calibrating shadows")
    calibration = {"variant": variant, "global_variance": global_variance, "min_std": min_std, "empty": empty}
    answers, margins = responses.statistics.get(f"{attack}_answers"), responses.statistics.get(f"{attack}_margins")
    have_margins = answers is not None and margins is not None and not np.isnan(margins[calibrating]).any()
    if score == "margins" and not have_margins:
        raise ConfigError(f"attack {attack!r} with score 'margins' needs the calibrating shadows' margins on its "
                          "crafted queries; prepare it again with `shadowfarm attack`")
    if have_margins:
        weighed = answer_scores(target_answers=answers[target], shadow_margins=margins[calibrating],
                                shadow_member=responses.member[calibrating], **calibration)
    if score == "margins":
        return weighed
    scores = calibrate(values[np.r_[int(target), calibrating]], responses.member[calibrating], **calibration)
    # a few right/wrong answers calibrated over a few shadows tie (34 of 800 examples at the top on paper_digits,
    # 8 queries): ties are broken by the margins score, mapped into (0, TIE_BREAK), so no other order changes
    return scores + TIE_BREAK * (0.5 + np.arctan(weighed) / np.pi) if have_margins else scores
