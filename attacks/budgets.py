"""The query budgets of the label-only attacks in the query-budget study (`AttackSpec.budgets`, `attacks.spec.
Budgets`; the study: `attacks.studies.queries`), as plain data, free of torch and Ray.

- the run's query set as it is: gap and transfer read the clean label (1 query), augmentation the clean query and
  the flips, translations and rotations;
- noise copies (`COPY_BUDGETS`): the first k of the run's gaussian or bitflip copies, k = 1, 2, 4, ... up to what
  the run has (a run with none is re-queried with `noise_copies`);
- the attack's own queries: HopSkipJump iterations (measured: the queries each example took), the walk's K steps
  (DHAttack: 5-30), YOQO's crafted queries (1-8: the checkpoints of one descent) and OSLO's tau levels (1-8),
  each scored by the fraction answered right and by the shadows' margins (score "margins"); their 8-query points
  also with 8 and 22 of the run's noise copies added (`noise_copies`: 16 and 30 queries per example).
"""

from __future__ import annotations

from attacks.spaces import noise_specs
from attacks.spec import Budgets
from attacks.stats.correctness import AUGMENTATION_KINDS, NOISE_KINDS, PERTURBATION_KINDS

COPY_BUDGETS = (1, 2, 4, 8, 16, 32, 64)  # noise copies per example; capped at what the run's query set has
MAX_COPIES = 1024  # the largest copy budget --copies accepts


def noise_copies(n: int, info) -> list:
    """The query set a run without noise copies is re-queried with: n gaussian (sigma 0.1 of the value range) or
    bitflip (p 0.1) copies, as `shadowfarm tune` would ask them."""
    return noise_specs({"n": n, "sigma": 0.1, "p": 0.1}, info)


def _kinds_setting(kinds: tuple[str, ...]) -> dict:
    return {"kinds": list(kinds)}


CLEAN = Budgets(reads=("clean",))
AUGMENTED = Budgets(reads=("clean",) + AUGMENTATION_KINDS)
NOISE = Budgets(reads=NOISE_KINDS, copies=NOISE_KINDS, copy_queries=noise_copies)
CALIBRATED_NOISE = Budgets(reads=PERTURBATION_KINDS, copies=NOISE_KINDS, copy_queries=noise_copies,
                           copy_settings=_kinds_setting)
HOPSKIPJUMP_ITERATIONS = Budgets(points=tuple({"max_iter": k} for k in (1, 2, 4)),
                                 sent="attacks.compute.boundary:queries_sent",
                                 explicit_only="runs HopSkipJump on every example at each point (many queries)")
WALK_STEPS = Budgets(points=tuple({"steps": k} for k in (5, 10, 20, 30)))
SCORES = ("fraction", "margins")  # a crafted attack's points are scored both ways (`attacks.methods.yoqo.SCORES`)
NOISE_ADDED = (8, 22)  # 8 crafted queries plus this many noise copies: 16 and 30 queries per example
CRAFTED_QUERIES = Budgets(points=tuple({"n_queries": k, "score": s} for s in SCORES for k in (1, 2, 4, 8))
                          + tuple({"n_queries": 8, "score": s, "noise_copies": c} for s in SCORES for c in NOISE_ADDED),
                          prepare="attacks.compute.yoqo:prepare_points")
EIGHT_LEVELS = [0.75, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05, 0.02]
TAU_LEVELS = Budgets(points=tuple({"levels": levels, "score": s} for s in SCORES
                                  for levels in ([0.5], [0.5, 0.1], [0.5, 0.25, 0.1, 0.05], EIGHT_LEVELS))
                     + tuple({"levels": EIGHT_LEVELS, "score": s, "noise_copies": c}
                             for s in SCORES for c in NOISE_ADDED),
                     prepare="attacks.compute.oslo:prepare_points")
