"""One writer per run folder: an exclusive lock, and clean-up of what a killed writer left half-written.

:func:`lock_folder` takes an ``fcntl.flock`` on ``FOLDER/.lightnn.lock``, a small JSON file naming the holder (pid,
host, start time, command). The kernel drops a flock when its process dies, so a lock left by a killed run is simply
taken again; a lock still held although the pid it names is dead on this host (a forked child of the dead process
inherited the descriptor) is taken over by replacing the file. A second writer gets a :class:`LightnnError` naming
the holder instead of mixing its files into the first one's.

:func:`remove_partial_writes` deletes the temporary files of :mod:`lightnn.utils.io`'s atomic writes
(``.NAME.XXXX.tmp``) that a kill between their creation and their rename leaves behind; call it while holding the
lock, so no live writer's temporary file is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from ..errors import LightnnError, OutputError

__all__ = ["LOCK_NAME", "lock_folder", "remove_partial_writes", "lock_holder"]

LOCK_NAME = ".lightnn.lock"


def lock_holder(folder: str | os.PathLike) -> dict | None:
    """What the lock file of ``folder`` says about its holder (None when there is none or it is unreadable)."""
    try:
        info = json.loads((Path(folder) / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _describe(info: dict | None) -> str:
    if not info:
        return "another process (its lock file names no holder)"
    cmd = f", running `{info['command']}`" if info.get("command") else ""
    return f"pid {info.get('pid')} on {info.get('host')} (since {info.get('started')}{cmd})"


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding the flock on the file now at ``path``, or None when another holder has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:  # the holder may have removed the file between our open and our flock: lock the current one instead
        same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return _try_lock(path)
    return fd


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike, what: str = "run folder") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the ``with`` block; raise
    :class:`LightnnError` naming the holder when another live process has it. ``what`` names the folder's role in
    the message."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _try_lock(path)
        if fd is None:
            info = lock_holder(folder)
            stale = bool(info) and info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) \
                and not _pid_alive(info["pid"])
            if stale:  # its holder is dead; whoever inherited the descriptor keeps only the replaced file
                path.unlink(missing_ok=True)
                fd = _try_lock(path)
            if fd is None:
                raise LightnnError(f"{what} {str(folder)!r} is in use by {_describe(lock_holder(folder) or info)}; "
                                   f"wait for it to finish, or write to another --output")
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode())
    except OSError as e:
        raise OutputError(path, e) from None
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):  # unlink while still holding it; a waiter re-checks the inode
            path.unlink()
        os.close(fd)


def remove_partial_writes(folder: str | os.PathLike) -> list[Path]:
    """Delete the atomic writers' leftover temporary files (``.NAME.XXXX.tmp``) in ``folder``; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = []
    for p in sorted(folder.glob(".*.tmp")):
        if p.is_file():
            try:
                p.unlink()
            except OSError as e:
                raise OutputError(p, e) from None
            gone.append(p)
    return gone
