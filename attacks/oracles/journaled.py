"""A label oracle that answers through a journal (attacks.oracles.journal): a local model file (ONNX), or answers
imported from a file written by the model's owner (attacks.offline).

`JournaledOracle(inner, journal)` answers the rows its journal holds from there and asks `inner` (any
`LabelOracle`) for the others, each distinct row once, journaling the answers before they are used. Its
`queries_used` and `budget` are the inner oracle's (journaled rows cost nothing: a local model is free to ask,
and imported answers were paid for elsewhere). A journal written earlier is trusted only after `RECHECK` of its
rows, re-asked of `inner` on the first call that reuses it, give the same answers; otherwise `TargetChanged`
(answers imported for this model but given by another one, or a file replaced). With `inner=None` the journal
alone answers: a row it lacks is a one-line DataError (the audit asks for an input no answer covers).
"""

from __future__ import annotations

import threading

import numpy as np

from attacks.oracles.http_client import RECHECK
from attacks.oracles.http_settings import TargetChanged
from attacks.oracles.journal import Journal, row_keys
from farm.errors import DataError


class JournaledOracle:
    """`inner`'s answers through `journal` (see the module docstring); `source` names the target in errors."""

    def __init__(self, inner, journal: Journal, *, source: str):
        self.inner, self.journal, self.source = inner, journal, source
        self.notes: list[str] = []
        self.journal_hits, self.rechecked = 0, 0
        self._checked = inner is None or not len(journal)
        self._lock = threading.Lock()

    @property
    def queries_used(self) -> int:
        return 0 if self.inner is None else self.inner.queries_used

    @property
    def budget(self) -> int | None:
        return None if self.inner is None else self.inner.budget

    def identity(self) -> dict:
        """The inner oracle's identity; for answers read from a file, that file."""
        return self.inner.identity() if self.inner is not None else {"answers": self.source}

    def predict_labels(self, x) -> np.ndarray:
        """x float32[B, *shape] -> int64[B]: journaled rows from the journal, each new distinct row asked once."""
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        keys = row_keys(x)
        labels = self.journal.get(keys)
        first: dict[bytes, int] = {}
        for i in np.flatnonzero(labels < 0):
            first.setdefault(keys[i], int(i))
        reused = bool((labels >= 0).any())
        with self._lock:
            self.journal_hits += int((labels >= 0).sum())
            recheck, self._checked = reused and not self._checked, self._checked or reused
        if recheck:
            self._recheck(x, keys, labels)
        if not first:
            return labels
        if self.inner is None:
            raise DataError(f"{self.source}: no answer for {len(first)} of the {len(x)} inputs this audit asks; "
                            "export the queries again with the same options")
        rows = np.fromiter(first.values(), dtype=np.intp, count=len(first))
        answers = np.asarray(self.inner.predict_labels(x[rows]), dtype=np.int64)
        self.journal.append([keys[i] for i in rows], answers)
        fresh = dict(zip((keys[i] for i in rows), answers.tolist(), strict=True))
        missing = labels < 0
        labels[missing] = [fresh[keys[i]] for i in np.flatnonzero(missing)]
        return labels

    def _recheck(self, x: np.ndarray, keys: list[bytes], labels: np.ndarray) -> None:
        """Re-ask up to RECHECK distinct journaled rows of this call; TargetChanged when an answer differs."""
        hits = np.fromiter({keys[i]: i for i in np.flatnonzero(labels >= 0)[::-1]}.values(), dtype=np.intp)
        rows = np.sort(np.random.default_rng(0).choice(hits, size=min(RECHECK, len(hits)), replace=False))
        answers = np.asarray(self.inner.predict_labels(x[rows]), dtype=np.int64)
        self.rechecked += len(rows)
        if (differ := int((answers != labels[rows]).sum())):
            raise TargetChanged(f"{self.source}: the target's answers differ from its journal {self.journal.where}: "
                                f"{differ} of {len(rows)} journaled answers re-asked differ; run again with "
                                "--new-journal to start a new journal (the old one is kept)")
