"""Settings shared by the commands that dream or roll out real envs; torch-free (the CLI
reads them for ``--help``). Each is one dataclass, nested (flags unprefixed) in the
configs of ``train-controller``, ``evaluate`` and ``fidelity``, so a dream is set up the
same way everywhere (and a shipped model's ``settings.json`` names the same fields)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from world_models.core.config import check_finite
from world_models.core.errors import ConfigError


@dataclass(frozen=True)
class DreamSettings:
    """How M's dream runs (:class:`~world_models.envs.dream.BatchedDream`)."""

    tau: float = 1.15
    """Dream temperature (the paper's best real Doom score was trained at 1.15)."""
    dream_max_steps: int = 2100
    """Dream episodes are truncated here (the original: 2100)."""
    done_mode: Literal["threshold", "sample"] = "threshold"
    """End a dream when M's done logit > 0 (the original), or sample death with M's
    calibrated probability (envs/dream.py says why); evaluate with what C was evolved in."""
    done_offset: float = 0.0
    """Added to M's done logit (``fidelity --calibrate`` finds the one at which the random
    policy survives as long as in the data)."""
    dream_dropout: bool = False
    """Keep M's dropout on, one mask per dream (M trained with --dropout)."""

    def __post_init__(self) -> None:
        check_finite("tau", self.tau, 0)  # inf: every sample is noise (every fitness equal)
        check_finite("done_offset", self.done_offset)
        if self.dream_max_steps < 1:
            raise ConfigError(f"dream_max_steps must be >= 1, got {self.dream_max_steps}")


@dataclass(frozen=True)
class RolloutSettings:
    """Where real episodes run (:func:`~world_models.envs.pool.make_pool`)."""

    workers: int = 0
    """Env worker processes (0: all cores)."""
    envs_per_worker: int = 0
    """Envs per worker (0: enough for one wave of episodes, up to 32 per worker)."""
    backend: Literal["local", "ray"] = "local"
    """Worker processes on this machine, or Ray actors (optional ray extra; RAY_ADDRESS
    picks a cluster)."""
    retries: int = 1
    """Restart a worker that dies or hangs and re-run its episodes this many times before
    stopping with an error (0: stop at once)."""
    env_backend: Literal["gymnasium", "envpool", "auto"] = "gymnasium"
    """Which implementation of the env each worker steps: Gymnasium's, envpool's (optional
    extra; CarRacing only, ~7x faster there, but other tracks for a seed), or auto (envpool
    where it is installed and has the env). Scores to compare with the paper use
    Gymnasium's."""

    def layout(self, episodes: int) -> tuple[int, int]:
        """``(workers, envs per worker)`` for waves of ``episodes`` episodes: no more
        workers than episodes, and by default one wave (up to 32 envs a worker)."""

        workers = max(1, min(self.workers or os.cpu_count() or 1, episodes))
        return workers, self.envs_per_worker or min(32, -(-episodes // workers))

    def __post_init__(self) -> None:
        for name in ("workers", "envs_per_worker", "retries"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
