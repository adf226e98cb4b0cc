"""The statistics that need model access, computed before the pure attacks read them from `responses.statistics`.

Each attack that needs one says so on its spec (`AttackSpec.statistic`, `attacks.spec.Statistic`): the
`attacks.compute` callables that prepare it for the run's models and for an audit, e.g.
- transfer (Label-Leaks): the confidence or loss at the true label of models trained on each attacked model's
  clean labels (`attacks.compute.transfer`);
- boundary: HopSkipJump distances to the decision boundary (`attacks.compute.boundary`, cached in the run per
  example chunk);
- the white-box attacks: loss, gradient norms and activations of every model from its saved weights
  (`attacks.compute.whitebox`, cached in the run per model and example chunk), one statistic for all three.

`prepare_statistics` computes them for the run's models (the attack stage, tuning, the studies);
`audit_statistics` for the run's shadows plus an audited target that answers through an oracle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attacks.registry import get_attack
from attacks.responses import Responses
from attacks.spec import Statistic, load
from farm.cluster import ensure_ray
from farm.plan import Plan


def needed(settings: dict) -> dict[Statistic, dict]:
    """The statistics the attacks in `settings` (name -> resolved settings) need, each once, with the settings of
    the first attack that needs it."""
    out: dict[Statistic, dict] = {}
    for name, chosen in settings.items():
        statistic = get_attack(name).statistic
        if statistic is not None and statistic not in out:
            out[statistic] = chosen
    return out


def prepare_statistics(plan: Plan, responses: Responses, settings: dict, *, scored: Sequence[int],
                       everyone: Sequence[int], seed: int, progress: bool = True, local: bool = False) -> Responses:
    """`responses` with the statistics of the attacks in `settings` that need model access.

    settings: attack name -> resolved settings (only attacks present are prepared); scored: the models
    that are attacked (targets, pseudo-targets); everyone: all models a per-example calibration reads.
    local=True: in this process, no Ray.
    """
    todo = needed(settings)
    if todo and not local:
        ensure_ray()
    for statistic, chosen in todo.items():
        responses = load(statistic.prepare)(plan, responses, chosen, scored=scored, everyone=everyone, seed=seed,
                                            progress=progress, local=local)
    return responses


def audit_statistics(plan: Plan, responses: Responses, oracle, settings: dict, *, examples: np.ndarray,
                     pseudo: Sequence[int], shadows: Sequence[int], seed: int, progress: bool) -> Responses:
    """`prepare_statistics` for an audit: `responses` holds the run's models on the challenge `examples`
    (int[K]) plus the target, answering through `oracle`, as its last row."""
    for statistic, chosen in needed(settings).items():
        if statistic.audit is not None:
            responses = load(statistic.audit)(plan, responses, oracle, chosen, examples=examples, pseudo=pseudo,
                                              shadows=shadows, seed=seed, progress=progress)
    return responses
