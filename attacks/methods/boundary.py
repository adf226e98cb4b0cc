"""The `boundary` attack on precomputed HopSkipJump distances (`attacks.compute.boundary`). Pure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attacks.methods.calibrated import calibrate
from attacks.responses import Responses
from farm.errors import ConfigError

STATISTIC = "boundary"  # the per-(model, example) statistic in Responses.statistics
PER_EXAMPLE = ("calibrated",)  # the variants that read every shadow's distances


def boundary(responses: Responses, *, target: int, shadows: Sequence[int], variant: str = "threshold",
             max_iter: int = 10, init_evals: int = 100, max_evals: int = 1000, budget: int | None = None,
             global_variance: bool | str = "auto") -> np.ndarray:
    """Scores float64[N] from the precomputed "boundary" distances (members lie farther from the boundary).

    variant "threshold": the target's distance (a global threshold is then chosen on shadows);
    "calibrated": per-example LiRA on log(distance + 1e-3) over the shadows' distances (needs every
    shadow's distances). The HopSkipJump settings are used by the preparation step.
    """
    values = responses.statistics.get(STATISTIC)
    if values is None or np.isnan(values[target]).any():
        raise ConfigError("attack 'boundary' needs HopSkipJump distances; run it through `shadowfarm attack`")
    if variant == "threshold":
        return np.asarray(values[target], dtype=np.float64)
    if variant not in PER_EXAMPLE:
        raise ConfigError(f"attack 'boundary': unknown variant {variant!r} (valid: calibrated, threshold)")
    shadows = np.asarray(shadows, dtype=np.intp)
    if np.isnan(values[shadows]).any():
        raise ConfigError("attack 'boundary' variant 'calibrated' needs the distances of every shadow")
    stat = np.log(values + 1e-3)
    return calibrate(stat[np.r_[int(target), shadows]], responses.member[shadows], global_variance=global_variance)
