"""Out-of-distribution non-members (Hintersdorf et al. 2111.09076): how often does each attack call inputs
the target never saw, and that do not come from its population, members?

Labels. An OOD input has no ground truth, and the attacker has none either: every OOD input is labelled
with the TARGET's own prediction on it (its clean, unperturbed label), for every attack. Consequences,
on purpose: the gap attack calls every OOD input "correct", i.e. a member, at any threshold that admits
correct examples (its balanced-accuracy threshold): the label-only face of Hintersdorf et al.'s finding;
the perturbation attacks measure whether the target's label is stable around the input, which is what
they measure on the population; the confidence baselines score the target's confidence in its own top
class, Hintersdorf et al.'s setting (ReLU networks are overconfident far from the data).

Scoring. Attacks stay exactly as fit on the shadows of the population; each attack's spec says how
(`AttackSpec.ood`, `attacks.spec.Ood`):
- "as run": the attack is run on the population responses in which the target's answers
  on examples 0..k-1 are replaced by its answers on k OOD inputs (`substitute_target`). These attacks read
  only the target's own row per example and fit everything else on shadow rows, so the classifier,
  threshold or statistic is the one of the attack stage. Correctness against the OOD label is carried
  over exactly by swapping, per input, the class of its OOD label with the class of the example's
  population label (in `pred`, and in the logits' columns).
- "offline": per-example calibration (calibrated, lira_confidence) needs shadows that trained on
  the input (IN) and did not (OUT). No shadow trained on an OOD input, so the online likelihood ratio does
  not exist; the attacker's available test is LiRA's offline one: the target's statistic against the OUT
  Gaussian of the shadows' answers on the same OOD input (global variance pooled over the family when the
  attack's `global_variance` asks for it): the attack's own statistic (`AttackSpec.statistic_of`) and
  calibration (`attacks.methods.calibrated.calibrate`). Its thresholds come from the offline variant's shadow game, and
  its population reference FPR from the offline variant on the target.
- boundary: "as run" with the threshold variant, on the first `boundary_inputs` inputs of each family
  (`Ood.limited`: HopSkipJump is thousands of queries per input); the calibrated variant is skipped (it needs
  HopSkipJump on every shadow for every OOD input). The OOD inputs' statistics that need model access (transfer
  losses, boundary distances) come from `Ood.statistic`.

Figures: per attack, family and threshold (each FPR level and best balanced accuracy, all chosen on the
shadows' population game), the false positives among the OOD inputs pooled over the attack's targets, and
a "population" row: the realized FPR on the targets' population non-members at the same threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from attacks.artifacts import OOD, OOD_SCHEMA, POPULATION, with_study_metadata, write_study
from attacks.loader import load_responses
from attacks.methods.calibrated import calibrate
from attacks.registry import get_attack
from attacks.responses import Responses
from attacks.spec import load
from attacks.stats.metrics import BALANCED_ACCURACY, fpr_key, reported_fprs
from attacks.studies.game import AttackGame, attack_games, prepare_game_statistics, replay, target_scores
from attacks.studies.ood.inputs import DESCRIPTIONS, ood_inputs
from attacks.studies.ood.query import query_ood
from farm.cluster import ensure_ray
from farm.config import DataConfig, SyntheticConfig
from farm.data import load_dataset
from farm.plan import load_plan

LABEL_RULE = "the target's own clean prediction on the input"


@dataclass(frozen=True)
class OodOptions:
    """n_inputs: per family; families: None = all that apply; other_data: "NAME[:PATH]" of a registered data set
    of the run's input shape (None: the `synthetic` data set of the same width for tabular runs, none for
    images); boundary_inputs: per family for HopSkipJump; attacks: None = every attack with a result."""

    n_inputs: int = 1000
    families: tuple[str, ...] | None = None
    other_data: str | None = None
    boundary_inputs: int = 100
    attacks: tuple[str, ...] | None = None
    seed: int = 0


def scoring(game: AttackGame) -> tuple[str | None, str]:
    """(how the attack scores OOD inputs: "as run" | "offline" | None, why when None)."""
    ood = get_attack(game.name).ood
    if ood is None:
        return None, "no rule declared for scoring OOD inputs with this attack (its AttackSpec.ood)"
    if ood.variants is not None and game.settings["variant"] not in ood.variants:
        return None, ood.why_not
    return ood.how, ""


def _swap(values: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """values int[k, ...] with class a[i] and class b[i] exchanged in row i."""
    a, b = a.reshape((-1,) + (1,) * (values.ndim - 1)), b.reshape((-1,) + (1,) * (values.ndim - 1))
    return np.where(values == a, b, np.where(values == b, a, values)).astype(values.dtype)


def substitute_target(responses: Responses, *, target: int, labels: np.ndarray, pred: np.ndarray,
                      logits: np.ndarray | None = None, statistics: dict | None = None) -> Responses:
    """A copy of `responses` whose target row holds, at examples 0..k-1, its answers on k other inputs.

    labels int[k]: those inputs' labels; pred int[k, Q]; logits float[k, C] | None; statistics {name: float[k]}.
    Per input i, classes labels[i] and responses.labels[i] are swapped (a bijection), so every "answer ==
    label" test, and every class-agnostic logits feature at the label, is the same as against labels[i].
    """
    k = len(labels)
    if k > responses.n_examples:
        raise ValueError(f"at most {responses.n_examples} inputs per substitution, got {k}")
    own = responses.labels[:k]
    labels = np.asarray(labels, dtype=np.int64)
    new_pred = responses.pred.copy()
    new_pred[target, :k] = _swap(np.asarray(pred).astype(np.int64), labels, own)
    new_logits = None
    if responses.logits is not None and logits is not None:
        new_logits = responses.logits.copy()
        z, rows = np.array(logits, dtype=np.float32), np.arange(k)
        z[rows, labels], z[rows, own] = z[rows, own], z[rows, labels]
        new_logits[target, :k] = z
    stats = dict(responses.statistics)
    for name, values in (statistics or {}).items():
        stats[name] = stats[name].copy()
        stats[name][target, :k] = values
    return replace(responses, pred=new_pred, logits=new_logits, statistics=stats)


def substituted_scores(game: AttackGame, responses: Responses, target: int, *, labels, pred, logits=None,
                       statistics: dict | None = None) -> np.ndarray:
    """float64[n]: the attack's scores of n OOD inputs for `target`, in chunks of the population's size."""
    n, size, out = len(labels), responses.n_examples, []
    for start in range(0, n, size):
        part = slice(start, min(start + size, n))
        resp = substitute_target(responses, target=target, labels=labels[part], pred=pred[part],
                                 logits=None if logits is None else logits[part],
                                 statistics={k: v[part] for k, v in (statistics or {}).items()})
        out.append(target_scores(game, resp, target)[:part.stop - part.start])
    return np.concatenate(out)


def offline_scores(game: AttackGame, responses: Responses, target: int, *, labels: np.ndarray, pred: np.ndarray,
                   logits: np.ndarray | None) -> np.ndarray:
    """float64[n]: LiRA-offline scores of n OOD inputs for `target` against the OUT Gaussians of the shadows'
    answers on the same inputs: the attack's statistic (`AttackSpec.statistic_of`) on responses of the OOD inputs,
    calibrated as the attack calibrates it. labels int[n]; pred int[M, n, Q]; logits float[M, n, C] | None."""
    models = np.concatenate([[target], game.shadows])
    ood = Responses(member=np.zeros(pred.shape[:2], dtype=bool), pred=pred, labels=labels,
                    query_kinds=responses.query_kinds, query_params=responses.query_params, logits=logits)
    statistic = get_attack(game.name).statistic_of(ood, models, game.settings)
    return calibrate(statistic, np.zeros(statistic[1:].shape, dtype=bool), variant="offline",
                     global_variance=game.settings["global_variance"], min_std=game.settings["min_std"])


def other_dataset(spec: str | None, *, plan, n: int) -> tuple[np.ndarray | None, str]:
    """(inputs of the "other" family or None, where they come from / why there are none)."""
    info = plan.dataset.info
    if spec is None:
        if info.kind != "tabular":
            return None, (f"no other registered data set of shape {tuple(info.shape)} loads offline "
                          "(pass --other-data NAME:PATH, e.g. an npz of the same shape)")
        cfg = DataConfig(name="synthetic", synthetic=SyntheticConfig(
            n_examples=n, n_features=int(np.prod(info.shape)), n_classes=2))
        return load_dataset(cfg, seed=plan.cfg.seed + 1).x, f"synthetic data set, {cfg.synthetic.n_features} features"
    name, _, path = spec.partition(":")
    data = load_dataset(DataConfig(name=name, path=path or None), seed=plan.cfg.seed + 1)
    return data.x, f"{name} {path}".strip()


def fpr_rows(*, attack: str, label_only: bool, how: str, thresholds: dict[str, float], family_scores: dict,
             population: np.ndarray, members: np.ndarray, n_targets: int) -> list[dict]:
    """Rows of OOD_SCHEMA: family_scores {family: float[n]} pooled over targets; population float[n] and
    members float[m]: the targets' scores of their population non-members and members. Pure.

    population_tpr: the share of the targets' members at or above the threshold (an attack that calls no OOD
    input a member because it calls nothing a member shows TPR 0 here)."""
    rows = []
    for family, scores in {POPULATION: population, **family_scores}.items():
        for key, threshold in thresholds.items():
            fp = int((scores >= threshold).sum())
            rows.append({"attack": attack, "label_only": label_only, "scoring": how, "family": family,
                         "threshold": key, "threshold_value": float(threshold), "n_inputs": len(scores),
                         "false_positives": fp, "fpr": fp / len(scores) if len(scores) else float("nan"),
                         "n_targets": n_targets, "population_tpr": float((members >= threshold).mean()),
                         "n_members": len(members)})
    return rows


def ood_study(run_uri: str, options: OodOptions = OodOptions(), *, progress: bool = False) -> list[dict]:
    """Score every attack with a result on OOD inputs; write OOD (metadata "shadowfarm.study": JSON)."""
    plan = load_plan(run_uri)
    run, info = plan.run, plan.dataset.info
    games = attack_games(run, n_models=plan.cfg.membership.n_models, names=options.attacks)
    skipped = {g.name: scoring(g)[1] for g in games if scoring(g)[0] is None}
    games = [g for g in games if g.name not in skipped]
    wanted = options.families
    other_x, other_source = (None, "not requested") if wanted is not None and "other" not in wanted else \
        other_dataset(options.other_data, plan=plan, n=options.n_inputs)
    families = ood_inputs(x=plan.dataset.x, info=info, n=options.n_inputs, seed=options.seed, families=wanted,
                          other_x=other_x)
    skipped_families = {} if "other" in families else {"other": other_source}
    names = list(families)
    x_ood = np.concatenate([families[f] for f in names])
    family_of = np.repeat(np.arange(len(names)), [len(families[f]) for f in names])
    responses = prepare_game_statistics(plan, load_responses(run), games, progress=progress)
    ensure_ray()
    targets = sorted({t for g in games for t in g.targets})
    labels, pred, logits = query_ood(run_uri=run.uri, cfg=plan.cfg, info=info, queries=plan.queries, x=x_ood,
                                     models=range(responses.n_models), n_models=responses.n_models,
                                     logits=responses.logits is not None, progress=progress)
    rows = []
    for game in games:
        rows += _attack_rows(game, plan, responses, options, x_ood=x_ood, family_of=family_of, names=names,
                             labels=labels, pred=pred, logits=logits, progress=progress)
    meta = {"label_rule": LABEL_RULE, "seed": options.seed, "families": {f: DESCRIPTIONS[f] for f in names},
            "other_source": other_source, "skipped_families": skipped_families, "skipped_attacks": skipped,
            "n_inputs": {f: len(families[f]) for f in names}, "targets": targets,
            "scoring": {g.name: scoring(g)[0] for g in games}, "boundary_inputs": options.boundary_inputs}
    write_study(run, OOD, pa.Table.from_pylist(rows, schema=with_study_metadata(OOD_SCHEMA, meta)))
    return rows


def _attack_rows(game: AttackGame, plan, responses: Responses, options: OodOptions, *, x_ood, family_of, names,
                 labels, pred, logits, progress: bool) -> list[dict]:
    how = scoring(game)[0]
    levels = reported_fprs(game.requested_fpr)
    # The game's targets on their population, and thresholds chosen on the shadows' population game.
    played = replay(game, responses, fprs=levels, settings={"variant": "offline"} if how == "offline" else None)
    thresholds = {k: played.thresholds[k] for k in [fpr_key(f) for f in levels] + [BALANCED_ACCURACY]}
    used = np.ones(len(x_ood), dtype=bool)
    if get_attack(game.name).ood.limited:  # the first boundary_inputs of each family (e.g. HopSkipJump)
        used = np.concatenate([np.arange((family_of == f).sum()) < options.boundary_inputs
                               for f in range(len(names))])
    statistics = _ood_statistics(game, plan, responses, x_ood=x_ood, used=used, labels=labels, progress=progress)
    family_scores = {f: [] for f in names}
    for t in game.targets:
        if how == "offline":
            scores = np.concatenate([offline_scores(game, responses, t, labels=labels[t, family_of == f],
                                                    pred=pred[:, family_of == f],
                                                    logits=None if logits is None else logits[:, family_of == f])
                                     for f in range(len(names))])
        else:
            scores = substituted_scores(game, responses, t, labels=labels[t, used], pred=pred[t, used],
                                        logits=None if logits is None else logits[t, used], statistics=statistics[t])
        for f, name in enumerate(names):
            family_scores[name].append(scores[family_of[used] == f])
    return fpr_rows(attack=game.name, label_only=game.label_only, how=how, thresholds=thresholds,
                    family_scores={f: np.concatenate(v) for f, v in family_scores.items()},
                    population=played.scores[~played.member], members=played.scores[played.member],
                    n_targets=len(game.targets))


def _ood_statistics(game: AttackGame, plan, responses: Responses, *, x_ood: np.ndarray, used: np.ndarray,
                    labels: np.ndarray, progress: bool) -> dict[int, dict[str, np.ndarray]]:
    """{target: {statistic: float[n_used]}}: the OOD inputs' statistics needing model access per target
    (`Ood.statistic`: e.g. transfer losses, boundary distances); none for the other attacks."""
    compute = get_attack(game.name).ood.statistic
    if compute is None:
        return {t: {} for t in game.targets}
    return load(compute)(game, plan, responses, x_ood=x_ood, used=used, labels=labels, progress=progress)


def summary(rows: Sequence[dict], *, threshold: str) -> dict[str, dict[str, tuple[int, int]]]:
    """{attack: {family: (false positives, inputs)}} at one threshold key, for quick reading."""
    out: dict = {}
    for r in rows:
        if r["threshold"] == threshold:
            out.setdefault(r["attack"], {})[r["family"]] = (r["false_positives"], r["n_inputs"])
    return out
