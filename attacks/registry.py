"""Attack registry: look attacks up by name; unknown names and unknown settings are ConfigErrors.

Every attack is fn(responses, *, target, shadows, **settings) -> float64[N] scores for the examples as
seen by model `target` (higher = more likely member). Contract: an attack reads `member[shadows]`
only, never `member[target]`; label-only attacks never read `logits` (`run_attack` hands them
responses without logits, so this holds by construction) and work when `logits` is None.

`transfer` (Label-Leaks) and `boundary` need model access: the stage computes those per-(model, example)
statistics first (`attacks.compute.statistics.prepare_statistics`) into `responses.statistics`; the
registered functions only read them. So do the white-box attacks (`gradient_norm`, `whitebox_classifier`,
`stolen_memories`, `attacks.methods.whitebox`), which read statistics of the models' weights (per-example
gradients): neither label-only nor confidence, their type is "white-box" (`AttackSpec.kind`).

`choose_attacks` picks the attacks a run (or an audited target) supports: every registered attack that
`applicable` lets through, except the costly `EXPLICIT_ONLY` ones, which run when asked for by name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from attacks.methods import baselines, boundary, calibrated, choquette_choo, transfer, whitebox
from attacks.responses import Responses
from attacks.stats.correctness import AUGMENTATION_KINDS, NOISE_KINDS, PERTURBATION_KINDS, query_indices
from farm.errors import ConfigError, unknown_name


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack.

    name: registry key; fn: the attack function; label_only: reads only predicted labels;
    needs: query kinds of which at least one must be in the run (empty: none required);
    defaults: the settings fn accepts, with their defaults; description: one line for reports;
    white_box: reads statistics of the models' weights (needs the weights of the target, not its answers).
    """

    name: str
    fn: Callable[..., np.ndarray]
    label_only: bool
    needs: tuple[str, ...]
    defaults: dict = field(default_factory=dict)
    description: str = ""
    white_box: bool = False

    @property
    def kind(self) -> str:
        """The attack's type in reports: "label-only", "confidence" or "white-box"."""
        return "label-only" if self.label_only else "white-box" if self.white_box else "confidence"


def _spec(name: str, fn: Callable[..., np.ndarray], *, label_only: bool, needs: tuple[str, ...],
          description: str, white_box: bool = False) -> AttackSpec:
    # Defaults are read from the signature so that the registry can never drift from the function.
    defaults = {p.name: p.default for p in inspect.signature(fn).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("target", "shadows")}
    return AttackSpec(name, fn, label_only, needs, defaults, description, white_box)


ATTACKS: dict[str, AttackSpec] = {spec.name: spec for spec in (
    _spec("gap", choquette_choo.gap, label_only=True, needs=("clean",),
          description="clean label correct => member (Yeom et al.; Choquette-Choo et al.)"),
    _spec("augmentation", choquette_choo.augmentation, label_only=True, needs=AUGMENTATION_KINDS,
          description="correctness vector over flips/translations/rotations, classifier fit on shadows "
                      "(Choquette-Choo et al.)"),
    _spec("noise", choquette_choo.noise, label_only=True, needs=NOISE_KINDS,
          description="fraction correct under gaussian/bitflip noise (Choquette-Choo et al.)"),
    _spec("calibrated", calibrated.calibrated, label_only=True, needs=PERTURBATION_KINDS,
          description="per-example IN/OUT Gaussians of the fraction of correct perturbed queries "
                      "(LiRA applied to label-only statistics)"),
    _spec("transfer", transfer.transfer, label_only=True, needs=("clean",),
          description="confidence or loss at the true label of local models trained on the attacker's data "
                      "relabelled by the target; default: its gain on the local models that trained on the "
                      "example over those that did not; or threshold, or per-example calibration from shadows "
                      "(Li & Zhang, Label-Leaks)"),
    _spec("boundary", boundary.boundary, label_only=True, needs=("clean",),
          description="L2 distance to the decision boundary by batched HopSkipJump, threshold or per-example "
                      "calibration from shadows (Li & Zhang; Choquette-Choo et al.)"),
    _spec("loss", baselines.loss, label_only=False, needs=(),
          description="minus cross-entropy at the true label (Yeom et al.; needs logits)"),
    _spec("confidence_classifier", baselines.confidence_classifier, label_only=False, needs=(),
          description="gradient-boosted attack model on sorted confidences, fit on shadows "
                      "(Shokri et al.; needs logits)"),
    _spec("lira_confidence", baselines.lira_confidence, label_only=False, needs=(),
          description="LiRA on the logit-scaled true-label confidence (Carlini et al.; needs logits)"),
    _spec("gradient_norm", whitebox.gradient_norm, label_only=False, needs=(), white_box=True,
          description="norm of the loss gradient at the true label, threshold or per-example calibration from "
                      "shadows (Rezaei & Liu; needs the weights)"),
    _spec("whitebox_classifier", whitebox.whitebox_classifier, label_only=False, needs=(), white_box=True,
          description="per-layer gradient norms, activations, loss and label to an attack model fit on shadows "
                      "(Nasr et al.; needs the weights)"),
    _spec("stolen_memories", whitebox.stolen_memories, label_only=False, needs=(), white_box=True,
          description="per-example white-box evidence calibrated on shadows into P(member); member when >= the "
                      "precision asked for (Leino & Fredrikson; needs the weights)"),
)}


def attack_type(name: str, label_only: bool) -> str:
    """The type of a result named `name` (a registered attack's `kind`; else from its label_only flag)."""
    return ATTACKS[name].kind if name in ATTACKS else "label-only" if label_only else "confidence"


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


# Membership modes (farm.config.MembershipConfig.mode). In a disjoint run (Shokri et al.) no shadow ever trains
# on a target-pool example, so a variant that fits IN shadows per example cannot score the challenge set:
# attack -> (the variants that need IN shadows, the variant chosen instead when no variant is asked for).
NEEDS_IN_SHADOWS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "calibrated": (("online",), "offline"),
    "lira_confidence": (("online",), "offline"),
    "boundary": (("calibrated",), None),
    "transfer": (("calibrated",), "threshold"),
    "gradient_norm": (("calibrated",), "offline"),
    "stolen_memories": (("online",), "offline"),
}


def mode_settings(name: str, settings: dict | None, mode: str) -> tuple[dict | None, dict | None]:
    """(settings, chosen) of attack `name` for a run in membership `mode`, before `resolve_settings`.

    lira: `settings` unchanged, chosen None. disjoint: an asked-for variant that needs IN shadows is a
    ConfigError; with no variant asked for, an attack whose default needs them gets its one-sided variant
    (the offline LiRA test against the OUT shadows), and chosen = {"variant": ..., "reason": ...} says so.
    """
    if mode == "lira" or name not in NEEDS_IN_SHADOWS:
        return settings, None
    online, instead = NEEDS_IN_SHADOWS[name]
    asked = (settings or {}).get("variant")
    if asked in online:
        raise ConfigError(f"attack {name!r}: variant {asked!r} needs IN shadows for every challenge example, and a "
                          f"disjoint run's shadows never train on the target pool (use variant: "
                          f"{instead or 'threshold'})")
    if asked is not None or get_attack(name).defaults["variant"] not in online:
        return settings, None
    return {**(settings or {}), "variant": instead}, {
        "variant": instead, "reason": "disjoint run: no shadow trained on a target-pool example, so the "
                                      "per-example test is one-sided against the OUT shadows"}


# Attacks left out of the default list because of their cost; they run when asked for by name.
EXPLICIT_ONLY = ("boundary",)


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
        if name in EXPLICIT_ONLY and not reason:
            reason = f"runs HopSkipJump on every example (many queries); ask for it with --attacks {name}"
        if reason:
            skipped[name] = reason
        else:
            chosen.append(name)
    return chosen, skipped
