"""`AttackSpec`: every fact about one attack, in one place (its registry entry, `attacks.registry`).

What a spec holds beside the function: what the attack reads (label_only, white_box, needs: query kinds),
its settings (read from the function's signature), the variants that need IN shadows and the one a disjoint
run falls back to (`attacks.settings`), whether it is left out of the default list for its cost
(explicit_only), whether an audit's statistic needs the target's answers on the attacker's own data
(target_statistics), the per-(model, example) statistic that needs model access and the `attacks.compute`
callables that prepare it (`Statistic`, named lazily so that `import attacks.registry` stays free of torch
and Ray), how the OOD study scores it (`Ood`), and its `shadowfarm tune` search space (`SearchSpace`).

Callables named by "module:function" strings are imported on first use (`load`): the registry is imported by
every process that touches an attack, Ray task workers included, and must stay cheap to import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from farm.config import QuerySpec
    from farm.data import DatasetInfo


def load(ref: str | Callable) -> Callable:
    """The callable named "package.module:function" (imported now), or `ref` itself when it is one."""
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Statistic:
    """A per-(model, example) statistic that needs model access, prepared before the pure attack reads it.

    prepare(plan, responses, settings, *, scored, everyone, seed, progress, local) -> Responses: for the run's
    models (the attack stage, tuning, the studies). audit(plan, responses, oracle, settings, *, examples, pseudo,
    shadows, seed, progress) -> Responses: for an audit (the run's shadows plus an oracle's answers as the last
    row); None: the statistic cannot be computed for an audited target. Attacks sharing one Statistic (equal
    specs) have it prepared once. Both are "module:function" references or callables."""

    prepare: str | Callable
    audit: str | Callable | None = None


@dataclass(frozen=True)
class Ood:
    """How the OOD study (`attacks.studies.ood.study`) scores the attack's OOD inputs.

    how: "as run" (the target's answers substituted into the population responses; the attack as fit on the
    shadows) or "offline" (LiRA's offline test of `statistic` against the shadows' answers on the same inputs).
    variants: the variants it can score (None: all), why_not: why not the others. limited: what makes each
    input cost many queries (e.g. "HopSkipJump"), when only the first `boundary_inputs` of each family are scored
    (empty: all are). statistic: "module:function" computing
    the OOD inputs' statistic per target (for an attack with a model-access `Statistic`), called as
    fn(game, plan, responses, *, x_ood, used, labels, progress) -> {target: {statistic name: float[n_used]}}.
    """

    how: str
    variants: tuple[str, ...] | None = None
    why_not: str = ""
    limited: str = ""
    statistic: str | Callable | None = None


@dataclass(frozen=True)
class SearchSpace:
    """space(info) -> {parameter: distribution} (`attacks.spaces`: ray-free, turned into Tune's by
    `attacks.tune`); queries(config, info) -> the query set a Tune config asks for (None: the run's own)."""

    space: Callable[[DatasetInfo], dict]
    queries: Callable[[dict, DatasetInfo], list[QuerySpec] | None] = lambda config, info: None


@dataclass(frozen=True)
class Budgets:
    """How the query-budget study (`attacks.studies.queries`) varies the queries the attack sends per example.

    reads: the run's query kinds the attack reads (its queries per example at the run's query set, when it sends
    none of its own); copies: kinds of interchangeable copies (noise) the study subsets to the first k of the run's
    (k = 1, 2, 4, ...; `copy_queries(n, info)`: the query set to re-query when the run has none), with
    `copy_settings(kinds)` the settings that make the attack read those kinds only; points: settings overrides, one
    per point, each sending `AttackSpec.queries(settings)` queries (or what `sent` measures); prepare:
    "module:function" preparing the statistic of every point at once, fn(plan, responses, settings list, *, scored,
    everyone, seed, progress) -> [Responses] (None: each point by `Statistic.prepare`); sent: "module:function"
    measuring the queries per example the targets were sent, fn(plan, settings, *, targets, seed) -> float;
    explicit_only: why the study leaves it out unless asked for by name (empty: it does not)."""

    reads: tuple[str, ...] = ()
    copies: tuple[str, ...] = ()
    copy_queries: Callable | None = None
    copy_settings: Callable[[tuple[str, ...]], dict] = lambda kinds: {}
    points: tuple[dict, ...] = ()
    prepare: str | Callable | None = None
    sent: str | Callable | None = None
    explicit_only: str = ""


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack.

    name: registry key; fn: the attack function; label_only: reads only predicted labels;
    needs: query kinds of which at least one must be in the run (empty: none required);
    defaults: the settings fn accepts, with their defaults; description: one line for reports;
    white_box: reads statistics of the models' weights (needs the weights of the target, not its answers);
    needs_in_shadows: the variants that fit IN shadows per example (they cannot score a disjoint run's target
    pool); disjoint_variant: the variant a disjoint run gets when none is asked for and the default needs IN
    shadows (None: keep it); explicit_only: why it is left out of the default list (empty: it is not);
    adaptive: why the queries it asks a target depend on the target's earlier answers (empty: they do not; an
    adaptive attack cannot be audited from exported queries, `attacks.offline`);
    target_statistics: an audit's statistic needs the target's answers on the attacker's own data;
    statistic: what needs model access (`Statistic`); ood: how the OOD study scores it (None: it does not);
    tune: its search space (None: nothing to tune); statistic_of: for an attack whose score is the per-example
    calibration (`attacks.methods.calibrated.calibrate`) of a statistic read from the responses, that statistic,
    fn(responses, models, settings) -> float64[len(models), N] (the OOD and calibration studies score with it);
    calibration_rows: the calibration study's rows of the attack, row name -> settings (`attacks.studies.
    calibration`); smoke: the smoke tests and demos that run it ("study": the studies' smoke farm, `jobs.smoke`;
    "matrix": the defense matrix's; "audit": `shadowfarm audit --demo`), with smoke_settings; short: its name in
    narrow table columns (empty: the name); queries: queries(settings) -> the queries per example the attack
    sends the target of its own, beyond the run's query set (None: it reads the run's query set only); budgets: how
    the query-budget study spends its queries (`Budgets`; None: it is not in that study).
    """

    name: str
    fn: Callable[..., np.ndarray]
    label_only: bool
    needs: tuple[str, ...]
    defaults: dict = field(default_factory=dict)
    description: str = ""
    white_box: bool = False
    needs_in_shadows: tuple[str, ...] = ()
    disjoint_variant: str | None = None
    explicit_only: str = ""
    adaptive: str = ""
    target_statistics: bool = False
    statistic: Statistic | None = None
    ood: Ood | None = None
    tune: SearchSpace | None = None
    statistic_of: Callable | None = None
    calibration_rows: dict = field(default_factory=dict)
    smoke: tuple[str, ...] = ()
    smoke_settings: dict = field(default_factory=dict)
    short: str = ""
    queries: Callable[[dict], int] | None = None
    budgets: Budgets | None = None

    @property
    def kind(self) -> str:
        """The attack's type in reports: "label-only", "confidence" or "white-box"."""
        return "label-only" if self.label_only else "white-box" if self.white_box else "confidence"
