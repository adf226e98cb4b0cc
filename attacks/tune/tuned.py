"""`--tuned`: what `shadowfarm tune` chose (tune/<attack>/best.json), checked before an attack or audit uses it;
and an audit's guard against a `model:K` target among its own shadows (`without_target`).

best.json records the targets and the shadows it was tuned on. A setting tuned with a model among its shadows
(pseudo-targets included) has been chosen with that model's membership, so `--tuned` refuses to attack that
model with it: re-tune with the same --targets. The threshold best.json holds for its FPR was chosen on the
tuning game's pseudo-targets (shadows only); it is the one applied when the call asks for that FPR with the
same shadows, and it is recomputed on the call's own shadow game otherwise ("tuned_threshold" in the
results says which).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import numpy as np

from attacks.artifacts import TUNE_DIR, tune_best
from attacks.stats.metrics import fpr_key
from farm.content import read_recorded
from farm.errors import ConfigError
from farm.storage import RunDir


def load_tuned(run: RunDir, names: Sequence[str], *, targets: Sequence[int]) -> dict:
    """attack name -> the chosen setting of tune/<attack>/best.json (for the attacks that were tuned), with the
    FPR, threshold and shadows it was tuned for; ConfigError when one of `targets` was among those shadows."""
    found = {}
    for name in names:
        if not run.is_file(tune_best(name)):
            continue
        command = f"shadowfarm tune RUN --attack {name} --targets {','.join(map(str, targets)) or 'IDS'}"
        best = json.loads(read_recorded(run, tune_best(name), redo=f"re-tune: {command}"))
        if "shadows" not in best:
            raise ConfigError(f"--tuned: {tune_best(name)} does not record the shadows it was tuned on; "
                              f"re-tune: {command}")
        leaked = sorted(set(map(int, targets)) & set(best["shadows"]))
        if leaked:
            raise ConfigError(f"--tuned: {tune_best(name)} was tuned with model {leaked[0]} among its shadows, "
                              f"so it has seen that target's membership; re-tune with the same --targets: {command}")
        found[name] = {"settings": best["chosen"]["settings"], "queries": best["chosen"]["queries"],
                       "threshold": best["threshold"], "fpr": best["fpr"], "metric": best["metric"],
                       "shadows": best["shadows"], "target_model_ids": best["target_model_ids"]}
    if not found:
        raise ConfigError(f"--tuned: no tune results under {run.path(TUNE_DIR)}; "
                          "run `shadowfarm tune RUN --attack NAME`")
    return found


def tuned_thresholds(thresholds: dict, tuned: dict | None, *, fpr: float,
                     shadows: Sequence[int]) -> tuple[dict, str | None]:
    """(thresholds, how the requested FPR's threshold was made): best.json's threshold for `fpr` when it was
    tuned for that FPR on these shadows, else this game's own (None: nothing was tuned)."""
    if tuned is None:
        return thresholds, None
    if tuned["fpr"] == fpr and list(tuned["shadows"]) == [int(s) for s in shadows]:
        threshold = float("inf") if tuned["threshold"] is None else float(tuned["threshold"])  # JSON null: +inf
        return {**thresholds, fpr_key(fpr): threshold}, "tuned (tune/best.json)"
    return thresholds, (f"recomputed on this shadow game (best.json was tuned for FPR {tuned['fpr']:g} on "
                        f"{len(tuned['shadows'])} shadows; this call: FPR {fpr:g} on {len(shadows)} shadows)")


def run_model(target: str) -> list[int]:
    """[K] for an audit target `model:K` (a model of the run), [] for a model the run does not hold."""
    return [int(target[6:])] if target.startswith("model:") and target[6:].isdigit() else []


def without_target(shadows: np.ndarray, target: str) -> np.ndarray:
    """An audit's shadows without the audited model when it is one of the run's (never its own shadow)."""
    dropped = [k for k in run_model(target) if k in set(shadows.tolist())]
    if dropped:
        print(f"audit: --target {target} is among the shadows; model {dropped[0]} is dropped from them",
              file=sys.stderr)
    return shadows[~np.isin(shadows, dropped)]
