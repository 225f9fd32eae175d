"""Worker processes, and the processes they start, end with the process that started them.

Why: the env workers of both pools (:mod:`world_models.envs.pool` for rollouts,
:mod:`world_models.data.collect` for collection) are separate processes, and VizDoom's
``DoomGame`` starts one more, its game, which ignores SIGTERM. A worker killed without
closing its env (SIGKILL, the OOM killer, a crash, SIGTERM's default action) left its game
running for ever, and a main process killed by SIGKILL left its workers, which then left
their games. :func:`bind_to_parent`, called first thing in a worker, closes both gaps on
Linux (elsewhere it does nothing, and the pools' own polling of the parent remains):

* the kernel SIGKILLs the worker when its parent ends, whatever ends it
  (``prctl(PR_SET_PDEATHSIG)``; it fires when the *thread* that started the worker ends,
  so start workers from a thread that outlives them, as the pools do from the caller's);
* :func:`kill_group_on_exit`: the worker leads a process group of its own, which the
  processes it starts inherit (VizDoom's game does: it never changes its group), and a
  watchdog ``sh`` in that group blocks reading a pipe whose write end only the worker
  holds. However the worker ends, the kernel closes that pipe, ``read`` returns and the
  watchdog SIGKILLs the group: whatever the worker started that is still alive. A group
  stays in use while a member lives, so its number cannot name another group by then.

The group of its own also keeps the terminal's Ctrl-C and ``timeout``'s group-wide SIGTERM
away from the workers: the main process alone gets them and closes its pools in order
(envs closed, games ended cleanly, their temporary folders removed); see the CLI's
:class:`~world_models.core.errors.Terminated`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1
_WATCHDOG: list[Any] = []  # [write end of the pipe, Popen]: held until this process ends
_SCRIPT = "trap '' HUP INT TERM QUIT; read _; kill -9 -\"$1\""


def die_with_parent(parent: int | None = None, sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent ends (Linux only).

    ``parent``: the pid of the process that started this one, to close the race where it
    died before the call (then this process exits at once). Return whether it is armed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent is not None and os.getppid() != parent and not _alive(parent):
        os._exit(128 + int(sig))  # the parent is gone already: the signal would never come
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group_on_exit() -> bool:
    """Lead a new process group and start a watchdog that SIGKILLs it when this process
    ends (see the module docstring). Return whether the watchdog runs; it does not where
    there is no ``/bin/sh`` or this process cannot lead a group of its own (a session
    leader), and then nothing is killed: never a group this process does not lead."""
    if _WATCHDOG:
        return True
    if not hasattr(os, "setpgid") or not os.path.exists("/bin/sh"):
        return False
    pid = os.getpid()
    if os.getpgid(0) != pid:
        try:
            os.setpgid(0, 0)
        except OSError:
            return False
    if os.getpgid(0) != pid:
        return False
    read, write = os.pipe()  # not inheritable: the processes this one starts lack both ends
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", _SCRIPT, "world-models-watchdog", str(pid)],
            stdin=read,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
    except OSError:
        os.close(write)
        return False
    finally:
        os.close(read)
    _WATCHDOG.extend([write, proc])
    return True


def start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker now, if it is not running, with SIGHUP
    blocked. It ignores SIGINT and SIGTERM, to outlive them and clean up after this process,
    but a SIGHUP to the process group (a closed terminal, ``kill -HUP -PGID``) killed it,
    and this process then printed a relaunch warning and its tracebacks while exiting.
    Call it before starting workers with spawn (the pools do)."""
    if sys.platform == "win32":
        return
    from multiprocessing import resource_tracker

    block = hasattr(signal, "pthread_sigmask") and hasattr(signal, "SIGHUP")
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP}) if block else None
    try:
        resource_tracker.ensure_running()  # the mask is inherited; it never unblocks SIGHUP
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def bind_to_parent(parent: int | None = None) -> None:
    """For a worker process, first thing: it dies with its parent (:func:`die_with_parent`)
    and what it starts dies with it (:func:`kill_group_on_exit`)."""
    die_with_parent(parent)
    kill_group_on_exit()
