"""White-box reference attacks (NOT label-only): they read statistics of the models' weights. Pure.

The statistics are computed from every model's saved weights by `attacks.compute.whitebox` (per-example gradients
with torch.func) into `Responses.statistics` (`STATISTICS`); the attacks only read them, and read `member[shadows]`
only, never `member[target]`:

- `gradient_norm` (Rezaei & Liu, "On the difficulty of membership inference attacks" / "Towards the infeasibility
  of membership inference on deep models"): the L2 norm of the loss gradient at the true label, small for
  members; thresholded globally, or calibrated per example over the shadows (LiRA on -log norm);
- `whitebox_classifier` (Nasr et al., "Comprehensive privacy analysis of deep learning"): per-layer gradient
  norms, activation norms, the loss, the top probabilities and the label one-hot, fed to an attack classifier fit
  on the shadows' member/non-member rows (gradient boosting here; Nasr et al. train a neural network);
- `stolen_memories` (Leino & Fredrikson, "Stolen Memories", calibrated white-box): per-example evidence (the sum of
  per-example LiRA log-likelihood ratios of the per-layer gradient norms and the logit-scaled confidence over the
  shadows), turned into a calibrated P(member) by Platt scaling fit on shadows playing the target; a positive
  decision is P(member) >= `precision`, so the flagged examples' precision should reach it (`precision_check`
  compares what the calibration promises with what the target realizes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attacks.methods.calibrated import calibrate
from attacks.responses import Responses
from attacks.stats.correctness import check_game
from attacks.stats.lira import lira_scores
from attacks.stats.shadow_game import fit_on_shadows, pseudo_targets
from farm.errors import ConfigError

FIELDS = ("loss", "margin", "grad_norm", "layers", "activations", "top")
STATISTICS = {name: f"whitebox_{name}" for name in FIELDS}  # field -> Responses.statistics name
PER_EXAMPLE = ("calibrated",)  # gradient_norm's variant that fits IN and OUT shadows per example
TINY = 1e-30  # added before a log: a gradient can underflow to exactly 0 for a very confident model


def statistic(responses: Responses, field: str, models: np.ndarray, *, attack: str) -> np.ndarray:
    """statistics["whitebox_<field>"] of `models` (float64[len(models), N, ...]); ConfigError when missing."""
    values = responses.statistics.get(STATISTICS[field])
    if values is None or np.isnan(values[np.asarray(models, dtype=np.intp)]).any():
        raise ConfigError(f"attack {attack!r} needs the white-box statistics of the target and every shadow "
                          "(per-example gradients from the saved weights); run it through `shadowfarm attack`")
    return np.asarray(values[np.asarray(models, dtype=np.intp)], dtype=np.float64)


def gradient_norm(responses: Responses, *, target: int, shadows: Sequence[int], variant: str = "calibrated",
                  global_variance: bool | str = "auto", min_std: float = 0.01) -> np.ndarray:
    """Scores float64[N]: -log of the loss-gradient norm (members have smaller gradients; higher = member).

    variant "threshold": the target's statistic, thresholded globally on shadows; "calibrated": per-example LiRA
    (online) over the shadows' statistics; "offline": the one-sided LiRA test against the OUT shadows."""
    if variant not in ("threshold", "calibrated", "offline"):
        raise ConfigError(f"attack 'gradient_norm': unknown variant {variant!r} (valid: calibrated, offline, "
                          "threshold)")
    if variant == "threshold":
        return -np.log(statistic(responses, "grad_norm", np.array([target]), attack="gradient_norm")[0] + TINY)
    shadows = check_game(responses, target=target, shadows=shadows)
    stat = -np.log(statistic(responses, "grad_norm", np.r_[int(target), shadows], attack="gradient_norm") + TINY)
    return calibrate(stat, responses.member[shadows], variant="online" if variant == "calibrated" else "offline",
                     global_variance=global_variance, min_std=min_std)


def nasr_features(responses: Responses, models: np.ndarray, examples: np.ndarray) -> np.ndarray:
    """float64[R, F]: Nasr et al.'s white-box features of rows (models int[R], examples int[R]): the logit-scaled
    confidence, log loss, log gradient norms (all, per layer), log activation norms, top probabilities, label
    one-hot."""
    def field(name: str) -> np.ndarray:
        values = responses.statistics[STATISTICS[name]][models, examples]
        return values.reshape(len(models), int(np.prod(values.shape[1:])))  # [R, 0] for no hidden layer

    logs = [np.log(field(name) + TINY) for name in ("loss", "grad_norm", "layers", "activations")]
    classes = int(responses.labels.max()) + 1 if len(responses.labels) else 1
    one_hot = np.eye(max(classes, field("top").shape[1]))[responses.labels[examples]]
    return np.concatenate([field("margin"), *logs, field("top"), one_hot], axis=1)


def whitebox_classifier(responses: Responses, *, target: int, shadows: Sequence[int], max_iter: int = 100,
                        max_fit_rows: int | None = 200_000, seed: int = 0) -> np.ndarray:
    """P(member) float64[N] of an attack classifier on `nasr_features`, fit on shadow rows with their membership.

    Classifier: scikit-learn HistGradientBoostingClassifier (`max_iter` rounds, no early stopping, `seed`), as
    `confidence_classifier`; at most `max_fit_rows` (shadow, example) rows (`fit_on_shadows`)."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # slow to import; most runs never call it

    shadows = check_game(responses, target=target, shadows=shadows)
    if max_iter < 1:
        raise ConfigError(f"attack 'whitebox_classifier': max_iter must be at least 1, got {max_iter}")
    for name in FIELDS:
        statistic(responses, name, np.r_[int(target), shadows], attack="whitebox_classifier")
    return fit_on_shadows(
        lambda: HistGradientBoostingClassifier(max_iter=max_iter, early_stopping=False, random_state=seed),
        responses, row_features=lambda m, e: nasr_features(responses, m, e), target=target, shadows=shadows,
        max_rows=max_fit_rows, seed=seed)


def evidence(responses: Responses, *, target: int, shadows: np.ndarray, variant: str,
             global_variance: bool | str, min_std: float, empty: str = "pooled") -> np.ndarray:
    """float64[N]: the sum over white-box statistics (logit-scaled confidence, -log gradient norm per layer) of
    their per-example LiRA scores (`lira_scores`, `variant` online or offline) for `target` over `shadows`."""
    models = np.r_[int(target), shadows]
    margin = statistic(responses, "margin", models, attack="stolen_memories")[..., None]
    layers = -np.log(statistic(responses, "layers", models, attack="stolen_memories") + TINY)
    stats = np.concatenate([margin, layers], axis=-1)  # [1 + S, N, 1 + L]
    return sum(lira_scores(target_statistic=stats[0, :, k], shadow_statistic=stats[1:, :, k],
                           shadow_member=responses.member[shadows], variant=variant, global_variance=global_variance,
                           min_std=min_std, empty=empty) for k in range(stats.shape[-1]))


def stolen_memories(responses: Responses, *, target: int, shadows: Sequence[int], variant: str = "online",
                    precision: float = 0.9, n_calibration: int = 4, global_variance: bool | str = "auto",
                    min_std: float = 0.01, seed: int = 0) -> np.ndarray:
    """Calibrated P(member) float64[N] for the target's examples; decide "member" where it is >= `precision`.

    The `evidence` of `n_calibration` shadows playing the target (each with the other shadows; seeded choice) is
    mapped to P(member) by a logistic fit on their membership (Platt scaling), then applied to the target's
    evidence. variant: "online" (IN and OUT shadows per example) or "offline" (OUT only). `precision` is used by the
    report (`precision_check`); the scores do not depend on it. A calibration shadow plays the target with one
    shadow fewer, so an example may have no IN or no OUT shadow there: it gets the global fit (`empty="global"`)
    in the calibration games only; the target's own evidence is fit as every other calibrated attack's."""
    from sklearn.linear_model import LogisticRegression

    if variant not in ("online", "offline"):
        raise ConfigError(f"attack 'stolen_memories': unknown variant {variant!r} (valid: offline, online)")
    if not 0 < precision < 1:
        raise ConfigError(f"attack 'stolen_memories': precision must lie in (0, 1), got {precision!r}")
    shadows = check_game(responses, target=target, shadows=shadows)
    if len(shadows) < 4:
        raise ConfigError("attack 'stolen_memories' needs at least 4 shadows (calibration shadows play the target)")
    examples = np.arange(responses.n_examples) if responses.fit_examples is None else responses.fit_examples
    settings = {"variant": variant, "global_variance": global_variance, "min_std": min_std}
    xs, ys = [], []
    for c in pseudo_targets(shadows, n_pseudo=n_calibration, seed=seed):
        xs.append(evidence(responses, target=int(c), shadows=shadows[shadows != c], empty="global",
                           **settings)[examples])
        ys.append(responses.member[c, examples])
    y = np.concatenate(ys)
    if y.all() or not y.any():
        raise ConfigError("attack 'stolen_memories': the calibration shadows hold only one class")
    platt = LogisticRegression(C=1e4).fit(np.concatenate(xs)[:, None], y)
    target_evidence = evidence(responses, target=target, shadows=shadows, **settings)
    return platt.predict_proba(target_evidence[:, None])[:, list(platt.classes_).index(True)].astype(np.float64)


def precision_check(scores: np.ndarray, member: np.ndarray, *, precision: float) -> dict:
    """What `stolen_memories` promises and what it realizes: flagged = scores >= precision (calibrated P(member)).

    Returns {"precision": the level, "n_flagged", "promised": mean P(member) of the flagged (what calibration
    promises), "realized": the members' share of the flagged (None when nothing is flagged)}."""
    scores, member = np.asarray(scores, dtype=np.float64), np.asarray(member, dtype=bool)
    flagged = scores >= precision
    n = int(flagged.sum())
    return {"precision": float(precision), "n_flagged": n,
            "promised": float(scores[flagged].mean()) if n else None,
            "realized": float(member[flagged].mean()) if n else None}
