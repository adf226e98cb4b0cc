"""What the studies share: each attack's game replayed exactly as `shadowfarm attack` played it.

A study (worst case, out-of-distribution) starts from an attack's result, `attacks/<name>/metrics.json`,
and rebuilds its game from it: the same settings, the same targets (`target_model_ids`), the same shadows
(every other model of the run), the same pseudo-targets (`n_pseudo_targets`, seed 0 as in
`attacks.stage.AttackOptions`). `replay` plays it with `attacks.stats.shadow_game.play`, as the attack
stage does, so thresholds are chosen on the same shadow game; `shadow_game` gives that game's rows, on a
subset of which a study can re-choose thresholds (e.g. outliers) without ever reading a target's membership.

The shadow game does not depend on which target is attacked (the pseudo-targets are drawn from the
shadows, and every target has the same shadows), so `shadow_game` plays it once per attack.

`prepare_game_statistics` recomputes what needs model access (transfer losses, HopSkipJump distances) with
the attack stage's `attacks.compute.statistics.prepare_statistics`: `boundary_distances` reads its on-disk
cache, so a run whose boundary attack already ran costs nothing here; transfer models are retrained (seconds
on the quickstart).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from attacks.artifacts import ATTACKS_DIR, attack_metrics, attack_names, read_attack_metrics
from attacks.compute.statistics import prepare_statistics
from attacks.modes import split_targets
from attacks.registry import attack_with, get_attack, run_attack
from attacks.responses import Responses
from attacks.settings import resolve
from attacks.stats.shadow_game import GameResult, play, pseudo_targets, shadow_scores
from farm.errors import ConfigError, RunError
from farm.plan import Plan
from farm.storage import RunDir

GAME_SEED = 0  # AttackOptions.seed for results written before metrics.json recorded it


@dataclass(frozen=True)
class AttackGame:
    """One attack's game as the attack stage played it (from its metrics.json)."""

    name: str
    label_only: bool
    settings: dict
    targets: tuple[int, ...]
    shadows: np.ndarray  # int[S]: every model that is not a target
    n_pseudo: int
    requested_fpr: float
    seed: int = GAME_SEED

    @property
    def pseudo_targets(self) -> np.ndarray:
        return pseudo_targets(self.shadows, n_pseudo=self.n_pseudo, seed=self.seed)


def attack_games(run: RunDir, *, n_models: int, names: Sequence[str] | None = None) -> list[AttackGame]:
    """The games of the attacks with results in `run` (or of `names`, which must all have results).

    RunError naming the command to run when an attack has no result or its metrics.json is incomplete.
    """
    available = attack_names(run)
    if names is None:
        names = available
        if not names:
            raise RunError(f"{run.path(ATTACKS_DIR)}: no attack results; run `shadowfarm attack RUN` first")
    games = []
    for name in names:
        get_attack(name)
        if name not in available:
            raise RunError(f"{run.path(f'{ATTACKS_DIR}/{name}')}: no result; run `shadowfarm attack RUN "
                           f"--attacks {name}` first")
        m = read_attack_metrics(run, name)
        missing = [k for k in ("settings", "target_model_ids", "n_pseudo_targets") if k not in m]
        if missing:
            raise RunError(f"{run.path(attack_metrics(name))}: missing {', '.join(missing)}; rerun the attack")
        targets = tuple(int(t) for t in m["target_model_ids"])
        shadows = np.array([i for i in range(n_models) if i not in set(targets)], dtype=np.intp)
        games.append(AttackGame(name=name, label_only=get_attack(name).label_only,
                                settings=resolve([name], explicit={name: m["settings"]})[0][name],
                                targets=targets, shadows=shadows,
                                n_pseudo=int(m["n_pseudo_targets"]), requested_fpr=float(m.get("requested_fpr", 0.01)),
                                seed=int(m.get("seed", GAME_SEED))))
    return games


def study_games(plan: Plan, names: Sequence[str]) -> list[AttackGame]:
    """The games of `names`: as the attack stage played them where the attack has a result (`attack_games`), else
    as `shadowfarm attack RUN --attacks NAME` would play it (the run's targets, the other models as shadows, its
    default settings, pseudo-targets, seed and requested FPR)."""
    from attacks.stage import AttackOptions

    available, options = set(attack_names(plan.run)), AttackOptions()
    targets, shadows = split_targets(plan.cfg.membership)
    games = []
    for name in names:
        if name in available:
            games += attack_games(plan.run, n_models=plan.cfg.membership.n_models, names=[name])
            continue
        settings = resolve([name], mode=plan.cfg.membership.mode, n_shadows=len(shadows))[0][name]
        games.append(AttackGame(name=name, label_only=get_attack(name).label_only, settings=settings,
                                targets=tuple(targets), shadows=shadows, n_pseudo=options.n_pseudo,
                                requested_fpr=options.fpr, seed=options.seed))
    return games


def prepare_game_statistics(plan: Plan, responses: Responses, games: Sequence[AttackGame], *,
                            progress: bool = False) -> Responses:
    """`responses` with the statistics needing model access every game needs (`AttackSpec.statistic`), computed
    exactly as the attack stage computes them."""
    for game in games:
        if get_attack(game.name).statistic is not None:
            responses = prepare_statistics(plan, responses, {game.name: game.settings},
                                           scored=sorted(set(game.targets) | set(game.pseudo_targets.tolist())),
                                           everyone=game.shadows.tolist(), seed=game.seed, progress=progress)
    return responses


def replay(game: AttackGame, responses: Responses, *, fprs: Sequence[float],
           settings: dict | None = None) -> GameResult:
    """The attack's game on its targets as the attack stage played it, thresholds for `fprs` on the shadows.

    settings: overrides of the game's settings (e.g. {"variant": "offline"}).
    """
    return play(attack_with(game.name, {**game.settings, **(settings or {})}), responses, targets=game.targets,
                shadows=game.shadows, n_pseudo=game.n_pseudo, seed=game.seed, fprs=fprs)


def shadow_game(game: AttackGame, responses: Responses, *, settings: dict | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The attack's scores with shadows playing the target, pooled over its pseudo-targets.

    settings: overrides of the game's settings (e.g. {"variant": "offline"}).
    Returns (scores float64[P*N], member bool[P*N], example_id int[P*N]); never reads a target's membership.
    """
    attack = attack_with(game.name, {**game.settings, **(settings or {})})
    scores, member = shadow_scores(attack, responses, target=game.targets[0], shadows=game.shadows,
                                   n_pseudo=game.n_pseudo, seed=game.seed)
    return scores, member, np.tile(np.arange(responses.n_examples), len(scores) // responses.n_examples)


def target_scores(game: AttackGame, responses: Responses, target: int, *, settings: dict | None = None) -> np.ndarray:
    """float64[N]: the attack's scores for `target` with the game's shadows (settings overridable)."""
    if target not in game.targets:
        raise ConfigError(f"model {target} is not a target of attack {game.name!r} (targets: {list(game.targets)})")
    return run_attack(game.name, responses, target=target, shadows=game.shadows,
                      settings={**game.settings, **(settings or {})})
