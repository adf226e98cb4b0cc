"""MemGuard (Jia, Salem, Backes, Zhang and Gong, CCS 2019, arXiv 1909.10594): noise on each confidence vector
that pushes the defender's own membership classifier to 0.5, the label kept, the expected distortion bounded.

The defender owns its model and knows its members, so it trains its own attack classifier g on them
(`fit_defender`: a one-hidden-layer MLP on the confidence vector sorted descending, one per model, batched),
and for every query with logits z, sorted descending (the arg-max first):

Phase I (`_phase_one`): noisy logits x = z + e that bring g's decision value h (the logit of g's P(member))
to 0, i.e. g to 0.5, by steps of length `step` along the normalized gradient of

    L(x) = c1 |h(softmax(x))|  +  c3 ||softmax(x) - softmax(z)||_1        (reach g = 0.5, small distortion)

A query stops once h has changed sign (at most `max_iter` steps). The paper's third term, c2 ReLU(max_{j>0}
x_j - x_0) (keep the label), is enforced exactly instead: after every step x is sorted again, which keeps
the arg-max in place, never increases the L1 distortion (matching sorted to sorted minimizes it) and shows g
the sorted vector that any attacker reads (the authors' code feeds g the noisy vector in its first order,
and a g so fed is fooled by reordering the small entries, which an attacker who sorts undoes).
As in the authors' code, the search restarts from x = z with c3 ten times larger while it still succeeds
(`c3_rounds` rounds: c3, 10 c3, ...) and the last success is kept (the smallest distortion); a query with
no success gets no noise.
Phase II (`_phase_two`): the noisy vector is released with probability p = min(epsilon / d, 1), d its L1
distortion, so that the expected distortion of every query is at most `epsilon` (the utility budget; the
default 1.0 is the largest budget of the paper's figures); p = 0 where the noise does not bring g closer to
0.5. One seeded draw per query (`seed`).

What it achieves: each released query sits just past g's 0.5, members just below and non-members just above,
so g's threshold guesses wrong and its ranking inverts. On the synthetic farm of tests/test_memguard.py:
g's AUC 0.89 -> 0.22, the loss attack's 0.90 -> 0.30, LiRA on confidences 0.88 -> 0.41, the shadow-trained
confidence classifier 0.90 -> 0.69 (MemGuard aims at g, not at every statistic of the confidences).

Other departures from the authors' code, for speed: g has one hidden layer of 16 units (theirs 256-128-64)
and is trained full-batch with Adam on all of the model's examples; 3 c3 rounds of at most 100 steps (theirs
up to 7 of 300). Everything is batched over models and queries in float32 torch on the CPU, class-major
([M, C, N]: torch's CPU softmax over a last dimension of 10 classes is ~50x slower than over a leading one);
the released log-probabilities are computed in float64. The ops are many and small: on a busy machine run
it with one torch thread (the defense study's tasks do), since a second one mostly waits.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from farm.errors import ConfigError

_GATHER_EVERY = 10  # steps between two gathers of the queries still moving (`_descend`)


class Defender(nn.Module):
    """The defender's membership classifiers, one per model, batched; built by `fit_defender`.

    forward: logits float32[M, C, N], each column sorted descending -> decision values float32[M, N]
    (sigmoid(decision) = P(member)).
    """

    def __init__(self, n_models: int, n_classes: int, *, hidden: int, generator: torch.Generator):
        super().__init__()
        self.w1 = nn.Parameter(_glorot((n_models, hidden, n_classes), generator))
        self.b1 = nn.Parameter(torch.zeros(n_models, hidden, 1))
        self.w2 = nn.Parameter(_glorot((n_models, 1, hidden), generator))
        self.b2 = nn.Parameter(torch.zeros(n_models, 1, 1))

    @property
    def n_models(self) -> int:
        return self.w1.shape[0]

    def forward(self, sorted_logits: torch.Tensor) -> torch.Tensor:
        return self.classify(torch.softmax(sorted_logits, dim=1))

    def classify(self, sorted_probs: torch.Tensor) -> torch.Tensor:
        """Decision values float32[M, N] from confidences float32[M, C, N], each column sorted descending."""
        hidden = torch.relu(torch.baddbmm(self.b1, self.w1, sorted_probs))
        return torch.baddbmm(self.b2, self.w2, hidden)[:, 0]

    def decision(self, logits: np.ndarray) -> np.ndarray:
        """g's decision values float32[M, N] (logit of P(member)) on logits float[M, N, C] in any class order."""
        sorted_logits, _ = _sorted_class_major(_per_model(np.asarray(logits, dtype=np.float64), self.n_models))
        with torch.no_grad():
            return self(sorted_logits.float()).numpy()


def _glorot(shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    bound = (6.0 / (shape[1] + shape[2])) ** 0.5
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def _per_model(logits: np.ndarray, n_models: int) -> torch.Tensor:
    """logits float64[..., C] as float64[M, N, C] for a defender of `n_models` models."""
    if n_models == 1:
        return torch.as_tensor(logits.reshape(1, -1, logits.shape[-1]))
    if logits.ndim != 3 or logits.shape[0] != n_models:
        raise ConfigError(f"memguard: the defender was fit for {n_models} models, so logits must be "
                          f"[{n_models}, N, C]; got {logits.shape}")
    return torch.as_tensor(logits)


def _sorted_class_major(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z float64[M, N, C] -> (z sorted descending, class-major float64[M, C, N]; the order int64[M, N, C])."""
    order = torch.argsort(-z, dim=-1, stable=True)  # stable: a tie keeps np.argmax's first index in front
    return z.gather(-1, order).transpose(1, 2).contiguous(), order


def fit_defender(*, logits: np.ndarray, member: np.ndarray, hidden: int = 16, steps: int = 200,
                 lr: float = 0.03, seed: int = 0) -> Defender:
    """Each model's own membership classifier, fit on its members vs non-members (binary cross-entropy,
    full-batch Adam for `steps` steps, initialization from `seed`: deterministic).

    logits: float[M, N, C] (or [N, C] for one model); member: bool[M, N] (or [N]).
    """
    logits, member = np.asarray(logits, dtype=np.float64), np.asarray(member)
    if logits.ndim == 2:
        logits, member = logits[None], member[None]
    if logits.ndim != 3 or member.shape != logits.shape[:2]:
        raise ConfigError(f"memguard: expected logits [M, N, C] and member [M, N], got {logits.shape} and "
                          f"{member.shape}")
    sorted_probs = torch.softmax(_sorted_class_major(torch.as_tensor(logits))[0], dim=1).float()
    target = torch.as_tensor(member, dtype=torch.float32)
    defender = Defender(len(logits), logits.shape[2], hidden=hidden, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(defender.parameters(), lr=lr)
    with torch.enable_grad():  # whatever the caller's mode
        for _ in range(steps):
            optimizer.zero_grad()
            F.binary_cross_entropy_with_logits(defender.classify(sorted_probs), target).backward()
            optimizer.step()
    return defender.requires_grad_(False).eval()


def memguard(logits: np.ndarray, *, defender: Defender | None = None, epsilon: float = 1.0, c1: float = 1.0,
             c3: float = 0.1, c3_rounds: int = 3, max_iter: int = 100, step: float = 0.1,
             seed: int = 0) -> np.ndarray:
    """Log-probabilities float64[..., C] released by MemGuard; the arg-max of every row is unchanged.

    logits: float[M, N, C] for a defender of M models, or [..., C] for a defender of one model.
    """
    if defender is None:
        raise ConfigError("output defense 'memguard' needs defender=fit_defender(logits=..., member=...): the "
                          "defender's classifier of its own members (defended_responses fits it from the run)")
    if not epsilon >= 0 or c3_rounds < 1 or max_iter < 1:
        raise ConfigError(f"memguard: need epsilon >= 0, c3_rounds >= 1 and max_iter >= 1; got {epsilon}, "
                          f"{c3_rounds}, {max_iter}")
    logits = np.asarray(logits, dtype=np.float64)
    sorted_z, order = _sorted_class_major(_per_model(logits, defender.n_models))
    z = sorted_z.float()
    with torch.enable_grad():  # whatever the caller's mode (an oracle runs under no_grad)
        x = _phase_one(z, defender, c1=c1, c3=c3, c3_rounds=c3_rounds, max_iter=max_iter, step=step)
    noise = torch.where(_phase_two(z, x, defender, epsilon=epsilon, seed=seed)[:, None], x - z, 0.0)
    released = torch.log_softmax(sorted_z + noise.double(), dim=1).transpose(1, 2)
    out = torch.empty_like(released).scatter_(-1, order, released).numpy().reshape(logits.shape)
    clean = torch.log_softmax(torch.as_tensor(logits), dim=-1).numpy()
    # a top-class margin below float32 resolution would tie the label away in the float32 output
    kept = np.argmax(out.astype(np.float32), axis=-1) == np.argmax(logits, axis=-1)
    return np.where(kept[..., None], out, clean)


def _phase_one(z: torch.Tensor, defender: Defender, *, c1: float, c3: float, c3_rounds: int, max_iter: int,
               step: float) -> torch.Tensor:
    """Noisy sorted logits float32[M, C, N]: those of the last c3 round reached by a query that also reached
    every earlier round (z itself where the first round failed)."""
    with torch.no_grad():
        sign = defender(z).sign()
    best, alive = z, torch.ones(sign.shape, dtype=torch.bool)
    for k in range(c3_rounds):
        x, reached = _descend(z, defender, sign=sign, active=alive, weights=(c1, c3 * 10 ** k),
                              max_iter=max_iter, step=step)
        alive &= reached
        best = torch.where(alive[:, None], x, best)
        if not alive.any():
            break
    return best


def _descend(z: torch.Tensor, defender: Defender, *, sign: torch.Tensor, active: torch.Tensor,
             weights: tuple[float, float], max_iter: int, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized gradient descent on L from x = z for the `active` queries, each until h changes sign (with
    a strict top-class margin). Returns x float32[M, C, N] and whether each query got there, bool[M, N].

    Only the queries still moving are computed: every `_GATHER_EVERY` steps they are gathered, per model, into
    [M, C, K] (K: the most any model has; padded with queries that no longer move, which are left as they are).
    """
    c1, c3 = weights
    clean_probs = torch.softmax(z, dim=1)
    x, moving = z.clone(), active.clone()
    for i in range(max_iter + 1):
        if i % _GATHER_EVERY == 0:
            columns = _moving_first(moving)
            spread = columns[:, None].expand(-1, z.shape[1], -1)
        xs = x.gather(2, spread).requires_grad_(True)
        decision = defender(xs)
        reached = (decision.detach() * sign.gather(1, columns) <= 0) & (xs.detach()[:, 0] > xs.detach()[:, 1])
        still = moving.gather(1, columns) & ~reached
        moving.scatter_(1, columns, still)
        if i == max_iter or not moving.any():
            return x, active & ~moving
        loss = c1 * decision.abs() + c3 * (torch.softmax(xs, dim=1) - clean_probs.gather(2, spread)).abs().sum(dim=1)
        (grad,) = torch.autograd.grad(loss.sum(), xs)
        direction = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
        x.scatter_(2, spread, _resorted(xs.detach() - step * direction * still[:, None]))


def _moving_first(moving: torch.Tensor) -> torch.Tensor:
    """int64[M, K]: each model's moving queries first (K: the most moving queries of any model, at least 1)."""
    k = max(int(moving.sum(dim=1).max()), 1)
    return torch.argsort((~moving).to(torch.uint8), dim=1, stable=True)[:, :k]


def _resorted(x: torch.Tensor) -> torch.Tensor:
    """x float32[M, C, N] with every column sorted descending again (only the columns a step unsorted)."""
    models, examples = (x[:, 1:] > x[:, :-1]).any(dim=1).nonzero(as_tuple=True)
    if len(models):
        x[models, :, examples] = x[models, :, examples].sort(dim=-1, descending=True).values
    return x


def _phase_two(z: torch.Tensor, x: torch.Tensor, defender: Defender, *, epsilon: float, seed: int) -> torch.Tensor:
    """Which queries get their noise, bool[M, N]: each with p = min(epsilon / L1 distortion, 1), 0 where the
    noise does not bring g closer to 0.5."""
    with torch.no_grad():
        distortion = (torch.softmax(x, dim=1) - torch.softmax(z, dim=1)).abs().sum(dim=1)
        helps = defender(x).abs() < defender(z).abs()
        p = torch.where(helps, (epsilon / distortion.clamp_min(1e-30)).clamp(max=1.0), 0.0)
        draw = torch.rand(p.shape, generator=torch.Generator().manual_seed(seed))
    return draw < p
