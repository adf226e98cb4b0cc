"""Output-side defenses (confidence masking, DESIGN §7): what a defended API returns instead of its confidences.

Each defense maps a model's logits float[..., C] to the logits of the confidence vector the defended API
would release, always keeping the arg-max (the label), so that the label a label-only attacker sees is
unchanged: label-only attacks are unaffected *by construction*, and confidence baselines see only
the masked vector. Registry (unknown names are ConfigErrors listing the valid ones):

==========  ===========================================================================================
memguard    MemGuard (Jia et al. 2019, `attacks.oracles.memguard`): noise that brings the defender's own
            membership classifier to 0.5, within an expected L1 distortion `epsilon`
flatten     confidences flattened to uniform, arg-max kept (a fixed small `lead`): the idealized limit of
            MemGuard that the label-only paper evaluated; only the label survives
top1        the top-1 label only: a one-hot vector on the arg-max (logit `margin` = 50, others 0)
round       confidences rounded to `decimals` decimals (ties at the top broken toward the arg-max)
==========  ===========================================================================================

MemGuard needs `defender`, the defender's classifier of its own members (`FITTED` names how to fit it):
`defended_responses` fits one per model from the run's membership (the defender owns its models), and
`DefendedModel(module, "memguard", defender=fit_defender(logits=..., member=...))` takes one fit on that
module's own logits and members.

Confidences are returned as logits (log-probabilities) because that is what the baselines read;
zero probabilities become log(1e-12) so that every baseline stays finite.

Two entry points: `defended_responses(responses, name, **settings)` masks the logits of a run's responses
(what the attack stage's confidence baselines read from the shards; `pred` is left as it is), and
`DefendedModel` wraps a module so that an oracle or any other caller sees the masked output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from scipy.special import softmax
from torch import nn

from attacks.oracles.memguard import fit_defender, memguard
from attacks.responses import Responses
from farm.errors import ConfigError, unknown_name

_FLOOR = 1e-12


def _one_hot_top(logits: np.ndarray) -> np.ndarray:
    top = np.argmax(logits, axis=-1)
    return np.arange(logits.shape[-1]) == top[..., None]


def flatten(logits: np.ndarray, *, lead: float = 1e-3) -> np.ndarray:
    """Uniform confidences 1/C, the arg-max raised by `lead` (renormalized): only the label survives."""
    top = _one_hot_top(logits)
    c = logits.shape[-1]
    probs = np.where(top, 1.0 / c + lead, (1.0 - 1.0 / c - lead) / (c - 1))
    return np.log(probs)


def top1(logits: np.ndarray, *, margin: float = 50.0) -> np.ndarray:
    """The label alone: probability 1 on the arg-max (logit `margin`: e^-margin vanishes in float64), 0 elsewhere."""
    return np.where(_one_hot_top(logits), margin, 0.0)


def round_confidences(logits: np.ndarray, *, decimals: int = 2) -> np.ndarray:
    """softmax rounded to `decimals` decimals; the arg-max keeps a tiny lead so that rounding cannot tie it away."""
    probs = np.round(softmax(np.asarray(logits, dtype=np.float64), axis=-1), decimals)
    masked = np.log(np.maximum(probs, _FLOOR))
    return masked + _one_hot_top(logits) * 1e-6


OUTPUT_DEFENSES: dict[str, Callable[..., np.ndarray]] = {
    "memguard": memguard,
    "flatten": flatten,
    "top1": top1,
    "round": round_confidences,
}
# defenses whose `defender` setting is a classifier fit on the model's own members: name -> fit(logits, member)
FITTED: dict[str, Callable[..., object]] = {"memguard": fit_defender}


def mask_logits(name: str, logits: np.ndarray, **settings) -> np.ndarray:
    """Masked logits float32[..., C] of output defense `name`; the arg-max of every row is unchanged."""
    if name not in OUTPUT_DEFENSES:
        raise unknown_name("output defense", name, OUTPUT_DEFENSES)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ConfigError(f"output defense {name!r}: expected logits [..., C] with C >= 2, got {logits.shape}")
    return OUTPUT_DEFENSES[name](logits, **settings).astype(np.float32)


def defended_responses(responses: Responses, name: str, **settings) -> Responses:
    """The responses as seen through output defense `name`: logits masked, everything else identical.

    Label-only attacks receive `responses.without_logits()` (attacks.registry.run_attack), which is then the
    very same arrays as for the undefended run. A `FITTED` defense without a `defender` setting gets one fit
    on every model's own members, `responses.member` (default fit settings). ConfigError when the run has no
    logits.
    """
    if responses.logits is None:
        raise ConfigError(f"output defense {name!r}: the run has no logits to mask (record_logits: false)")
    if name in FITTED and "defender" not in settings:
        settings = {**settings, "defender": FITTED[name](logits=responses.logits, member=responses.member)}
    return replace(responses, logits=mask_logits(name, responses.logits, **settings))


class DefendedModel(nn.Module):
    """`module` behind output defense `name`: forward returns masked logits float32[B, C] (arg-max unchanged).

    A `FITTED` defense needs `defender=` fit on this module's own logits and members (one model); its random
    choices are seeded per call, so the same batch gets the same answers.
    """

    def __init__(self, module: nn.Module, name: str, **settings):
        super().__init__()
        if name not in OUTPUT_DEFENSES:
            raise unknown_name("output defense", name, OUTPUT_DEFENSES)
        if name in FITTED and "defender" not in settings:
            raise ConfigError(f"output defense {name!r} needs defender=fit_defender(logits=..., member=...) "
                              f"fit on this model's own members")
        self.module, self.name, self.settings = module, name, settings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.module(x)
        masked = mask_logits(self.name, logits.detach().cpu().numpy(), **self.settings)
        return torch.as_tensor(masked, device=logits.device)
