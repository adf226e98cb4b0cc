"""The `oslo` attack (Peng et al., NeurIPS 2024, "One-Shot Label-Only"): one query per level tau, each a transfer
adversarial input grown on source OUT shadows until validation OUT shadows give the true class less than tau;
scored by the levels at which the target stays correct, calibrated per example on shadows that did not craft the
queries (the split of `attacks.methods.yoqo`). Pure; the crafting is `attacks.compute.oslo`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attacks.methods.yoqo import check_score, crafted_scores, with_noise
from attacks.responses import Responses
from farm.errors import ConfigError

STATISTIC = "oslo"  # smoothed logit of the fraction of a model's tau-level queries answered with the true label
FOLD = "oslo_fold"  # the crafting set whose queries each row answered
VARIANTS = ("online", "offline", "global")
NORMS = ("auto", "linf", "l2")


def queries_per_example(settings: dict) -> int:
    """Queries the attack sends the target per example of its own (`AttackSpec.queries`): one per level (the noise
    copies it adds are the run's)."""
    return len(settings["levels"])


def check_settings(settings: dict) -> None:
    """ConfigError for a setting out of range (before any crafting starts)."""
    levels = settings["levels"]
    if settings["variant"] not in VARIANTS:
        raise ConfigError(f"attack 'oslo': unknown variant {settings['variant']!r} (valid: {', '.join(VARIANTS)})")
    check_score("oslo", settings)
    if (not isinstance(levels, (list, tuple)) or not 1 <= len(levels) <= 8
            or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1 for t in levels)):
        raise ConfigError(f"attack 'oslo': levels must be 1 to 8 numbers in (0, 1), got {levels!r}")
    if isinstance(settings["steps"], bool) or not isinstance(settings["steps"], int) or not 1 <= settings["steps"]:
        raise ConfigError(f"attack 'oslo': steps must be an integer >= 1, got {settings['steps']!r}")
    if settings["norm"] not in NORMS:
        raise ConfigError(f"attack 'oslo': norm must be one of {', '.join(NORMS)}, got {settings['norm']!r}")


def oslo(responses: Responses, *, target: int, shadows: Sequence[int], variant: str = "online",
         levels: Sequence[float] = (0.5, 0.25, 0.1, 0.05), steps: int = 40, lr: float = 0.01,
         momentum: float = 1.0, norm: str = "auto", split: bool = True, score: str = "fraction",
         noise_copies: int = 0, global_variance: bool | str = "auto", min_std: float = 0.1,
         empty: str = "pooled") -> np.ndarray:
    """Scores float64[N]: the fraction of the tau levels at which the target stays correct (smoothed logit),
    calibrated per example against the calibrating shadows' answers to the same queries: "online" (IN/OUT
    Gaussians), "offline" (OUT only), or "global" (the statistic itself). norm "auto": L-infinity sign steps on
    images, L2 steps on tabular data. score and noise_copies: as `attacks.methods.yoqo.yoqo`'s. The crafting
    settings (levels, steps, lr, momentum, norm) are used by the preparation step."""
    check_settings({"variant": variant, "levels": levels, "steps": steps, "norm": norm, "score": score,
                    "noise_copies": noise_copies})
    calibration = {"variant": variant, "global_variance": global_variance, "min_std": min_std, "empty": empty}
    scores = crafted_scores(responses, target=target, shadows=shadows, names=(STATISTIC, FOLD), score=score,
                            **calibration)
    return with_noise(STATISTIC, scores, responses, target=target, shadows=shadows, copies=noise_copies,
                      **calibration)
