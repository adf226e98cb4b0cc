"""Membership modes in the attack stage and the audit: what a run's `membership.mode` changes.

lira (LiRA's design): every model trains on a random half of the population; every example is a challenge
example and every non-target model is a shadow, IN on some examples and OUT on others.

disjoint (Shokri et al.'s design, `farm.membership.disjoint_membership`): the population is split into a
target pool and a shadow pool; the targets (membership.target_ids) train on target-pool examples only, the
shadows (every other model) on shadow-pool examples only, so every shadow is OUT on every target-pool example.
Then (`attacks.stats.shadow_game.play` with target_pool):
- the challenge set is the target pool: targets are scored there, members vs non-members of the target
  within it; nothing of the shadow pool enters a target's figures;
- thresholds come from the shadow game played on the shadow pool only (pseudo-targets are shadows, their
  members and non-members within the shadow pool);
- attack classifiers (augmentation, the noise classifier, confidence_classifier pooled or per class) fit on
  the shadows' shadow-pool rows and score the target's target-pool rows;
- per-example calibration that needs IN shadows (online LiRA: `calibrated`, `lira_confidence`; `boundary`
  variant calibrated) cannot score a target-pool example: asked for explicitly it is a one-line ConfigError,
  and by default `calibrated` and `lira_confidence` run their offline variant (a one-sided test against the
  OUT shadows, here all of them), recorded in metrics.json's `auto_settings`
  (`attacks.settings.mode_settings`);
- an audit (`attacks.audit`) challenges target-pool examples (all, or a seeded sample) and queries the target
  on those only, so the attacks whose statistics need the target's answers elsewhere
  (`AttackSpec.target_statistics`: transfer, boundary) are skipped (or refused when asked for).
metrics.json records the mode and the challenge set (`challenge_of`); the report labels both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attacks.registry import ATTACKS
from farm.config import MembershipConfig
from farm.errors import ConfigError


def challenge_of(mode: str, target_pool: np.ndarray) -> dict:
    """What metrics.json records of the membership mode: the mode and the challenge set it scores."""
    if mode == "lira":
        return {"membership_mode": mode, "challenge_set": "population", "n_challenge_examples": len(target_pool)}
    return {"membership_mode": mode, "challenge_set": "target pool", "n_challenge_examples": int(target_pool.sum()),
            "n_shadow_pool_examples": int((~target_pool).sum())}


def split_targets(membership: MembershipConfig, targets: Sequence[int] | None = None, *,
                  modes: Sequence[str] = ("lira",)) -> tuple[list[int], np.ndarray]:
    """(targets, shadows int[S]): `targets` (None: membership.target_ids) and the shadows.

    lira: the shadows are every other model of the run. disjoint (Shokri et al.): the targets must be target
    models (membership.target_ids: they trained on the target pool) and the shadows are the models that are
    not (they trained on the shadow pool), whichever targets are attacked. `modes`: the membership modes the
    caller supports (the attack stage and the audit: both; tuning and the studies: lira).
    """
    if membership.mode not in modes:
        raise ConfigError(f"membership.mode: this command supports {' or '.join(modes)} runs, not "
                          f"{membership.mode!r}")
    targets = list(targets if targets is not None else membership.target_ids)
    for t in targets:
        if not 0 <= t < membership.n_models:
            raise ConfigError(f"--targets: {t} is not a model id in [0, {membership.n_models})")
        if membership.mode == "disjoint" and t not in membership.target_ids:
            raise ConfigError(f"--targets: model {t} is a shadow of this disjoint run (it trained on the shadow "
                              f"pool); expected one of membership.target_ids {list(membership.target_ids)}")
    not_shadows = set(membership.target_ids) if membership.mode == "disjoint" else set(targets)
    shadows = np.array([i for i in range(membership.n_models) if i not in not_shadows], dtype=np.intp)
    if len(shadows) < 3:
        raise ConfigError(f"membership.n_models: {len(shadows)} shadows is too few (need at least 3)")
    return targets, shadows


def audit_attacks(membership: MembershipConfig, shadows: np.ndarray, asked: Sequence[str] | None, names: list[str],
                  skipped: dict) -> tuple[list[str], dict]:
    """(attacks, skipped) for the run's membership mode; a disjoint run's shadows must be its shadow models."""
    if membership.mode == "lira":
        return names, skipped
    wrong = sorted(set(shadows.tolist()) & set(membership.target_ids))
    if wrong:
        raise ConfigError(f"--shadows: model {wrong[0]} is a target model of this disjoint run (it trained on the "
                          "target pool); a disjoint run's shadows are the models not in membership.target_ids")
    for name in [name for name, spec in ATTACKS.items() if spec.target_statistics]:
        if name in names:
            if asked is not None:
                raise ConfigError(f"attack {name!r} cannot run in an audit of a disjoint run: it needs the target's "
                                  "answers on the shadow pool, which a disjoint audit does not query")
            names = [n for n in names if n != name]
            skipped = {**skipped, name: "disjoint audit: the target is queried on the challenge examples only"}
    return names, skipped
