"""The one settings resolver: what each attack runs with, and what was chosen for it automatically and why.

`resolve` takes, per attack, the settings asked for (explicit, else the tuned ones of `--tuned`: a tuned
setting is asked for as much as an explicit one), checks them against the attack's defaults
(`attacks.registry.resolve_settings`), decides an "auto" global variance once for the game from the real
target's shadow count (`game_settings`), and applies the run's membership mode (`mode_settings`: a disjoint
run's offline calibration). The attack stage, the audit, tuning and the studies all call it.
"""

from __future__ import annotations

from collections.abc import Sequence

from attacks.registry import get_attack, resolve_settings
from attacks.stats.lira import use_global_variance
from farm.errors import ConfigError

DISJOINT_REASON = ("disjoint run: no shadow trained on a target-pool example, so the per-example test is one-sided "
                   "against the OUT shadows")


def resolve(names: Sequence[str], *, explicit: dict | None = None, tuned: dict | None = None, mode: str = "lira",
            n_shadows: int | None = None) -> tuple[dict, dict]:
    """(settings, auto): attack name -> its resolved settings, and attack -> {"variant", "reason"} for each variant
    the membership `mode` chose (absent: nothing chosen automatically).

    explicit: attack -> settings given by the caller; tuned: attack -> `attacks.tune.tuned.load_tuned`'s entry
    (its "settings" are used where no explicit ones are given); n_shadows: the real target's shadow count, which
    decides an "auto" global variance (None: left "auto")."""
    explicit, tuned = explicit or {}, tuned or {}
    asked = {name: explicit.get(name, tuned.get(name, {}).get("settings")) for name in names}
    settings = {name: game_settings(resolve_settings(name, asked[name]), n_shadows=n_shadows) for name in names}
    auto = {}
    for name in names:
        _, chosen = mode_settings(name, asked[name], mode)
        if chosen:
            settings[name], auto[name] = {**settings[name], "variant": chosen["variant"]}, chosen
    return settings, auto


def game_settings(settings: dict, *, n_shadows: int | None) -> dict:
    """Resolved attack settings with a "auto" global variance decided once for the game, from the real target's
    `n_shadows`: its pseudo-targets see one shadow fewer and would otherwise switch rule at another count."""
    if settings.get("global_variance") != "auto" or n_shadows is None:
        return settings
    return {**settings, "global_variance": use_global_variance("auto", n_shadows=n_shadows)}


def mode_settings(name: str, settings: dict | None, mode: str) -> tuple[dict | None, dict | None]:
    """(settings, chosen) of attack `name` for a run in membership `mode`, before `resolve_settings`.

    In a disjoint run (Shokri et al.) no shadow ever trains on a target-pool example, so a variant that fits IN
    shadows per example (`AttackSpec.needs_in_shadows`) cannot score the challenge set. lira: `settings`
    unchanged, chosen None. disjoint: an asked-for variant that needs IN shadows is a ConfigError; with no
    variant asked for, an attack whose default needs them gets its one-sided variant (`disjoint_variant`: the
    offline LiRA test against the OUT shadows), and chosen = {"variant": ..., "reason": ...} says so.
    """
    spec = get_attack(name)
    if mode == "lira" or not spec.needs_in_shadows:
        return settings, None
    online, instead = spec.needs_in_shadows, spec.disjoint_variant
    asked = (settings or {}).get("variant")
    if asked in online:
        raise ConfigError(f"attack {name!r}: variant {asked!r} needs IN shadows for every challenge example, and a "
                          f"disjoint run's shadows never train on the target pool (use variant: "
                          f"{instead or 'threshold'})")
    if asked is not None or spec.defaults["variant"] not in online:
        return settings, None
    return {**(settings or {}), "variant": instead}, {"variant": instead, "reason": DISJOINT_REASON}
