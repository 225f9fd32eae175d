"""Output folders: one check that a folder can be written, and one writer per folder.

:func:`check_output_dir` creates a folder or says, in one line, which path cannot be a
folder and why (it lies under a regular file, its parent cannot be created, it is read
only), instead of a raw ``FileNotFoundError`` from deep inside a command.

:func:`lock_folder` holds an exclusive, non-blocking ``fcntl.flock`` on ``FOLDER/.lock``
for as long as its ``with`` block runs: a second ``collect`` into the same dataset (or a
second trainer on the same run folder) fails at once with :class:`FolderBusyError`, naming
the pid the holder wrote into the lock file, instead of interleaving its files with the
first one's. The lock goes with the process: a killed holder leaves no stale lock (the
kernel drops it), so the file itself can stay; it is hidden, and no listing (episodes,
series, checkpoints) looks at it. Within one process the lock is re-entrant, so a
pipeline that holds a folder may call a stage that locks it again.

Why not the ``filelock`` package (installed with torch): it would lock the same way
(``flock`` on a file), but it differs in three ways that matter here, and which of them a
machine gets depends on the filelock that torch happened to bring (torch pins no version):

* filelock 3.x opens the lock file with ``O_TRUNC`` *before* trying the lock, so every
  refused contender erases the pid the holder wrote there, and the next one's error could
  no longer say who holds the folder (``test_a_refused_contender_keeps_the_holders_pid``);
* on a file system without ``flock`` (some network file systems) filelock 4.x falls back
  to a marker file, which a killed holder leaves behind and which only a process on the
  holder's own host can judge stale; 3.x raises ``NotImplementedError`` there instead.
  This module warns and goes on unlocked, as before;
* its re-entrancy is per lock object (or a per-path singleton in newer versions), this
  module's per real path, whoever calls.

The whole lock is the ``flock`` call, the pid note and a re-entrancy count (below), so
there is little for a dependency to take over.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

from world_models.core.errors import ConfigError, FolderBusyError

LOCK_FILE = ".lock"
"""Name of the lock file inside a locked folder."""

_held: dict[str, list] = {}  # real path -> [fd, depth]: folders this process holds
_held_guard = threading.Lock()


def check_output_dir(
    path: str | os.PathLike, what: str = "output folder", *, create: bool = True
) -> Path:
    """Create folder ``path`` (and its parents) or raise a one-line :class:`ConfigError`
    naming the path and the reason; return it as a :class:`Path`. With ``create=False``
    only prove that it could be: the folders this call made are removed again."""
    path = Path(path)
    missing: list[Path] = []
    existing = None
    for parent in (path, *path.parents):  # the first existing ancestor must be a folder
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                where = "is" if parent == path else f"lies under {parent}, which is"
                raise ConfigError(f"{what} {path}: cannot be a folder: it {where} a file")
            existing = parent
            break
        missing.append(parent)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if exc.errno == errno.ENOENT and existing is not None:  # e.g. under /proc
            reason = f"{existing} does not take new folders ({reason})"
        elif exc.filename not in (None, str(path)):
            reason += f" ({exc.filename})"
        raise ConfigError(f"{what} {path}: cannot create it: {reason}") from None
    writable = os.access(path, os.W_OK | os.X_OK)
    if not create:
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
    if not writable:
        raise ConfigError(f"{what} {path}: cannot write to it (permission denied)")
    return path


def _holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text().split()
    except OSError:
        return "another process"
    if not text:
        return "another process"
    pid = text[0]
    host = text[1] if len(text) > 1 and text[1] != socket.gethostname() else None
    return f"pid {pid}" + (f" on {host}" if host else "")


@contextlib.contextmanager
def lock_folder(path: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold folder ``path`` (created with :func:`check_output_dir`) exclusively for the
    ``with`` block; a folder another process holds is a :class:`FolderBusyError`.

    ``what`` names the folder in errors ("dataset folder", "run folder" ...). Where file
    locks are unsupported (no ``fcntl``; some network file systems) it warns and goes on.
    """
    path = check_output_dir(path, what)
    try:
        import fcntl  # late: POSIX only
    except ImportError:  # not POSIX: no locking, as before
        yield path
        return
    key = os.path.realpath(path)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield path
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return
    lock_path = path / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot create {LOCK_FILE} ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise FolderBusyError(
                f"{what} {path} is in use by another world-models process "
                f"({_holder(lock_path)}, see {lock_path}); wait for it to finish or use "
                f"another folder"
            ) from None
        warnings.warn(
            f"{what} {path}: cannot lock it ({exc.strerror}); make sure no other run writes "
            f"into it",
            stacklevel=3,
        )
        yield path
        return
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    except OSError:
        pass  # the lock holds without the note
    with _held_guard:
        _held[key] = [fd, 1]
    try:
        yield path
    finally:
        with _held_guard:
            del _held[key]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no stale pid once released; the file stays (see above)
        os.close(fd)  # closing the descriptor releases the lock
