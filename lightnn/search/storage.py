"""Where a study's trials live: Optuna storages chosen by one string.

- ``None`` / ``"memory"``: in memory, for a one-off study in one process.
- a file path (``runs/s/study.journal``): Optuna's ``JournalStorage`` over a ``JournalFileBackend``, the default
  of ``lightnn search``. Parallel workers on one host append to it; a killed search resumes from it with the same
  command. Two things Optuna's own file locks get wrong after a ``SIGKILL`` are handled here:
  the lock is an ``fcntl.flock`` (the kernel drops it when its holder dies, so a killed worker never leaves a
  stale lock for the next one to sleep on: optuna/optuna#5921), and a record cut short mid-write is dropped
  when the journal is opened (it was never acknowledged; left in place it makes the file unreadable once more
  records follow: optuna/optuna#5138).
- ``postgresql://user:pass@host:port/db``: Optuna's ``RDBStorage`` (SQLAlchemy with psycopg 3) for workers on
  several machines, with heartbeats: a trial whose worker stops beating for ``grace`` seconds is marked failed
  and, through Optuna's ``RetryFailedTrialCallback``, queued again with the same parameters. The environment
  variables ``LIGHTNN_SEARCH_HEARTBEAT_S`` and ``LIGHTNN_SEARCH_GRACE_S`` override the defaults (10 s and 30 s)
  where the caller does not pass them, which is how ``run_study`` (and its worker processes) get them.

Optuna does the storing; this module picks the storage, makes its failures one-line errors naming the storage,
and recovers a file journal's orphans (trials left RUNNING by a process that died on this host).
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
from pathlib import Path
from typing import Any

from .objectives import SearchError

__all__ = ["open_storage", "storage_kind", "redact", "FlockLock", "repair_journal", "worker_id", "HEARTBEAT_S",
           "GRACE_S"]

HEARTBEAT_S = 10  # RDB heartbeat interval of a running trial
GRACE_S = 30  # a trial whose heartbeat is older than this is failed and retried


def storage_kind(url: str | os.PathLike | None) -> str:
    """``"memory"``, ``"journal"`` or ``"postgresql"`` (anything else with ``://`` is refused)."""
    if url is None or str(url) == "memory":
        return "memory"
    s = str(url)
    if s.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        return "postgresql"
    if "://" in s:
        raise SearchError(f"storage {redact(s)!r}: give a file path (an Optuna journal), 'memory' or a "
                          "postgresql:// URL (SQLite is not offered: it locks under parallel workers, optuna#820)")
    return "journal"


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for errors and reports)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", str(url))


def worker_id() -> str:
    """``host:pid`` of this process (recorded on each trial; used to find orphans)."""
    return f"{socket.gethostname()}:{os.getpid()}"


try:
    from optuna.storages.journal import BaseJournalFileLock as _LockBase
except ImportError:  # optuna is an optional extra; open_storage says how to install it
    _LockBase = object  # type: ignore[misc,assignment]


class FlockLock(_LockBase):  # type: ignore[misc,valid-type]
    """A journal lock held with ``fcntl.flock`` on ``<journal>.flock``: released by the kernel when the holding
    process exits, however it exits. Local file systems (one host), which is what a journal file is for."""

    def __init__(self, journal: str | os.PathLike) -> None:
        self.path = str(journal) + ".flock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def repair_journal(path: str | os.PathLike) -> int:
    """Drop a last record cut short by a killed writer (no final newline); returns the bytes dropped. Call it
    holding the journal's lock."""
    p = Path(path)
    size = p.stat().st_size if p.exists() else 0
    if not size:
        return 0
    with open(p, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        block, end = 1 << 16, size
        while end > 0:  # find the last newline
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            end = start
        else:
            keep = 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


def _optuna():
    try:
        import optuna
    except ImportError:
        raise SearchError("lightnn search needs Optuna: pip install 'lightnn[search]' (or pip install optuna)") \
            from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _journal(path: str) -> Any:
    optuna = _optuna()
    from optuna.storages.journal import JournalFileBackend

    p = Path(path)
    if p.is_dir():
        raise SearchError(f"storage {path!r} is a folder; give the journal file's path (e.g. {path}/study.journal)")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        lock = FlockLock(p)
        lock.acquire()
        try:
            repair_journal(p)
        finally:
            lock.release()
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(p), lock_obj=lock))
    except OSError as e:
        raise SearchError(f"storage {path!r} cannot be opened: {e.strerror or e}") from None
    except ValueError as e:  # Optuna could not replay the journal
        raise SearchError(f"storage {path!r} is not a readable Optuna journal: {e}") from None
    return storage


def _postgres(url: str, *, heartbeat: int, grace: int, retries: int) -> Any:
    optuna = _optuna()
    shown = redact(url)
    try:
        import psycopg  # noqa: F401  (the driver SQLAlchemy needs)
    except ImportError:
        raise SearchError(f"storage {shown!r}: PostgreSQL needs psycopg: pip install 'psycopg[binary]'") from None
    sa_url = re.sub(r"^(postgresql|postgres)(\+psycopg)?://", "postgresql+psycopg://", url)
    import warnings

    from optuna.storages import RDBStorage

    try:  # Optuna >= 4.9 names the retry callback for stale heartbeats; before, it was the failed-trial callback
        from optuna.storages import RetryHeartbeatStaleTrialCallback as _Retry
        retry_kw = "heartbeat_stale_trial_callback"
    except ImportError:  # pragma: no cover - older Optuna
        from optuna.storages import RetryFailedTrialCallback as _Retry
        retry_kw = "failed_trial_callback"
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna; they are what we rely on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(sa_url, engine_kwargs={"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}},
                              heartbeat_interval=heartbeat, grace_period=grace,
                              **{retry_kw: _Retry(max_retry=retries)})
    except Exception as e:  # SQLAlchemy's OperationalError and kin: one line, the storage named
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SearchError(f"storage {shown!r} cannot be reached: {reason}") from None


def _env_seconds(name: str, default: int) -> int:
    v = os.environ.get(name, "").strip()
    if not v:
        return default
    if not v.isdigit() or int(v) < 1:
        raise SearchError(f"{name}={v!r}: give a whole number of seconds >= 1")
    return int(v)


def open_storage(url: str | os.PathLike | None, *, heartbeat: int | None = None, grace: int | None = None,
                 retries: int = 2) -> Any:
    """The Optuna storage for ``url`` (see the module docstring); ``None`` for in-memory (Optuna's default).
    ``heartbeat`` / ``grace`` / ``retries`` apply to PostgreSQL (how often a running trial beats, when a silent
    one is failed, how often its parameters are retried); ``heartbeat`` and ``grace`` default to
    ``$LIGHTNN_SEARCH_HEARTBEAT_S`` / ``$LIGHTNN_SEARCH_GRACE_S``, else ``HEARTBEAT_S`` / ``GRACE_S``."""
    kind = storage_kind(url)
    if kind == "memory":
        _optuna()
        return None
    if kind == "journal":
        return _journal(str(url))
    if heartbeat is None:
        heartbeat = _env_seconds("LIGHTNN_SEARCH_HEARTBEAT_S", HEARTBEAT_S)
    if grace is None:
        grace = _env_seconds("LIGHTNN_SEARCH_GRACE_S", GRACE_S)
    return _postgres(str(url), heartbeat=heartbeat, grace=grace, retries=retries)
