"""Advisory locks on run and sweep directories: one writer per directory at a time.

A writer holds an exclusive `flock` on DIR/.spherelab.lock while it writes in DIR; the file names
the holder (command, PID, host, start time) so that a refused writer can say who holds it. The
kernel drops a lock when its process ends, however it ends (kill -9 included), so the lock file
a killed process leaves behind is stale by construction and the next writer takes it over.

Locks are reentrant within a process (a sweep holds its directory while it writes its report),
and a sweep's lock covers only the sweep directory: each run directory is locked by whichever
process trains it, so an executor's worker processes are never blocked by their own sweep.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger("spherelab")

LOCK_FILE = ".spherelab.lock"
_held: dict[Path, int] = {}  # directories this process holds -> nesting depth
_ATTEMPTS = 20  # a releasing holder may unlink the file between our open and our flock


class DirectoryLockedError(ValueError):
    """Another live process writes in the directory."""


@contextmanager
def hold(directory: str | Path, command: str, *, create: bool = True) -> Iterator[None]:
    """Hold `directory`'s lock for the block, or raise DirectoryLockedError naming the holder.

    `create`: make the directory if it is missing (directories this call made are removed
    again if they are still empty on leaving, so a failed start leaves nothing behind);
    without it a missing directory is not locked (the command then reports it missing)."""
    path = Path(directory).absolute()
    key = path.resolve()
    if key in _held:  # reentrant: the outer block holds it
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    made: list[Path] = []
    if not path.is_dir():
        if not create:
            yield
            return
        made = _make_dirs(path)
        key = path.resolve()
    try:
        fd = _acquire(path / LOCK_FILE, command)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            _release(path / LOCK_FILE, fd)
    finally:
        _remove_if_empty(made)


@contextmanager
def hold_all(directories: Sequence[str | Path], command: str) -> Iterator[None]:
    """Hold the locks of several directories (all or none) for the block."""
    with ExitStack() as stack:
        for directory in directories:
            stack.enter_context(hold(directory, command))
        yield


def _make_dirs(path: Path) -> list[Path]:
    """mkdir -p; returns the directories it made, deepest first."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_if_empty(made: list[Path]) -> None:
    for directory in made:  # deepest first
        try:
            directory.rmdir()
        except OSError:  # not empty (or gone): keep it and everything above it
            return


def _acquire(lock_path: Path, command: str) -> int | None:
    """The open, flock-ed lock file (our holder line written into it); None where the file
    system has no locks (then nothing is locked, with a warning)."""
    for _ in range(_ATTEMPTS):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(lock_path)
            os.close(fd)
            raise DirectoryLockedError(_refusal(lock_path.parent, holder)) from None
        except OSError as err:  # e.g. ENOLCK: a network file system without locks
            os.close(fd)
            log.warning("cannot lock %s (%s); writing without a lock", lock_path.parent, err)
            return None
        if _same_file(lock_path, fd):
            break
        os.close(fd)  # the holder unlinked it as we opened it: lock the new file instead
    else:
        raise DirectoryLockedError(_refusal(lock_path.parent, _read_holder(lock_path)))
    stale = _read_holder(lock_path)
    if stale:
        log.info(
            "taking over the stale lock of %s (PID %s on %s), which has ended",
            lock_path.parent,
            stale.get("pid"),
            stale.get("host"),
        )
    holder = {
        "command": command,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(holder) + "\n").encode())
    return fd


def _release(lock_path: Path, fd: int | None) -> None:
    if fd is None:
        return
    lock_path.unlink(missing_ok=True)  # while still locked, so no one locks the old file
    os.close(fd)


def _same_file(path: Path, fd: int) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _read_holder(lock_path: Path) -> dict[str, Any]:
    try:
        data = json.loads(lock_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # gone, or being written this instant
        return {}
    return data if isinstance(data, dict) else {}


def _refusal(directory: Path, holder: dict[str, Any]) -> str:
    who = (
        f"`spherelab {holder.get('command', '?')}` (PID {holder.get('pid', '?')} on host "
        f"{holder.get('host', '?')}, since {holder.get('since', '?')})"
        if holder
        else "another process"
    )
    return (
        f"{directory} is in use by {who}; wait for it to finish or stop it, or choose another --out"
    )
