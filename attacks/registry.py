"""Attack registry: every attack's `AttackSpec` (`attacks.spec`: all its facts); look attacks up by name; unknown
names and unknown settings are ConfigErrors.

Every attack is fn(responses, *, target, shadows, **settings) -> float64[N] scores for the examples as
seen by model `target` (higher = more likely member). Contract: an attack reads `member[shadows]`
only, never `member[target]`; label-only attacks never read `logits` (`run_attack` hands them
responses without logits, so this holds by construction) and work when `logits` is None.

`transfer` (Label-Leaks) and `boundary` need model access: the stage computes those per-(model, example)
statistics first (`AttackSpec.statistic`, `attacks.compute.statistics.prepare_statistics`) into
`responses.statistics`; the registered functions only read them. So do the white-box attacks (`gradient_norm`,
`whitebox_classifier`, `stolen_memories`, `attacks.methods.whitebox`), which read statistics of the models'
weights (per-example gradients): neither label-only nor confidence, their type is "white-box" (`AttackSpec.kind`).

`choose_attacks` picks the attacks a run (or an audited target) supports: every registered attack that
`applicable` lets through, except the costly ones (`AttackSpec.explicit_only`), which run when asked for by name.
Adding an attack: its function under attacks/methods/, one entry in `ATTACKS` (or `register` at run time), and a
module under attacks/compute/ when it needs model access; no other module names it (tests/test_attack_spec.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np

from attacks import budgets
from attacks.methods import (
    boundary,
    calibrated,
    confidence,
    correctness,
    fixed_direction,
    oslo,
    transfer,
    whitebox,
    yoqo,
)
from attacks.responses import Responses
from attacks.spaces import augment_space, augment_specs, choice, loguniform, noise_space, noise_specs, randint
from attacks.spec import AttackSpec, Ood, SearchSpace, Statistic
from attacks.stats.correctness import AUGMENTATION_KINDS, NOISE_KINDS, PERTURBATION_KINDS, query_indices
from farm.config import QuerySpec
from farm.errors import ConfigError, unknown_name


def _spec(name: str, fn: Callable[..., np.ndarray], *, label_only: bool, needs: tuple[str, ...],
          description: str, **facts) -> AttackSpec:
    """An AttackSpec whose defaults are read from fn's signature, so that the registry can never drift from it."""
    defaults = {p.name: p.default for p in inspect.signature(fn).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("target", "shadows")}
    return AttackSpec(name, fn, label_only, needs, defaults, description, **facts)


# The statistics that need model access, prepared by `attacks.compute` (named lazily: no torch or Ray here).
TRANSFER_MODELS = Statistic("attacks.compute.transfer:prepare", "attacks.compute.transfer:prepare_audit")
HOPSKIPJUMP = Statistic("attacks.compute.boundary:prepare", "attacks.compute.boundary:prepare_audit")
WALK = Statistic("attacks.compute.fixed_direction:prepare", "attacks.compute.fixed_direction:prepare_audit")
CRAFTED = Statistic("attacks.compute.yoqo:prepare", "attacks.compute.yoqo:prepare_audit")
TRANSFERRED = Statistic("attacks.compute.oslo:prepare", "attacks.compute.oslo:prepare_audit")
GRADIENTS = Statistic("attacks.compute.whitebox:prepare")  # one for every white-box attack; no audit (no weights)
AS_RUN, OFFLINE = Ood("as run"), Ood("offline")
LIRA_SPACE = {"variant": choice(["online", "offline"]), "global_variance": choice([True, False])}


def _augmentation_queries(config: dict, info) -> list[QuerySpec]:
    # nothing selected would leave no augmentation at all: fall back to one-pixel shifts
    return [QuerySpec("clean")] + (augment_specs(config) or [QuerySpec("translate", (("d", 1),))])


ATTACKS: dict[str, AttackSpec] = {spec.name: spec for spec in (
    _spec("gap", correctness.gap, label_only=True, needs=("clean",), ood=AS_RUN, smoke=("study", "matrix", "audit"),
          budgets=budgets.CLEAN, description="clean label correct => member (Yeom et al.; Choquette-Choo et al.)"),
    _spec("augmentation", correctness.augmentation, label_only=True, needs=AUGMENTATION_KINDS, ood=AS_RUN,
          smoke=("study", "audit"), short="augment", budgets=budgets.AUGMENTED,
          tune=SearchSpace(lambda info: {**augment_space(info, attack="augmentation"),
                                         "variant": choice(["classifier", "count"]), "c": loguniform(0.01, 10.0)},
                           _augmentation_queries),
          description="correctness vector over flips/translations/rotations, classifier fit on shadows "
                      "(Choquette-Choo et al.)"),
    _spec("noise", correctness.noise, label_only=True, needs=NOISE_KINDS, ood=AS_RUN,
          smoke=("study", "matrix", "audit"), budgets=budgets.NOISE,
          tune=SearchSpace(lambda info: {**noise_space(info), "variant": choice(["threshold", "classifier"])},
                           lambda c, info: [QuerySpec("clean")] + noise_specs(c, info)),
          description="fraction correct under gaussian/bitflip noise (Choquette-Choo et al.)"),
    _spec("calibrated", calibrated.calibrated, label_only=True, needs=PERTURBATION_KINDS, ood=OFFLINE,
          needs_in_shadows=("online",), disjoint_variant="offline", statistic_of=calibrated.statistic,
          smoke=("study", "matrix", "audit"), short="calib", budgets=budgets.CALIBRATED_NOISE,
          calibration_rows={"calibrated": {"variant": "online", "empty": "global"},
                            "calibrated-offline": {"variant": "offline", "empty": "global"},
                            "global-threshold": {"variant": "global"}},
          tune=SearchSpace(lambda info: {**noise_space(info), **({"d": choice([0, 1])} if info.kind == "image" else {}),
                                         **LIRA_SPACE},
                           lambda c, info: [QuerySpec("clean")] + noise_specs(c, info) + augment_specs(c)),
          description="per-example IN/OUT Gaussians of the fraction of correct perturbed queries "
                      "(LiRA applied to label-only statistics)"),
    _spec("transfer", transfer.transfer, label_only=True, needs=("clean",), statistic=TRANSFER_MODELS,
          needs_in_shadows=transfer.PER_EXAMPLE, disjoint_variant="threshold", target_statistics=True, short="transfer",
          budgets=budgets.CLEAN,
          ood=Ood("as run", statistic="attacks.studies.ood.query:transfer_statistics"),
          tune=SearchSpace(lambda info: {"n_models": choice([2, 4, 8])}),
          description="confidence or loss at the true label of local models trained on the attacker's data "
                      "relabelled by the target; default: its gain on the local models that trained on the "
                      "example over those that did not; or threshold, or per-example calibration from shadows "
                      "(Li & Zhang, Label-Leaks)"),
    _spec("boundary", boundary.boundary, label_only=True, needs=("clean",), statistic=HOPSKIPJUMP,
          needs_in_shadows=boundary.PER_EXAMPLE, target_statistics=True, budgets=budgets.HOPSKIPJUMP_ITERATIONS,
          explicit_only="runs HopSkipJump on every example (many queries)",
          adaptive="HopSkipJump chooses each probe from the target's answers to the ones before",
          smoke=("audit",), smoke_settings={"max_iter": 2, "init_evals": 20, "max_evals": 40},
          ood=Ood("as run", variants=("threshold",), limited="HopSkipJump",
                  why_not="the calibrated variant needs HopSkipJump on every shadow for every OOD input",
                  statistic="attacks.studies.ood.query:boundary_statistics"),
          tune=SearchSpace(lambda info: {"max_iter": randint(2, 13), "init_evals": choice([25, 50, 100]),
                                         "max_evals": choice([100, 300, 1000])}),
          description="L2 distance to the decision boundary by batched HopSkipJump, threshold or per-example "
                      "calibration from shadows (Li & Zhang; Choquette-Choo et al.)"),
    _spec("fixed_direction", fixed_direction.fixed_direction, label_only=True, needs=(), statistic=WALK,
          needs_in_shadows=("online",), disjoint_variant="offline", short="fixed_dir",
          explicit_only="re-queries every model on K steps of a walk per example",
          queries=fixed_direction.queries_per_example, smoke=("audit",), budgets=budgets.WALK_STEPS,
          tune=SearchSpace(lambda info: {"steps": choice([5, 10, 15, 20, 30]), **LIRA_SPACE}),
          description="first wrong step of K queries walking from x toward a fixed point, calibrated per example "
                      "against the shadows' own first wrong steps (DHAttack, Li et al.)"),
    _spec("yoqo", yoqo.yoqo, label_only=True, needs=(), statistic=CRAFTED, needs_in_shadows=("online", "global"),
          disjoint_variant="offline", explicit_only="crafts its queries by gradient descent through the shadows",
          queries=yoqo.queries_per_example, smoke=("audit",), smoke_settings={"steps": 5},
          budgets=budgets.CRAFTED_QUERIES,
          tune=SearchSpace(lambda info: {"n_queries": choice([1, 2, 4, 8]), "steps": choice([20, 40, 80]),
                                         "lr": loguniform(0.005, 0.1), "alpha": loguniform(0.1, 10.0),
                                         "variant": choice(["online", "offline"]),
                                         "score": choice(["fraction", "margins"]),
                                         "crafting": choice(["auto", "offline"])}),
          description="one crafted query per example (or a few), crafted through half the shadows so that IN "
                      "shadows keep the label and OUT shadows lose it, calibrated per example on the other half "
                      "(YOQO, Wu et al.)"),
    _spec("oslo", oslo.oslo, label_only=True, needs=(), statistic=TRANSFERRED, needs_in_shadows=("online",),
          disjoint_variant="offline", explicit_only="crafts its queries by transfer attacks through the shadows",
          queries=oslo.queries_per_example, short="oslo", budgets=budgets.TAU_LEVELS,
          tune=SearchSpace(lambda info: {"levels": choice([[0.5], [0.5, 0.1], [0.5, 0.25, 0.1, 0.05]]),
                                         "steps": choice([20, 40, 80]), "lr": loguniform(0.002, 0.05),
                                         "variant": choice(["online", "offline"]),
                                         "score": choice(["fraction", "margins"])}),
          description="one query per level tau, grown on source OUT shadows until validation OUT shadows give the "
                      "true class less than tau; the levels the target stays correct at, calibrated per example on "
                      "shadows that did not craft them (OSLO, Peng et al.)"),
    _spec("loss", confidence.loss, label_only=False, needs=(), ood=AS_RUN, smoke=("study", "matrix"),
          description="minus cross-entropy at the true label (Yeom et al.; needs logits)"),
    _spec("confidence_classifier", confidence.confidence_classifier, label_only=False, needs=(), ood=AS_RUN,
          short="conf_clf",
          tune=SearchSpace(lambda info: {"max_iter": choice([50, 100, 200, 400])}),
          description="gradient-boosted attack model on sorted confidences, fit on shadows "
                      "(Shokri et al.; needs logits)"),
    _spec("lira_confidence", confidence.lira_confidence, label_only=False, needs=(), ood=OFFLINE,
          needs_in_shadows=("online",), disjoint_variant="offline", statistic_of=confidence.lira_statistic,
          smoke=("study", "matrix"), short="lira_conf",
          calibration_rows={"lira_confidence": {"variant": "online", "empty": "global"}},
          tune=SearchSpace(lambda info: LIRA_SPACE),
          description="LiRA on the logit-scaled true-label confidence (Carlini et al.; needs logits)"),
    _spec("gradient_norm", whitebox.gradient_norm, label_only=False, needs=(), white_box=True, statistic=GRADIENTS,
          needs_in_shadows=whitebox.PER_EXAMPLE, disjoint_variant="offline",
          description="norm of the loss gradient at the true label, threshold or per-example calibration from "
                      "shadows (Rezaei & Liu; needs the weights)"),
    _spec("whitebox_classifier", whitebox.whitebox_classifier, label_only=False, needs=(), white_box=True,
          statistic=GRADIENTS,
          description="per-layer gradient norms, activations, loss and label to an attack model fit on shadows "
                      "(Nasr et al.; needs the weights)"),
    _spec("stolen_memories", whitebox.stolen_memories, label_only=False, needs=(), white_box=True, statistic=GRADIENTS,
          needs_in_shadows=("online",), disjoint_variant="offline",
          description="per-example white-box evidence calibrated on shadows into P(member); member when >= the "
                      "precision asked for (Leino & Fredrikson; needs the weights)"),
)}


TUNE_DEFAULT = "noise"  # what `shadowfarm tune` tunes when no --attack is given


def tunable() -> list[str]:
    """The attacks with a `shadowfarm tune` search space (`AttackSpec.tune`), in registry order."""
    return [name for name, spec in ATTACKS.items() if spec.tune is not None]


def smoke_attacks(run: str) -> tuple[str, ...]:
    """The attacks the smoke test or demo `run` ("study", "matrix", "audit": `AttackSpec.smoke`) runs, in registry
    order."""
    return tuple(name for name, spec in ATTACKS.items() if run in spec.smoke)


def smoke_settings(run: str) -> list[str]:
    """The NAME.KEY=VALUE settings of the attacks of the smoke test or demo `run` that make them cheap."""
    return [f"{name}.{key}={value}" for name in smoke_attacks(run)
            for key, value in ATTACKS[name].smoke_settings.items()]


def attack_type(name: str, label_only: bool) -> str:
    """The type of a result named `name` (a registered attack's `kind`; else from its label_only flag)."""
    return ATTACKS[name].kind if name in ATTACKS else "label-only" if label_only else "confidence"


def own_queries(name: str, settings: dict) -> int | None:
    """The queries per example attack `name` sends the target of its own (`AttackSpec.queries`; None: it reads the
    run's query set only, which the audit asks once for every attack)."""
    spec = get_attack(name)
    return None if spec.queries is None else spec.queries(settings)


def register(spec: AttackSpec) -> AttackSpec:
    """Add `spec` to the registry (replacing an attack of the same name); returns it. Ray workers import the
    registry afresh: code that runs an attack registered at run time in one passes the spec along (`attacks.tune`)."""
    ATTACKS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove attack `name` from the registry (tests that registered one)."""
    ATTACKS.pop(name, None)


def get_attack(name: str) -> AttackSpec:
    """The AttackSpec registered as `name`; ConfigError listing the valid names otherwise."""
    if name not in ATTACKS:
        raise unknown_name("attack", name, ATTACKS)
    return ATTACKS[name]


def resolve_settings(name: str, settings: dict | None = None) -> dict:
    """The attack's defaults overridden by `settings`; ConfigError naming any unknown setting."""
    spec = get_attack(name)
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(spec.defaults))
    if unknown:
        valid = ", ".join(sorted(spec.defaults)) or "none"
        raise ConfigError(f"attack {name!r}: unknown setting(s) {', '.join(unknown)} (valid: {valid})")
    return {**spec.defaults, **settings}


def run_attack(name: str, responses: Responses, *, target: int, shadows: Sequence[int],
               settings: dict | None = None) -> np.ndarray:
    """Scores float64[N] of attack `name` for `target`, with settings checked against its defaults.

    Label-only attacks receive `responses.without_logits()`, so they cannot read logits.
    """
    spec = get_attack(name)
    resolved = resolve_settings(name, settings)
    if spec.label_only:
        responses = responses.without_logits()
    return np.asarray(spec.fn(responses, target=target, shadows=shadows, **resolved), dtype=np.float64)


def attack_with(name: str, settings: dict | None) -> Callable[..., np.ndarray]:
    """fn(responses, *, target, shadows) -> float64[N]: attack `name` with `settings` (what the shadow game plays)."""
    def attack(responses: Responses, *, target: int, shadows: Sequence[int]) -> np.ndarray:
        return run_attack(name, responses, target=target, shadows=shadows, settings=settings)

    return attack


def applicable(name: str, responses: Responses, *, weights: bool = True) -> str | None:
    """Why attack `name` cannot run on these responses (weights: whether the models' weights are at hand), or None
    when it can."""
    spec = get_attack(name)
    if spec.white_box:
        return None if weights else "white-box: needs the target's weights, not only its answers"
    if not spec.label_only and responses.logits is None:
        return "the shards have no logits (confidence baseline)"
    if spec.needs and not len(query_indices(responses, kinds=spec.needs)):
        return f"needs queries of kind {' or '.join(spec.needs)}"
    return None


def choose_attacks(names: Sequence[str] | None, responses: Responses, *, subject: str = "this run",
                   weights: bool = True) -> tuple[list[str], dict[str, str]]:
    """(attacks to run, {skipped attack: reason}); explicitly requested attacks must apply to `subject`
    (weights: whether its models' weights are at hand, for the white-box attacks)."""
    if names is not None:
        for name in names:
            reason = applicable(name, responses, weights=weights)
            if reason:
                raise ConfigError(f"attack {name!r} cannot run on {subject}: {reason}")
        return list(names), {}
    chosen, skipped = [], {}
    for name in ATTACKS:
        reason = applicable(name, responses, weights=weights)
        if ATTACKS[name].explicit_only and not reason:
            reason = f"{ATTACKS[name].explicit_only}; ask for it with --attacks {name}"
        if reason:
            skipped[name] = reason
        else:
            chosen.append(name)
    return chosen, skipped
