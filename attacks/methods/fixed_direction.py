"""The `fixed_direction` attack (DHAttack, Li et al., USENIX Security 2025): the first wrong step of a walk from
each input toward a fixed point, calibrated per example against the shadows' own first wrong steps. Pure.

The walk is the query kind "toward" (`farm.queries`: K equal steps from x toward the point, K queries per
example); `attacks.compute.fixed_direction` asks every model (and an audited target, through its oracle) and
stores the first wrong step of each (model, example) as the statistic read here. Members of a model's training
set tend to keep their label longer along the walk.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attacks.methods.calibrated import calibrate
from attacks.responses import Responses
from farm.errors import ConfigError

STATISTIC = "fixed_direction"  # the per-(model, example) first wrong step in Responses.statistics
PER_EXAMPLE = ("online", "offline")  # the variants calibrated per example on the shadows
VARIANTS = (*PER_EXAMPLE, "global")
STEPS = (5, 30)  # the range of K the settings accept (DHAttack: 5-30 queries)


def first_wrong_step(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64[M, N]: the first step k in 1..K whose answer differs from the true label, K + 1 when none does.

    pred int[M, N, K]: the answers at steps 1..K in order (rows of -1, models never asked, give NaN);
    labels int[N]."""
    pred = np.asarray(pred)
    steps = pred.shape[-1]
    wrong = pred != np.asarray(labels)[None, :, None]
    first = np.where(wrong.any(-1), wrong.argmax(-1) + 1, steps + 1).astype(np.float64)
    first[(pred < 0).all(-1)] = np.nan
    return first


def queries_per_example(settings: dict) -> int:
    """Queries the attack sends the target per example (`AttackSpec.queries`): one per step of the walk."""
    return int(settings["steps"])


def check_settings(*, steps: int, point) -> None:
    """ConfigError unless steps is an integer in `STEPS` and point is "mean" or a number."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not STEPS[0] <= steps <= STEPS[1]:
        raise ConfigError(f"attack 'fixed_direction': steps must be an integer in [{STEPS[0]}, {STEPS[1]}], "
                          f"got {steps!r}")
    if point != "mean" and (isinstance(point, bool) or not isinstance(point, (int, float))):
        raise ConfigError(f"attack 'fixed_direction': point must be 'mean' or a number, got {point!r}")


def fixed_direction(responses: Responses, *, target: int, shadows: Sequence[int], variant: str = "online",
                    steps: int = 15, point: str | float = "mean", global_variance: bool | str = "auto",
                    min_std: float = 0.5, empty: str = "pooled") -> np.ndarray:
    """Scores float64[N] from the first wrong step of the walk toward `point` in `steps` queries per example.

    variant "online": per-example IN/OUT Gaussians of the first wrong step over the shadows (LiRA's likelihood
    ratio); "offline": the one-sided test against the OUT shadows alone; "global": the target's first wrong
    step itself (a global threshold is then chosen on shadows). min_std: floor of every std, in steps. The
    walk's settings (steps, point) are used by the preparation step.
    """
    check_settings(steps=steps, point=point)
    if variant not in VARIANTS:
        raise ConfigError(f"attack 'fixed_direction': unknown variant {variant!r} (valid: {', '.join(VARIANTS)})")
    values = responses.statistics.get(STATISTIC)
    if values is None or np.isnan(values[target]).all():  # NaN columns: not asked (a disjoint audit's shadow pool)
        raise ConfigError("attack 'fixed_direction' needs the walks' first wrong steps; run it through "
                          "`shadowfarm attack` or `shadowfarm audit`")
    if variant == "global":
        return np.asarray(values[target], dtype=np.float64)
    shadows = np.asarray(shadows, dtype=np.intp)
    if np.isnan(values[shadows]).any():
        raise ConfigError(f"attack 'fixed_direction' variant {variant!r} needs the first wrong steps of every shadow")
    return calibrate(values[np.r_[int(target), shadows]], responses.member[shadows], variant=variant,
                     global_variance=global_variance, min_std=min_std, empty=empty)
