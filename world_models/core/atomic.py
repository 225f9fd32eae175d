"""Atomic file and folder writes: a temp file in the same folder, fsync, then rename.

A process killed at any moment leaves either the old file or the new one, never a torn
one. Temp names start with ``.`` and contain ``.tmp-`` so readers can skip and clean them.

A full disk (``ENOSPC``, or ``EDQUOT``) while writing is a one-line :class:`DiskFullError`
naming the file, the space left and what was kept (the previous version: the write is
atomic), instead of whatever the writer raised: torch's C++ writer says only
``[enforce fail at inline_container.cc:672] . unexpected pos ...``. Writers therefore get
Python file objects (torch.save and safetensors' bytes into them), whose errors carry the
errno.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from world_models.core.errors import DiskFullError

TMP_MARK = ".tmp-"
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it arose from, says the disk is full (or over quota).

    torch's C++ writer reports a short write without the errno (``unexpected pos``);
    given a Python file the OSError is in the chain, and without one a nearly full disk
    decides."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError) or isinstance(e, OSError) and e.errno in _FULL:
            return True
        e = e.__cause__ or e.__context__
    return "unexpected pos" in str(exc) and _free_bytes(Path.cwd()) < 64 * 2**20


def _free_bytes(path: Path) -> int:
    for folder in (path, *path.parents):  # the first that exists
        with contextlib.suppress(OSError):
            return shutil.disk_usage(folder).free
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def disk_full_error(path: str | os.PathLike, kept: str | None = None) -> DiskFullError:
    """The one-line error for a write of ``path`` that ran out of space; ``kept`` says what
    survived it (default: the previous ``path``, or that nothing was written)."""
    path = Path(path)
    if kept is None:
        kept = f"the previous {path.name} is kept" if path.exists() else "nothing was written"
    free = _size(_free_bytes(path.parent))
    return DiskFullError(
        f"no space left on device writing {path} ({free} free there); {kept}. Free some "
        f"space, then re-run the same command"
    )


@contextlib.contextmanager
def naming_disk_full(path: str | os.PathLike, kept: str | None = None) -> Iterator[None]:
    """Turn a full disk inside the ``with`` block into :func:`disk_full_error` for ``path``
    (a :class:`DiskFullError` raised within passes as it is)."""
    try:
        yield
    except DiskFullError:
        raise
    except BaseException as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, kept) from None
        raise


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on a clean exit, fsync and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        with naming_disk_full(path), open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp folder; on a clean exit it replaces ``path`` as a whole.

    The old folder is moved aside before the new one is renamed in, then deleted; if a
    crash falls between the two renames, :func:`recover_dir` finds the old one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    tmp.mkdir()
    try:
        with naming_disk_full(path):
            yield tmp
            for child in tmp.rglob("*"):  # nested folders too (a shipped model's parts)
                if child.is_file():
                    with open(child, "rb") as fh:
                        os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def recover_dir(path: str | os.PathLike) -> Path:
    """``path`` if it exists, else the newest moved-aside copy left by a crash, else ``path``."""
    path = Path(path)
    if path.exists():
        return path
    olds = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    return olds[-1] if olds else path


def clean_temp_files(folder: str | os.PathLike) -> int:
    """Delete temp files and folders left by killed writers; return how many were removed."""
    n = 0
    for p in Path(folder).glob(f".*{TMP_MARK}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n
