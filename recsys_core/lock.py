"""One writer at a time per warehouse: the lock every writing job holds for its whole run.

Two jobs writing to one warehouse at once (a scheduled run and a backfill, or a job run
by hand during a DAG run) can delete each other's scratch and staging directories, so
every job that writes to a warehouse first takes its lock and keeps it until it exits.

The lock is ``flock(LOCK_EX)`` on ``<warehouse>/_lock/warehouse.lock`` (``_``-prefixed:
table readers skip it). The kernel drops it when its holder exits or is killed, so a
crash never leaves a stale lock to clear by hand; the file itself is never deleted
(deleting a locked file would let a second writer lock a new one). Its content names
the holder (job, ds, pid, host, since) for the message a second writer gets. On Linux,
``flock`` on NFS is carried by the server's locks, so workers on several machines that
mount one warehouse exclude each other. A warehouse given as a URI (``s3a://``,
``hdfs://``) has no file to lock: its lock file lives in ``$RECSYS_LOCK_DIR`` (default
a directory in the system temp dir, which spans only this machine: point it at a shared
mount when writers run on several machines).

A second writer fails at once with ``WarehouseBusy`` naming the holder, or waits up to
``$RECSYS_LOCK_WAIT`` seconds (default 0) for it. Child processes of a holder (the Spark
driver that ``spark-submit`` starts for a DAG task that holds the lock) inherit
``RECSYS_WAREHOUSE_LOCK`` and go on under their parent's lock instead of waiting for it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from recsys_core.errors import ConfigError, WarehouseBusy
from recsys_core.paths import normalize_root

log = logging.getLogger(__name__)

ENV_HELD = "RECSYS_WAREHOUSE_LOCK"  # "<lock path>\t<token>" of a lock an ancestor process holds
ENV_WAIT = "RECSYS_LOCK_WAIT"  # seconds a second writer waits for the lock (default 0)
ENV_DIR = "RECSYS_LOCK_DIR"  # where URI warehouses keep their lock file
LOCK_DIR = "_lock"
LOCK_FILE = "warehouse.lock"
POLL_SECONDS = 1.0
REPORT_SECONDS = 60.0


def lock_path(warehouse: str) -> str:
    """The local file whose ``flock`` guards ``warehouse``."""
    root = normalize_root(str(warehouse))
    if root.startswith("file://"):
        root = root[len("file://") :]
    elif root.startswith("file:"):
        root = root[len("file:") :]
    if "://" not in root:
        return os.path.join(root, LOCK_DIR, LOCK_FILE)
    directory = os.environ.get(ENV_DIR) or os.path.join(tempfile.gettempdir(), "recsys-locks")
    digest = hashlib.sha256(root.encode()).hexdigest()[:16]
    return os.path.join(directory, f"{digest}.lock")


def wait_seconds_from_env() -> float:
    text = os.environ.get(ENV_WAIT, "").strip()
    if not text:
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigError(f"${ENV_WAIT} must be a number of seconds, got {text!r}") from None
    if not seconds >= 0:
        raise ConfigError(f"${ENV_WAIT} must be >= 0 seconds, got {text!r}")
    return seconds


def _read_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 65536)
        return json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError):
        return {}


def describe(holder: dict) -> str:
    if not holder:
        return "another job (it has not written its name yet)"
    what = f"job {holder.get('job', '?')}" + (f" for ds={holder['ds']}" if holder.get("ds") else "")
    return f"{what} (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')})"


def _held_by_ancestor(path: str, holder: dict) -> bool:
    held = os.environ.get(ENV_HELD, "")
    held_path, _, token = held.partition("\t")
    return bool(token) and held_path == path and holder.get("token") == token


@contextmanager
def warehouse_lock(warehouse: str, job: str, ds: str | None = None, wait: float | None = None) -> Iterator[dict]:
    """Hold ``warehouse``'s writer lock for the ``with`` block; yields the holder record.

    Raises ``WarehouseBusy`` naming the holder when another process holds it for longer
    than ``wait`` seconds (default ``$RECSYS_LOCK_WAIT``, else 0).
    """
    wait = wait_seconds_from_env() if wait is None else wait
    path = lock_path(warehouse)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        deadline = time.monotonic() + wait
        next_report = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(fd)
                if _held_by_ancestor(path, holder):
                    log.info("warehouse lock %s is held by a parent process (%s): going on under it",
                             path, describe(holder))  # fmt: skip
                    yield holder
                    return
                now = time.monotonic()
                if now >= deadline:
                    raise WarehouseBusy(
                        f"warehouse {warehouse} is busy: {describe(holder)} holds its lock {path}. "
                        f"Runs on one warehouse never overlap: wait for that job to end and re-run {job}"
                        + ("" if wait else f" (or set {ENV_WAIT}=SECONDS to wait for it)")
                    ) from None
                if now >= next_report:
                    log.info("waiting up to %.0fs for the warehouse lock %s, held by %s",
                             deadline - now, path, describe(holder))  # fmt: skip
                    next_report = now + REPORT_SECONDS
                time.sleep(min(POLL_SECONDS, max(deadline - now, 0.01)))
        holder = {
            "job": job,
            "ds": ds,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "token": uuid.uuid4().hex,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
        previous = os.environ.get(ENV_HELD)
        os.environ[ENV_HELD] = f"{path}\t{holder['token']}"
        log.info("holding the warehouse lock %s (%s)", path, describe(holder))
        try:
            yield holder
        finally:
            if previous is None:
                os.environ.pop(ENV_HELD, None)
            else:
                os.environ[ENV_HELD] = previous
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
