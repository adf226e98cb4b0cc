"""The `transfer` attack on the precomputed "transfer" statistic (`attacks.compute.transfer`). Pure.

The statistic is, per (model, example), the confidence (or minus the loss) at the example's ground-truth label
of local models trained on data relabelled by that model (Li & Zhang, Label-Leaks §4): higher = member. For
the "in_out" variant it is that value's gain from training on the example: each transfer model trains on a
balanced random half, and the statistic is the mean over the transfer models that trained on the example minus
the mean over those that did not (of the logit confidence, or minus the loss). Fitting the target's label of
a member (right, and often a hard example) raises its true-label confidence a lot; an easy non-member gains
little, a misclassified one loses. It calibrates each example's difficulty without shadows (so it also runs
where no shadow trained on the candidates).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attacks.methods.calibrated import calibrate
from attacks.responses import Responses
from farm.errors import ConfigError

STATISTIC = "transfer"  # the per-(model, example) statistic in Responses.statistics
VARIANTS = ("in_out", "threshold", "calibrated")
SPLIT = ("in_out",)  # the variants whose statistic comes from IN/OUT halves of transfer models
PER_EXAMPLE = ("calibrated",)  # the variants that read every shadow's statistic


def transfer(responses: Responses, *, target: int, shadows: Sequence[int], variant: str = "in_out",
             score: str = "loss", n_models: int = 4, global_variance: bool | str = "auto") -> np.ndarray:
    """Scores float64[N] from the precomputed "transfer" statistic (higher = member).

    variant "in_out" (default): the target's IN-minus-OUT statistic (n_models >= 2 transfer models on halves),
    "threshold": the target's statistic (a global threshold is then chosen on shadows, for both);
    "calibrated": per-example LiRA (online) of the statistic over the shadows' (needs every shadow's, and
    shadows that trained on the candidates), on the logit of the confidence ("confidence") or minus the loss.
    score and n_models (transfer models per relabelled model) are used by the preparation step.
    """
    values = responses.statistics.get(STATISTIC)
    if values is None or np.isnan(values[target]).any():
        raise ConfigError("attack 'transfer' needs transfer models trained on the target's labels; "
                          "run it through `shadowfarm attack`")
    if variant in ("threshold", "in_out"):
        return np.asarray(values[target], dtype=np.float64)
    if variant not in PER_EXAMPLE:
        raise ConfigError(f"attack 'transfer': unknown variant {variant!r} (valid: {', '.join(VARIANTS)})")
    shadows = np.asarray(shadows, dtype=np.intp)
    if np.isnan(values[shadows]).any():
        raise ConfigError("attack 'transfer' variant 'calibrated' needs the transfer statistic of every shadow")
    stat = np.asarray(values, dtype=np.float64)
    if score == "confidence":
        p = np.clip(stat, 1e-6, 1 - 1e-6)
        stat = np.log(p) - np.log1p(-p)
    return calibrate(stat[np.r_[int(target), shadows]], responses.member[shadows], global_variance=global_variance)
