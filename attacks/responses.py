"""The attack stage's view of a run: arrays only, as read from the shards."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True, eq=False)
class Responses:
    """Label-only responses of M models on N examples under Q queries.

    member: bool[M, N]          training membership (read for shadows only)
    pred: int16[M, N, Q]        predicted label per model, example, query
    labels: int64[N]            true labels
    query_kinds: tuple[str]     length Q, e.g. ("clean", "translate", ...)
    query_params: tuple[dict]   length Q
    logits: float32[M, N, C] | None   clean-query logits (confidence baselines only)
    model_ids: int32[M]         model_id of each row
    statistics: dict[str, float64[M, N]]   per-(model, example) statistics computed with model
                                access (e.g. "transfer" scores, "boundary" distances); NaN where
                                not computed
    fit_examples: int[F] | None the examples whose shadow rows attack classifiers are fit on (None: all);
                                a disjoint run's target view sets it to the shadow pool (`attacks.stats.shadow_game`)
    """

    member: np.ndarray
    pred: np.ndarray
    labels: np.ndarray
    query_kinds: tuple[str, ...]
    query_params: tuple[dict, ...]
    logits: np.ndarray | None = None
    model_ids: np.ndarray | None = None
    statistics: dict = field(default_factory=dict)
    fit_examples: np.ndarray | None = None

    @property
    def n_models(self) -> int:
        return self.member.shape[0]

    @property
    def n_examples(self) -> int:
        return self.member.shape[1]

    def queries_of(self, *kinds: str) -> np.ndarray:
        """Indices of the queries whose kind is in `kinds` (all queries when none given)."""
        return np.array([q for q, k in enumerate(self.query_kinds) if not kinds or k in kinds], dtype=int)

    def without_logits(self) -> Responses:
        return replace(self, logits=None)

    def restricted(self, examples: np.ndarray) -> Responses:
        """The same models on the examples `examples` (int[K]) only: every per-example array sliced."""
        examples = np.asarray(examples, dtype=np.intp)
        return replace(self, member=self.member[:, examples], pred=self.pred[:, examples],
                       labels=self.labels[examples], fit_examples=None,
                       logits=None if self.logits is None else self.logits[:, examples],
                       statistics={name: values[:, examples] for name, values in self.statistics.items()})

    def fitting_on(self, examples: np.ndarray) -> Responses:
        """A copy whose attack classifiers fit on the shadows' rows of `examples` (int[F]) only."""
        return replace(self, fit_examples=np.asarray(examples, dtype=np.intp))

    def with_statistic(self, name: str, values: np.ndarray) -> Responses:
        """A copy with statistics[name] = values (float64[M, N])."""
        return replace(self, statistics={**self.statistics, name: values})
