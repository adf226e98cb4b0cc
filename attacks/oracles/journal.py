"""The answer journal of an audited target: every label it gave, keyed by a hash of the input row.

Layout: `<run>/audit/<target key>/journal/part-<time>-<random>.parquet`, one part per answered request,
written atomically (RunDir) before the answer is used; columns `input_sha256` binary(16) (the first 16 bytes
of SHA-256 over the row's shape and float32 little-endian bytes) and `label` int64. Parts are only ever
added, so a crash loses at most the requests in flight, and a re-run asks the target only for rows the
journal has not seen: no query is paid for twice. Opening a journal with more than `COMPACT_AFTER` parts
first writes them as one part, then deletes the old ones (a crash in between leaves duplicates, which
agree). If the target answered one row twice differently, the first answer wins. Each part has its sha256 and
size beside it (`farm.content.write_recorded`); a part changed after it was written is left out, with a note, and
its rows are asked again.

Journals are kept per model, not per URL (the model behind a URL changes: a redeploy, a new version
promoted): `open_journal` keys the folder on the target's identity where its protocol states one (v2: the
model's metadata, `HttpOracle.identity`), as `<journal>/<identity hash>-<generation>/` with the identity in
`identity.json`. A changed identity gets a journal of its own; `new=True` (`--new-journal`) starts the next
generation, keeping the old one. Where the identity says nothing (our own protocol, or a model replaced under
the same metadata), `HttpOracle` re-asks a few journaled rows before it trusts the journal and refuses when
the answers differ (`TargetChanged`), so answers of two models are never mixed. Parts written before identities
were recorded (directly in `<journal>/`) are adopted as the journal of whatever answers there now, after the
same re-ask check.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid

import numpy as np
import pyarrow as pa

from farm.content import cached, record_of, write_recorded
from farm.errors import RunError
from farm.shards import schema
from farm.storage import RunDir, table_bytes

JOURNAL_SCHEMA = schema(
    [("input_sha256", pa.binary(16)), ("label", pa.int64())],
    file="journal",
)
COMPACT_AFTER = 256
IDENTITY = "identity.json"


def row_keys(x: np.ndarray) -> list[bytes]:
    """x float32[B, *shape] -> B keys of 16 bytes; equal rows (same shape, same float32 bits) share a key."""
    x = np.ascontiguousarray(x, dtype="<f4")
    prefix = np.asarray(x.shape[1:], dtype="<i8").tobytes()
    return [hashlib.sha256(prefix + row.tobytes()).digest()[:16] for row in x.reshape(len(x), -1)]


class Journal:
    """Answers of one target, loaded from `run`/`rel` and appended to it; thread-safe."""

    def __init__(self, run: RunDir, rel: str):
        self.run, self.rel = run, rel.rstrip("/")
        self._answers: dict[bytes, int] = {}
        self._lock = threading.Lock()
        parts = self._parts()
        for name in parts:
            self._load(f"{self.rel}/{name}")
        if len(parts) > COMPACT_AFTER:
            self._write(list(self._answers), np.fromiter(self._answers.values(), dtype=np.int64))
            for name in parts:
                self.run.delete(f"{self.rel}/{name}")
                self.run.delete(record_of(f"{self.rel}/{name}"))

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def where(self) -> str:
        return self.run.path(self.rel)

    def get(self, keys: list[bytes]) -> np.ndarray:
        """int64[len(keys)]: the journaled label of each key, -1 where none."""
        with self._lock:
            return np.fromiter((self._answers.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def append(self, keys: list[bytes], labels: np.ndarray) -> None:
        """Journal one answered request (written before this returns)."""
        self._write(keys, labels)
        with self._lock:
            for key, label in zip(keys, np.asarray(labels).tolist(), strict=True):
                self._answers.setdefault(key, label)

    def _parts(self) -> list[str]:
        return [n for n in self.run.listdir(self.rel) if n.startswith("part-") and n.endswith(".parquet")]

    def _load(self, rel: str) -> None:
        if not cached(self.run, rel):  # changed after it was written (a note says so): its rows are asked again
            return
        try:
            table = self.run.read_table(rel)
            keys, labels = table["input_sha256"].to_pylist(), table["label"].to_pylist()
        except (OSError, KeyError, pa.ArrowException) as exc:
            raise RunError(f"{self.run.path(rel)}: unreadable journal part ({' '.join(str(exc).split())[:120]}); "
                           "move it away to ask the target again for its rows") from None
        for key, label in zip(keys, labels, strict=True):
            self._answers.setdefault(key, label)

    def _write(self, keys: list[bytes], labels: np.ndarray) -> None:
        table = pa.table({"input_sha256": pa.array(keys, type=pa.binary(16)),
                          "label": pa.array(np.asarray(labels, dtype=np.int64))}, schema=JOURNAL_SCHEMA)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        write_recorded(self.run, f"{self.rel}/{name}", table_bytes(table))


def identity_hash(identity: dict) -> str:
    """12 hex digits over the canonical JSON of a target's identity."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]


def open_journal(run: RunDir, base: str, identity: dict, *, new: bool = False) -> tuple[Journal, list[str]]:
    """(the journal of the model `identity` under `base`, notes for the user): its latest generation, a new one
    when `new` or when none exists (the parts of an older layout in `base` itself are adopted if no generation
    exists yet and not `new`)."""
    key, names = identity_hash(identity), [n for n in run.listdir(base) if not n.startswith(".")]
    generations = sorted(int(n.rsplit("-", 1)[1]) for n in names
                         if n.startswith(key + "-") and n.rsplit("-", 1)[1].isdigit())
    legacy = any(n.startswith("part-") for n in names)
    others = [n for n in names if "-" in n and not n.startswith(("part-", key + "-"))]
    notes = []
    if generations and not new:
        rel = f"{base}/{key}-{generations[-1]}"
    elif legacy and not new:
        return Journal(run, base), notes
    else:
        rel = f"{base}/{key}-{(generations[-1] if generations else 0) + 1}"
        if new and (generations or legacy or others):
            notes.append(f"--new-journal: answers go to a new journal {run.path(rel)}; the earlier ones are kept")
        elif others:
            notes.append(f"the target's identity (its metadata) differs from the journal's: a new journal "
                         f"{run.path(rel)} is started (the earlier ones are kept)")
        run.write_json(f"{rel}/{IDENTITY}", identity)
    return Journal(run, rel), notes
