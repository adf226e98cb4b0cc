"""What an audit asks and of whom (`attacks.audit`): its options, attacks, settings, shadows and examples.

`audit_scope` resolves `AuditOptions` against a run before the target is asked anything: the attacks (label-only
ones the run supports; adaptive ones refused where the target cannot be called, `offline=True`), their settings
(explicit, tuned, automatic), the shadows, the challenge examples and the known non-members. The online audit
and the offline one (`attacks.offline`: the queries exported, the answers read back) share it, so both ask the
very same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from attacks.audit_checks import known_nonmembers, nonmember_ids
from attacks.modes import audit_attacks
from attacks.registry import choose_attacks, get_attack
from attacks.responses import Responses
from attacks.settings import resolve
from attacks.tune.tuned import load_tuned, run_model, without_target
from farm.errors import ConfigError
from farm.plan import Plan


@dataclass(frozen=True)
class AuditOptions:
    """attacks: None = every label-only attack the run supports except boundary (costly: ask by name);
    shadows: None = the run's non-target models, "all" = every model of the run; examples: None = the whole
    population, else a seeded sample of that many; members: example ids of the target's training set (ground
    truth), None = unknown; nonmembers: example ids it never trained on, never challenged (`attacks.audit_checks`);
    calibrate: "shadows" (thresholds from the shadow game) or "nonmembers" (from the known non-members' scores)."""

    attacks: tuple[str, ...] | None = None
    shadows: tuple[int, ...] | str | None = None
    settings: dict = field(default_factory=dict)
    fpr: float = 0.01
    n_pseudo: int = 4
    bootstrap: int = 200
    seed: int = 0
    examples: int | None = None
    members: tuple[int, ...] | None = None
    nonmembers: tuple[int, ...] | str | None = None  # "reference": the run's reference pool
    calibrate: str = "shadows"
    tuned: bool = False  # tune/<attack>/best.json: setting, query set, threshold for its FPR (attacks.tune.tuned)


def challenge_examples(n: int, *, examples: int | None, seed: int) -> np.ndarray:
    """Sorted example ids int64[K]: all n, or a seeded sample of `examples` of them."""
    if examples is None or examples >= n:
        return np.arange(n)
    if examples < 2:
        raise ConfigError(f"--examples: expected at least 2, got {examples}")
    return np.sort(np.random.default_rng(seed).choice(n, size=examples, replace=False))


@dataclass(frozen=True)
class Scope:
    """An audit resolved against its run: attack names (and those skipped, with why), tuned results, resolved and
    automatic settings per attack, shadows int[S], challenge examples int[K], known non-members int[J], the
    scored examples (challenge then known, int[K + J]) and the ground truth bool[N] (None: unknown)."""

    names: list[str]
    skipped: dict
    tuned: dict
    settings: dict
    auto: dict
    shadows: np.ndarray
    examples: np.ndarray
    known: np.ndarray
    scored: np.ndarray
    member: np.ndarray | None


def audit_scope(plan: Plan, responses: Responses, options: AuditOptions, *, target: str,
                offline: bool = False) -> Scope:
    """`options` resolved against the run (`responses`: its models' answers); offline: the target answers a file
    of exported queries, so an attack whose queries depend on earlier answers (`AttackSpec.adaptive`) is refused."""
    mode, pool = plan.cfg.membership.mode, plan.target_pool
    shadows = without_target(_shadows(options.shadows, plan.cfg.membership.target_ids, responses.n_models), target)
    names, skipped = audit_attacks(plan.cfg.membership, shadows, options.attacks, *choose_attacks(
        options.attacks, responses, subject="this target (it answers labels only)", weights=False))
    for name in names if offline else ():
        if get_attack(name).adaptive:
            raise ConfigError(f"--attacks {name}: cannot be audited from exported queries: "
                              f"{get_attack(name).adaptive}; audit it with --target")
    tuned = load_tuned(plan.run, names, targets=run_model(target)) if options.tuned else {}
    settings, auto = resolve(names, explicit=options.settings, tuned=tuned, mode=mode, n_shadows=len(shadows))
    for name in set(options.settings) - set(names):
        get_attack(name)
    examples = np.flatnonzero(pool)[challenge_examples(int(pool.sum()), examples=options.examples, seed=options.seed)]
    member = _ground_truth(options.members, responses.n_examples)
    known = known_nonmembers(nonmember_ids(options.nonmembers, plan, target), n=responses.n_examples, pool=pool,
                             member=member, calibrate=options.calibrate, fpr=options.fpr)
    examples = np.setdiff1d(examples, known)  # known non-members are scored, never challenged
    if member is not None:
        _check_classes(member[examples])
    return Scope(names=names, skipped=skipped, tuned=tuned, settings=settings, auto=auto, shadows=shadows,
                 examples=examples, known=known, scored=np.concatenate([examples, known]), member=member)


def _shadows(chosen: tuple[int, ...] | str | None, target_ids, n_models: int) -> np.ndarray:
    if chosen == "all":
        shadows = list(range(n_models))
    elif chosen is None:
        shadows = [m for m in range(n_models) if m not in set(target_ids)]
    else:
        shadows = sorted(set(chosen))
    bad = [m for m in shadows if not 0 <= m < n_models]
    if bad:
        raise ConfigError(f"--shadows: {bad[0]} is not a model id in [0, {n_models})")
    if len(shadows) < 3:
        raise ConfigError(f"--shadows: {len(shadows)} shadows is too few (need at least 3)")
    return np.asarray(shadows, dtype=np.intp)


def _ground_truth(members: tuple[int, ...] | None, n: int) -> np.ndarray | None:
    if members is None:
        return None
    ids = np.asarray(members, dtype=np.int64)
    bad = ids[(ids < 0) | (ids >= n)]
    if len(bad):
        raise ConfigError(f"--members: example id {int(bad[0])} is not in the population [0, {n})")
    member = np.zeros(n, dtype=bool)
    member[ids] = True
    return member


def _check_classes(member: np.ndarray) -> None:
    if member.all() or not member.any():
        raise ConfigError(f"--members: the challenge examples hold {int(member.sum())} members of {len(member)}; "
                          "metrics need both members and non-members")
