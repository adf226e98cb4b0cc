"""One writer per run: `train` and `train --new-run` hold the run's lock while they write; each writer of the
attack stage holds the lock of its area (`attack`, `tune`, `audit`, `report`, each study), so two of one kind on
one run refuse each other, while an attack, a tune and a study, which write apart, may run together (a cluster
runs them as concurrent jobs). An area writer also refuses while `train` holds the run (it would read a farm
being written); `--new-run` refuses while any area writer holds the run.

Local paths (and shared file systems with flock): an exclusive `filelock.FileLock` on `RUN/.writer.lock`.
The kernel drops it when its process dies, so a lock left by a killed writer is taken over by the next one,
which says so. Object stores (no locks): a lease object, `RUN/.writer.json` with an expiry, renewed by its
holder every LEASE_SECONDS / 3; an expired lease is taken over. On S3 the lease is written with conditional
writes, so of two writers that start together exactly one takes it; elsewhere (gs://, no boto3) pyarrow has no
conditional write, and two writers starting within the same instant on an expired lease may both proceed
(`farm.lease`).

`RUN/.writer.json` names the holder (host, pid, start time, command) while the lock is held; a second writer
refuses at once with one line naming it. The lock is reentrant within a process (a job that trains, then
attacks the same run).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from filelock import FileLock, Timeout

from farm.errors import RunError
from farm.lease import LeaseObject
from farm.storage import RunDir

LOCK = ".writer.lock"
HOLDER = ".writer.json"
AREAS = ("attack", "tune", "audit", "report", "calibration", "worst_case", "ood", "defenses")
LEASE_SECONDS = 120.0

_held: dict[str, int] = {}  # run path -> nesting depth of this process's holds (driver-side only)


def holder_line(holder: dict | None) -> str:
    """`host H, pid P, since T (command)` of a holder record; `a writer that is starting` when there is none."""
    if not holder:
        return "a writer that is starting"
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(holder.get("started", 0)))
    return f"host {holder.get('host')}, pid {holder.get('pid')}, since {started} ({holder.get('command')})"


def _files(area: str | None) -> tuple[str, str]:
    """(lock file, holder record) of the run (area None) or of one area of it."""
    return (LOCK, HOLDER) if area is None else (f".writer-{area}.lock", f".writer-{area}.json")


def _read_holder(run: RunDir, holder_file: str = HOLDER) -> dict | None:
    try:
        holder = run.read_json(holder_file) if run.is_file(holder_file) else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # half-written by a holder that is starting: no name to give
    return holder if isinstance(holder, dict) else None


def _record(command: str, token: str) -> dict:
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": now, "command": command,
            "token": token, "expires": now + LEASE_SECONDS}


def _refuse(run: RunDir, holder: dict | None) -> RunError:
    return RunError(f"{run.path()}: another writer holds the run: {holder_line(holder)}; wait for it to finish "
                    "(one writer per run), or write to another --out")


def _note_takeover(run: RunDir, previous: dict | None, why: str) -> None:
    if previous:
        print(f"shadowfarm: {run.path()}: took over the lock of {holder_line(previous)}: {why}", file=sys.stderr)


def _busy(run: RunDir, area: str | None) -> dict | None:
    """The holder of `area`'s lock (None: the run's) when another process holds it now; None when it is free."""
    if (run.path(), area) in _held:
        return None
    lock_file, holder_file = _files(area)
    if not run.local:
        holder = _read_holder(run, holder_file)
        return holder if holder and holder.get("expires", 0) > time.time() else None
    if not run.is_file(lock_file):
        return None
    lock = FileLock(run.path(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return _read_holder(run, holder_file) or {}
    lock.release()
    return None


@contextmanager
def run_lock(run: RunDir | str, *, command: str, create: bool = False, area: str | None = None) -> Iterator[None]:
    """Hold the run's writer lock (area None: train, --new-run) or the lock of one `area` of it (an attack-stage
    writer) for the block; RunError naming the holder when another writer has it, or, for an area, when `train`
    holds the run.

    `create`: make the run directory if it does not exist (train); otherwise a run that does not exist is
    not locked (there is nothing to protect, and the job reading it says it is missing)."""
    run = RunDir(run) if isinstance(run, str) else run
    key = (run.path(), area)
    if not (create or run.exists()):
        yield
        return
    if area is not None and (holder := _busy(run, None)) is not None:
        raise _refuse(run, holder)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    hold = _local_hold if run.local else _lease_hold
    with hold(run, command, area):
        _held[key] = 1
        try:
            yield
        finally:
            _held.pop(key, None)


def refuse_if_areas_held(run: RunDir) -> None:
    """RunError naming the holder when a writer of the attack stage holds an area of the run (`--new-run` would
    move the run it writes into)."""
    for area in AREAS:
        if (holder := _busy(run, area)) is not None:
            raise _refuse(run, holder)


@contextmanager
def _local_hold(run: RunDir, command: str, area: str | None) -> Iterator[None]:
    run.makedirs()
    lock_file, holder_file = _files(area)
    lock = FileLock(run.path(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise _refuse(run, _read_holder(run, holder_file)) from None
    try:
        # a holder record under a lock nobody held: its writer died without releasing (the kernel released it)
        _note_takeover(run, _read_holder(run, holder_file), "that process is no longer running")
        run.write_json(holder_file, _record(command, uuid.uuid4().hex))
        try:
            yield
        finally:
            run.delete(holder_file)
    finally:
        lock.release()


@contextmanager
def _lease_hold(run: RunDir, command: str, area: str | None) -> Iterator[None]:
    lease = LeaseObject(run, _files(area)[1])
    previous, version = lease.read()
    if previous and previous.get("expires", 0) > time.time():
        raise _refuse(run, previous)
    record = _record(command, uuid.uuid4().hex)
    version = lease.put(record, version)  # conditional where the store allows (farm.lease): one writer wins
    if version is None:
        raise _refuse(run, lease.read()[0])
    _note_takeover(run, previous, "its lease expired")
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(lease, record, version, stop), daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        if (lease.read()[0] or {}).get("token") == record["token"]:
            lease.delete()


def _renew(lease: LeaseObject, record: dict, version: str, stop: threading.Event) -> None:
    """Extend the lease every LEASE_SECONDS / 3 until `stop`, keeping its start time; stop renewing, saying so, when
    another writer has taken it (it had expired: this process was cut off from the store for LEASE_SECONDS)."""
    where = lease.run.path(lease.rel)
    while not stop.wait(LEASE_SECONDS / 3):
        record = {**record, "expires": time.time() + LEASE_SECONDS}
        try:
            renewed = lease.put(record, version)
        except OSError as exc:  # a store that is briefly unreachable: the next renewal retries
            print(f"shadowfarm: {where}: lease not renewed ({exc})", file=sys.stderr)
            continue
        if renewed is None:
            print(f"shadowfarm: {where}: lease lost to {holder_line(lease.read()[0])}", file=sys.stderr)
            return
        version = renewed
