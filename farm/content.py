"""Content records: a model's `_SUCCESS` names the sha256 and size of each file of its shard.

`_SUCCESS` is text: the config hash on its first line, then one line per file, `<sha256> <size> <name>`:

    3f9c0a1e2b7d4c55
    9d5e...c1 81231 weights.pt
    77aa...0f 612 metrics.json
    01bc...9e 20480 responses.parquet

`verify` checks every record (`--quick`: sizes only), resume retrains a model whose files do not match, and
every reader of weights or responses (`checked_bytes`) refuses a file that does not match, naming it. A run made
before content records has a `_SUCCESS` of one line: it is read as before (structure checks only), with one
note per run (`note_unrecorded`).
"""

from __future__ import annotations

import hashlib
import re
import sys

import pyarrow.fs as pafs

from farm.errors import RunError
from farm.storage import RunDir

SUCCESS = "_SUCCESS"
_LINE = re.compile(r"([0-9a-f]{64}) (\d+) ([^/\s]+)")
_noted: set[str] = set()  # runs whose note was printed by this process


def success_text(config_hash: str, files: dict[str, bytes]) -> str:
    """The `_SUCCESS` of a shard made of `files` (name -> bytes) under config `config_hash`."""
    lines = [config_hash] + [f"{hashlib.sha256(data).hexdigest()} {len(data)} {name}" for name, data in files.items()]
    return "\n".join(lines) + "\n"


def parse_success(text: str) -> tuple[str, dict[str, tuple[str, int]] | None]:
    """(config hash, {name: (sha256, size)}) of a `_SUCCESS`; records None for one written before records
    (a single line). A record line that does not parse is kept as a record no file can match."""
    lines = text.strip().splitlines() or [""]
    if len(lines) == 1:
        return lines[0].strip(), None
    records = {}
    for line in lines[1:]:
        match = _LINE.fullmatch(line.strip())
        if match:
            records[match.group(3)] = (match.group(1), int(match.group(2)))
        else:
            records[line.strip()[:40] or "(empty line)"] = ("", -1)
    return lines[0].strip(), records


def read_records(run: RunDir, base: str) -> tuple[str, dict[str, tuple[str, int]] | None]:
    """`parse_success` of the `_SUCCESS` in folder `base` of the run (which must exist)."""
    try:
        return parse_success(run.read_text(f"{base}/{SUCCESS}"))
    except UnicodeDecodeError:
        return "", {"_SUCCESS": ("", -1)}


def _redo(run: RunDir) -> str:
    return (f"`shadowfarm verify {run.path()}` lists the damage; re-running the `shadowfarm train` command that made "
            "the run retrains those models and keeps the others")


def content_problems(run: RunDir, base: str, records: dict[str, tuple[str, int]], *, quick: bool = False) -> list[str]:
    """One line per file of folder `base` whose size (and, unless `quick`, sha256) differs from its record."""
    problems = []
    for name, (digest, size) in records.items():
        if size < 0:
            problems.append(f"{run.path(base)}/{SUCCESS}: unreadable record {name!r}")
        elif problem := _mismatch(run, f"{base}/{name}", digest, size, quick=quick, record=SUCCESS):
            problems.append(problem)
    return problems


def checked_bytes(run: RunDir, base: str, name: str, *, redo: str | None = None) -> bytes:
    """The bytes of file `name` of folder `base`, checked against its `_SUCCESS` record: RunError naming the file
    and what to run (`redo`; default: a model's, `train` again) when they differ. A folder without records (an
    older run) is read unchecked, with a note."""
    rel = f"{base}/{name}"
    data = run.read_bytes(rel)
    records = read_records(run, base)[1] if run.is_file(f"{base}/{SUCCESS}") else None
    if records is None:
        note_unrecorded(run)
        return data
    expected = records.get(name)
    if expected is None:
        raise RunError(f"{run.path(rel)}: not recorded in its {SUCCESS}; {redo or _redo(run)}")
    if len(data) != expected[1] or hashlib.sha256(data).hexdigest() != expected[0]:
        raise RunError(f"{run.path(rel)}: content differs from its {SUCCESS} record (sha256 and size; changed after "
                       f"it was written); {redo or _redo(run)}")
    return data


def write_with_success(run: RunDir, base: str, first_line: str, files: dict[str, bytes]) -> None:
    """Write `files` (name -> bytes) into folder `base`, each atomically, then its `_SUCCESS`: `first_line` (what
    the files are a function of) and their records. A writer killed midway leaves files that do not match the
    `_SUCCESS` before them: computed again, never reused."""
    for name, data in files.items():
        run.write_bytes(f"{base}/{name}", data)
    run.write_text(f"{base}/{SUCCESS}", success_text(first_line, files))


def folder_problems(run: RunDir, base: str) -> list[str]:
    """The content problems of output folder `base` against its `_SUCCESS` records; none (with the run's note)
    for a folder written before records."""
    records = read_records(run, base)[1] if run.is_file(f"{base}/{SUCCESS}") else None
    if records is None:
        note_unrecorded(run)
        return []
    return content_problems(run, base, records)


def record_of(rel: str) -> str:
    """`dir/.name.sha256`, the record beside cache file `dir/name`: hidden, so listings of parts do not see it."""
    folder, _, name = rel.rpartition("/")
    return f"{folder}/.{name}.sha256" if folder else f".{name}.sha256"


def write_recorded(run: RunDir, rel: str, data: bytes) -> None:
    """Write a cache file of the attack stage (requery/, boundary/, whitebox/) with its record beside it, the record
    first: a writer killed between the two leaves a file that does not match, which is computed again."""
    run.write_text(record_of(rel), f"{hashlib.sha256(data).hexdigest()} {len(data)}\n")
    run.write_bytes(rel, data)


def cached(run: RunDir, rel: str) -> bool:
    """True when the cache file `rel` exists and matches its record (one made before records: true, with the
    run's note); False sends it to be computed again (a file that does not match: with a one-line note)."""
    if not run.is_file(rel):
        return False
    problem = recorded_problem(run, rel)
    if problem is None:
        return True
    note(f"{problem}; computing it again")
    return False


def recorded_problem(run: RunDir, rel: str, *, quick: bool = False) -> str | None:
    """The problem of file `rel` against its record beside it (`record_of`), None when it matches (`quick`: its
    size) or when it has no record (an older output: read unchecked, with the run's note)."""
    if not run.is_file(record_of(rel)):
        if not run.is_file(rel):
            return None
        note_unrecorded(run)
        return None
    try:
        digest, _, size = run.read_text(record_of(rel)).strip().partition(" ")
    except UnicodeDecodeError:
        digest, size = "", ""
    if not size.isdigit():
        return f"{run.path(record_of(rel))}: unreadable record"
    return _mismatch(run, rel, digest, int(size), quick=quick, record=record_of(rel).rpartition("/")[2])


def _mismatch(run: RunDir, rel: str, digest: str, size: int, *, quick: bool, record: str) -> str | None:
    info = run.fs.get_file_info(run.path(rel))
    if info.size is None:
        return f"{run.path(rel)}: missing (recorded in {record})"
    if info.size != size:
        return f"{run.path(rel)}: {info.size} bytes, {record} records {size} (changed after it was written)"
    if not quick and hashlib.sha256(run.read_bytes(rel)).hexdigest() != digest:
        return f"{run.path(rel)}: sha256 differs from the one {record} records (changed after it was written)"
    return None


def read_recorded(run: RunDir, rel: str, *, redo: str) -> bytes:
    """The bytes of output `rel`, checked against its record beside it: RunError naming the file and `redo` (what
    to run) when they differ. One without a record (an older output) is read unchecked, with the run's note."""
    if problem := recorded_problem(run, rel):
        raise RunError(f"{problem}; {redo}")
    return run.read_bytes(rel)


def output_problems(run: RunDir, *, quick: bool = False,
                    skip: tuple[str, ...] = ("models/", "tune/_ray/")) -> list[str]:
    """One line per recorded output outside `skip` (the attack stage's caches and results: every file with a record
    beside it, every folder with a `_SUCCESS` of records) whose file differs from its record (`quick`: sizes)."""
    listing = run.fs.get_file_info(pafs.FileSelector(run.path(), recursive=True, allow_not_found=True))
    rels = sorted(info.path[len(run.path()) + 1:] for info in listing if info.type == pafs.FileType.File)
    problems = []
    for rel in rels:
        if rel.startswith(skip):
            continue
        folder, _, name = rel.rpartition("/")
        if name.startswith(".") and name.endswith(".sha256"):
            data = f"{folder}/{name[1:-len('.sha256')]}" if folder else name[1:-len(".sha256")]
            problems += [p for p in [recorded_problem(run, data, quick=quick)] if p]
        elif name == SUCCESS and folder:
            records = read_records(run, folder)[1]
            problems += content_problems(run, folder, records, quick=quick) if records is not None else []
    return problems


def note(line: str) -> None:
    """One line on stderr, prefixed as every note of shadowfarm."""
    print(f"shadowfarm: note: {line}", file=sys.stderr)


def note_unrecorded(run: RunDir) -> None:
    """Print, once per run and process, that the run (or some output of it) predates content records."""
    if run.path() not in _noted:
        _noted.add(run.path())
        note(f"{run.path()}: made before content hashes (files without a sha256 record: a one-line _SUCCESS, no "
             ".<name>.sha256 beside a cache part): those are checked by structure only; files written from now on "
             "(a model trained again, a cache computed again) have them")
