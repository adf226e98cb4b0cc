"""The `teacher` section of a run config: transfer-learning targets (Zou et al., "Membership inference attacks
against transfer learning"). A leaf module (`farm.config` holds the rest of the config); the teacher itself
is `farm.teacher`.
"""

from __future__ import annotations

from dataclasses import dataclass

from farm.errors import ConfigError

FINE_TUNE_MODES = ("all", "head")


@dataclass(frozen=True)
class TeacherConfig:
    """Every model of the run (target and shadows) starts from one teacher's weights and fine-tunes them.

    The teacher is `path`, a state_dict or TorchScript file of `model`'s architecture, or (no path) a model the
    farm trains once per run on a public split of the population: `public_fraction` of it, drawn from the run
    seed, disjoint from every model's data (the membership game is played on the rest), restricted to the
    labels `classes` when given. The teacher trains for `epochs` at `lr` with `train`'s optimizer and batch
    size and no defenses. Its head (the last layer) is never transferred: each model draws a fresh head from
    its own seed. `fine_tune`: all (every layer trains) | head (only the head; the rest stays frozen).
    """

    path: str | None = None
    fine_tune: str = "all"
    public_fraction: float = 0.5
    classes: tuple[int, ...] = ()  # empty: every class
    epochs: int = 30
    lr: float = 1e-3


def check_teacher_config(t: TeacherConfig) -> None:
    """Range checks of the teacher section: ConfigError naming the field."""
    if t.fine_tune not in FINE_TUNE_MODES:
        raise ConfigError(f"teacher.fine_tune: expected 'all' or 'head', got {t.fine_tune!r}")
    if not 0 < t.public_fraction < 1:
        raise ConfigError(f"teacher.public_fraction: expected a value in (0, 1), got {t.public_fraction}")
    if t.epochs < 1:
        raise ConfigError(f"teacher.epochs: expected at least 1, got {t.epochs}")
    if t.lr <= 0:
        raise ConfigError(f"teacher.lr: expected a positive number, got {t.lr}")
    if any(c < 0 for c in t.classes) or len(set(t.classes)) != len(t.classes):
        raise ConfigError(f"teacher.classes: expected distinct labels >= 0, got {list(t.classes)}")
    if t.path is not None and not t.path:
        raise ConfigError("teacher.path: expected a file name (or null: the farm trains the teacher)")
