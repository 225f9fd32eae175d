"""Where one game's pipeline keeps its files: one :class:`Layout` per game feeds every
command preset's default paths (``collect --preset doom`` writes ``data/doom``, which
``train-vae --preset doom`` reads) and every stage of a ``reproduce`` recipe (all under
its root)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """The folders and files of one game's stages, from the episodes to the scores."""

    data: Path
    """Collected episodes (collect's output)."""
    series: Path
    """V's encoding of the episodes (encode's output, M's input)."""
    vae_run: Path
    """V's training run."""
    mdrnn_run: Path
    """M's training run."""
    controller_run: Path
    """C's training run."""
    evaluation: Path
    """C's scores in the real env."""
    evaluation_dream: Path
    """C's scores in the dream."""
    evaluation_random: Path
    """The random data policy's scores in the real env."""
    fidelity: Path
    """The dream fidelity report."""
    calibration: Path
    """The dream's calibrated done offset (a recipe's calibrate stage)."""
    stages: Path
    """Which recipe stages have finished, and their wall seconds."""
    suffix: str = ""
    """Appended to C's and its evaluations' folders and stage names (``-z``: the z-only
    controller beside the full one)."""

    @classmethod
    def standalone(cls, data: str, runs: str = "") -> Layout:
        """The folders the commands' presets use, under ``data/`` and ``runs/`` of the
        working folder: ``data/<data>``, ``data/<data>-series``, ``runs/vae<runs>``, ...
        (CarRacing's runs have no tag, the other games' ``-<game>``)."""
        top = Path("runs")
        return cls(
            data=Path("data") / data,
            series=Path("data") / f"{data}-series",
            vae_run=top / f"vae{runs}",
            mdrnn_run=top / f"mdrnn{runs}",
            controller_run=top / f"controller{runs}",
            evaluation=top / f"evaluation{runs}",
            evaluation_dream=top / f"evaluation-dream{runs}",
            evaluation_random=top / f"eval-random{runs}",
            fidelity=top / f"fidelity{runs}",
            calibration=top / f"calibration{runs}.json",
            stages=top / f"stages{runs}.json",
        )

    @classmethod
    def under(cls, root: Path, suffix: str = "") -> Layout:
        """A recipe's folders, all under ``root`` (``suffix``: see the field)."""
        return cls(
            data=root / "data",
            series=root / "series",
            vae_run=root / "vae",
            mdrnn_run=root / "mdrnn",
            controller_run=root / f"controller{suffix}",
            evaluation=root / f"evaluation{suffix}",
            evaluation_dream=root / f"evaluation-dream{suffix}",
            evaluation_random=root / "eval-random",
            fidelity=root / f"fidelity{suffix}",
            calibration=root / "calibration.json",
            stages=root / "stages.json",
            suffix=suffix,
        )

    @staticmethod
    def best(run: Path) -> Path:
        """A training run's best checkpoint folder."""
        return run / "checkpoints" / "best"

    @property
    def vae(self) -> Path:
        """V's best checkpoint."""
        return self.best(self.vae_run)

    @property
    def mdrnn(self) -> Path:
        """M's best checkpoint."""
        return self.best(self.mdrnn_run)

    @property
    def controller(self) -> Path:
        """C's best checkpoint."""
        return self.best(self.controller_run)
