"""Run folders: one place per training run, resumable by re-running the same command.

::

    run_dir/
      config.json              the training config (a re-run must agree with it)
      checkpoints/last/        latest good state: model + optimizer + trainer state
      checkpoints/best/        lowest held-out loss so far
      metrics.csv, metrics.jsonl   one row per logged step or epoch
      events/                  TensorBoard (when installed)
      images/                  grids and plots
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from world_models.core.atomic import atomic_write_json, clean_temp_files
from world_models.core.config import to_dict
from world_models.core.errors import ConfigError
from world_models.core.locking import check_output_dir, lock_folder


class RunDir:
    """A run folder. ``open`` checks a re-run's config against the stored one."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.last = self.checkpoints / "last"
        self.best = self.checkpoints / "best"
        self.images = self.path / "images"
        self.config_file = self.path / "config.json"

    def lock(self):
        """Hold this run folder for a ``with`` block: a second trainer on the same folder
        fails at once, naming this one's pid (see :mod:`world_models.core.locking`)."""
        return lock_folder(self.path, "run folder")

    def open(self, config: Any, may_differ: frozenset[str] = frozenset()) -> bool:
        """Create the folder, or accept it for resuming; return True when resuming.

        Fields in ``may_differ`` (epochs, device, speed switches) may change on a re-run;
        any other difference is a :class:`ConfigError` naming the fields, because mixing
        two configs in one run would corrupt it silently. ``run_dir`` itself never counts:
        the folder may have been renamed, or be named by another (e.g. absolute) path.
        """
        check_output_dir(self.path, "run folder")
        self.images.mkdir(exist_ok=True)
        clean_temp_files(self.path)
        if self.checkpoints.exists():
            clean_temp_files(self.checkpoints)
        new = to_dict(config)
        if self.config_file.exists():
            try:
                old = json.loads(self.config_file.read_text())
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{self.config_file}: unreadable ({exc})") from None
            diff = _differences(old, new, may_differ)
            if diff:
                raise ConfigError(
                    f"run folder {self.path} was started with another config ("
                    + "; ".join(diff[:4])
                    + "); use another run folder or the original settings"
                )
        atomic_write_json(self.config_file, new)
        return (self.last / "model.safetensors").exists() or any(
            self.checkpoints.glob(".last.old-*")
        )


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"hidden_size": 1}}`` -> ``{"model.hidden_size": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _differences(old: dict[str, Any], new: dict[str, Any], may_differ: frozenset[str]) -> list[str]:
    """The settings that differ, by dotted name (a nested config's fields one by one)."""
    old, new = _flat(old), _flat(new)
    return [
        f"{k}: run has {old.get(k)!r}, command asks {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if k not in may_differ and k != "run_dir" and old.get(k) != new.get(k)
    ]


def describe_outputs(run_dir: Path, entries: list[tuple[str, str]]) -> list[str]:
    """``label  path`` lines for the ``(label, relative path)`` entries that exist."""
    return [f"{label:<18} {run_dir / rel}" for label, rel in entries if (run_dir / rel).exists()]


class MetricsLogger:
    """Metrics as CSV and JSON lines always, TensorBoard when it is installed.

    On resume, rows past the resumed step are dropped so a killed run leaves no duplicates.
    """

    def __init__(
        self, run_dir: RunDir, resume_step: int | None = None, tensorboard: bool = True
    ) -> None:
        self.csv_path = run_dir.path / "metrics.csv"
        self.jsonl_path = run_dir.path / "metrics.jsonl"
        self.rows: list[dict[str, Any]] = []
        if self.jsonl_path.exists():
            for line in self.jsonl_path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill
                if resume_step is None or row.get("step", 0) <= resume_step:
                    self.rows.append(row)
        self._rewrite()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir.path / "events"))
            except ImportError:  # tensorboard is an optional extra
                self.tb = None

    def _columns(self) -> list[str]:
        cols: list[str] = []
        for row in self.rows:
            cols += [k for k in row if k not in cols]
        return cols

    def _rewrite(self) -> None:
        from world_models.core.atomic import atomic_open

        with atomic_open(self.jsonl_path, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in self.rows)
        with atomic_open(self.csv_path, "w") as fh:
            writer = csv.DictWriter(fh, fieldnames=self._columns())
            writer.writeheader()
            writer.writerows(self.rows)

    def log(self, step: int, **values: float | int | str) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in values.items()}}
        new_cols = [k for k in row if k not in self._columns()]
        self.rows.append(row)
        with open(self.jsonl_path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        if new_cols:
            self._rewrite()  # the header changed
        else:
            with open(self.csv_path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=self._columns()).writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float):
        return round(v, 6)
    return v
