"""The `transfer` attack on the precomputed "transfer" statistic (`attacks.compute.transfer`). Pure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attacks.responses import Responses
from farm.errors import ConfigError

STATISTIC = "transfer"  # the per-(model, example) statistic in Responses.statistics


def transfer(responses: Responses, *, target: int, shadows: Sequence[int], n_models: int = 4) -> np.ndarray:
    """Scores float64[N]: the target's precomputed "transfer" statistic (higher = member).

    n_models (transfer models per relabelled model) is used by the preparation step.
    """
    values = responses.statistics.get(STATISTIC)
    if values is None or np.isnan(values[target]).any():
        raise ConfigError("attack 'transfer' needs transfer models trained on the target's labels; "
                          "run it through `shadowfarm attack`")
    return np.asarray(values[target], dtype=np.float64)
