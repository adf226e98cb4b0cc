"""IBM ART's side of `jobs.bench.boundary`, and the meters both tools run under.

`CountingModule` counts the rows a torch module evaluates (a tool's queries), `Stopwatch` times each run
(wall clock and CPU); `run_art` runs ART's HopSkipJump through its PyTorchClassifier or BlackBoxClassifier;
`back_to_boundary` puts ART's stepped points on the boundary, as ours are. ART is imported only when needed
(`import_art`): `ArtMissing` when it is not installed.
"""

from __future__ import annotations

import contextlib
import logging
import time

import numpy as np
import torch
from torch import nn

from farm.errors import ShadowfarmError

ART_MISSING = "the benchmark needs IBM ART: pip install 'shadowfarm[bench]'"
INIT_SIZE = 100  # random starts: ART's default init_size, and the most ours draws (attacks/compute/hsja.py)


class ArtMissing(ShadowfarmError):
    """IBM ART is not installed."""


class CountingModule(nn.Module):
    """Wraps a module; `rows` counts the rows of every batch its forward evaluates (a tool's queries).

    Inputs are cast to float32: under numpy 2, ART's HopSkipJump promotes its probes to float64 (0-d arrays no
    longer cast down, NEP 50; Trusted-AI/adversarial-robustness-toolbox#2475), which a float32 model refuses."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += int(x.shape[0])
        return self.inner(x.to(torch.float32))


class Stopwatch:
    """Wall-clock and CPU seconds (this process, all its threads) of each timed run. CPU time is the figure
    to trust on a busy machine: other processes stretch wall time, much less a process's own CPU time."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []

    @contextlib.contextmanager
    def run(self):
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)


def import_art():
    """(HopSkipJump, {estimator name: ART class}, ART's version), imported only when needed."""
    try:
        import art
        from art.attacks.evasion import HopSkipJump
        from art.estimators.classification import BlackBoxClassifier, PyTorchClassifier
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "art":
            raise ShadowfarmError(f"IBM ART is installed but fails to import: {exc}") from None
        raise ArtMissing(ART_MISSING) from None
    except ImportError as exc:  # installed, but incompatible with this numpy/torch
        raise ShadowfarmError(f"IBM ART is installed but fails to import: {exc}") from None
    return HopSkipJump, {"pytorch": PyTorchClassifier, "blackbox": BlackBoxClassifier}, art.__version__


def _art_classifier(estimator: str, art_class, counting: CountingModule, *, shape, num_classes: int, bounds):
    """ART's view of the module: PyTorchClassifier (its torch estimator) or BlackBoxClassifier (a prediction
    function; here it answers one-hot labels, what a label-only target gives)."""
    if estimator == "pytorch":
        return art_class(model=counting, loss=nn.CrossEntropyLoss(), input_shape=shape, nb_classes=num_classes,
                         clip_values=bounds, device_type="cpu")
    one_hot = np.eye(num_classes, dtype=np.float32)

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return one_hot[counting(torch.from_numpy(np.asarray(batch))).argmax(1).numpy()]

    return art_class(predict, input_shape=shape, nb_classes=num_classes, clip_values=bounds)


def run_art(module: nn.Module, x: np.ndarray, y: np.ndarray, *, estimator: str, bounds, num_classes: int, art,
            args) -> tuple[Stopwatch, np.ndarray, np.ndarray, int]:
    """(times of each repeat, adversarial points float32[B, *shape] of the last repeat, correctly classified
    bool[B], rows evaluated by the module in the last repeat). Misclassified rows are returned unchanged."""
    hop_skip_jump, estimators, _ = art
    counting = CountingModule(module)
    classifier = _art_classifier(estimator, estimators[estimator], counting, shape=x.shape[1:],
                                 num_classes=num_classes, bounds=bounds)
    batch_size = args.max_evals  # the largest batch ART makes: one forward call per gradient estimate
    attack = hop_skip_jump(classifier, targeted=False, norm=2, max_iter=args.max_iter, max_eval=args.max_evals,
                           init_eval=args.init_evals, init_size=INIT_SIZE, batch_size=batch_size, verbose=False)
    watch, x_adv, correct = Stopwatch(), x, np.zeros(len(x), dtype=bool)
    hsja_log = logging.getLogger("art.attacks.evasion.hop_skip_jump")
    level = hsja_log.level
    hsja_log.setLevel(logging.ERROR)  # one warning per failure otherwise; failures are counted below
    try:
        for _ in range(args.art_repeats):
            np.random.seed(args.seed)  # ART's gradient probes use numpy's global RNG (its starts are unseeded)
            counting.rows = 0
            with watch.run():
                correct = classifier.predict(x, batch_size=batch_size).argmax(axis=1) == y
                x_adv = x.copy()
                if correct.any():
                    x_adv[correct] = attack.generate(x[correct], y=y[correct])
    finally:
        hsja_log.setLevel(level)
    return watch, x_adv, correct, counting.rows


def back_to_boundary(module: nn.Module, x: np.ndarray, x_adv: np.ndarray, y: np.ndarray, steps: int) -> np.ndarray:
    """float64[B] distances after a binary search from each adversarial point x_adv float32[B, *shape] back
    towards x (`steps` halvings, uncounted): ART returns a stepped point, not a boundary point; this puts its
    distances on ours' footing. Rows with x_adv == x stay 0."""
    low, high = np.zeros(len(x)), np.ones(len(x))
    blend = lambda a: (x + a.reshape(-1, *[1] * (x.ndim - 1)) * (x_adv - x)).astype(np.float32)
    for _ in range(steps):
        mid = (low + high) / 2
        with torch.no_grad():
            adversarial = module(torch.from_numpy(blend(mid))).argmax(1).numpy() != y
        high, low = np.where(adversarial, mid, high), np.where(adversarial, low, mid)
    return np.linalg.norm((blend(high) - x).reshape(len(x), -1).astype(np.float64), axis=1)
