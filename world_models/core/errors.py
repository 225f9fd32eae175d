"""Errors the command line turns into one clear line and a non-zero exit."""

from __future__ import annotations

import importlib


class WorldModelsError(Exception):
    """Base class of errors caused by the user's input or environment, not by a bug."""


class ConfigError(WorldModelsError, ValueError):
    """A config is invalid, or does not match the weights or data it is used with."""


class CheckpointError(WorldModelsError):
    """A checkpoint folder is missing, corrupt, or from another model or config."""


class DataError(WorldModelsError):
    """A data file is missing, truncated, corrupt, or has the wrong keys, shapes or dtypes."""


class FolderBusyError(WorldModelsError):
    """Another process holds the folder a command would write (a run or a collection)."""


class MissingDependencyError(WorldModelsError, ImportError):
    """An optional dependency is needed for this feature but not installed."""


class DiskFullError(WorldModelsError, OSError):
    """No space left on the device (or the disk quota is spent) while writing a file; the
    write was atomic, so the file's previous version is kept."""


class TrainingDivergedError(WorldModelsError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


def require(module: str, extra: str, feature: str):
    """Import optional ``module`` or raise a :class:`MissingDependencyError` naming the extra."""

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{feature} needs the optional package '{module}': "
            f"pip install 'world_models[{extra}]'  ({exc})"
        ) from None


class WorkerDiedError(WorldModelsError):
    """A worker process (collection, or an env of a rollout pool) died or stopped answering.

    Two pools raise it, for two shapes of work: collection sends whole episodes to a
    ``ProcessPoolExecutor`` (each worker runs its own policy), rollouts step envs in lock
    step over pipes while one batched policy runs in the main process (envs/pool.py)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (``kill``, ``timeout``, a closed terminal), raised in the main
    thread by the command line's handler: a KeyboardInterrupt, so the process stops as on
    Ctrl-C, through every ``with`` and ``finally`` (pools closed, their workers closing
    their envs and VizDoom's games), and nothing that catches ``Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        import signal  # late: most of this module's users never need it

        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"
