"""Run folders, and the skeleton every trainer (V, M, C) shares.

One place per training run, resumable by re-running the same command::

    run_dir/
      config.json              the training config (a re-run must agree with it)
      checkpoints/last/        latest good state: model + optimizer + trainer state
      checkpoints/best/        lowest held-out loss so far
      metrics.csv, metrics.jsonl   one row per logged step or epoch
      events/                  TensorBoard (when installed)
      loss_curve.png           the logged losses
      images/                  grids and plots

:class:`TrainingRun` is what a trainer holds while it trains: it locks and opens the folder
(a re-run may change only the fields its config marks
:func:`~world_models.core.config.resumable`), says whether a re-run resumes or finds the
run finished, logs metrics, stops a diverged run with :class:`TrainingDivergedError` and
plots the curve; under torchrun rank 0 alone does the folder's work and decides, the other
ranks follow. :func:`summarize_run` is the text printed at the end. :class:`Trainer` is
the one shape of the three trainers, and :func:`run_trainer` drives one. What a trainer
keeps is only its own: model, optimizer,
data, loop, checkpoint contents, and which metrics make its curve and summary.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from world_models.core.atomic import (
    atomic_open,
    atomic_write_json,
    clean_temp_files,
    naming_disk_full,
    recover_dir,
)
from world_models.core.checkpoint import META_FILE, WEIGHTS_FILE
from world_models.core.config import resumable_fields, to_dict
from world_models.core.errors import ConfigError, TrainingDivergedError
from world_models.core.locking import LOCK_FILE, check_output_dir, lock_folder
from world_models.core.media import plot_curves
from world_models.training.distributed import DistContext

if TYPE_CHECKING:
    from world_models.training.distributed import DistContext

RNG_KEY = "world_models_rng"
"""Key of torch's global RNG state in a checkpoint's optimizer state. V's sampled z and M's
dropout draw from it: restored, a resumed run draws what an uninterrupted one would."""

RUN_OUTPUTS: tuple[tuple[str, str], ...] = (
    ("best checkpoint:", "checkpoints/best"),
    ("last checkpoint:", "checkpoints/last"),
    ("metrics:", "metrics.csv"),
    ("loss curve:", "loss_curve.png"),
)
"""The ``(label, relative path)`` outputs every trainer's summary lists when they exist."""


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

    def open(
        self, config: Any, may_differ: frozenset[str] = frozenset(), *, write: bool = True
    ) -> bool:
        """Create the folder, or accept it for resuming; return True when resuming.

        Fields in ``may_differ`` (epochs, device, speed switches; a nested config's fields
        by dotted name, ``rollout.workers``, or all of them by its name, ``rollout``) may
        change on a re-run; any other difference is a :class:`ConfigError` naming the
        fields, because mixing two configs in one run would corrupt it silently.
        ``run_dir`` itself never counts: the folder may have been renamed, or be named by
        another (e.g. absolute) path. ``write=False`` only checks: :meth:`write_config`
        then writes config.json once the run starts.
        """
        check_output_dir(self.path, "run folder")
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
        if write:
            self.write_config(config)
        return (self.last / "model.safetensors").exists() or any(
            self.checkpoints.glob(".last.old-*")
        )

    def write_config(self, config: Any) -> None:
        """Record ``config`` as the run's (config.json) and make the pictures folder."""
        atomic_write_json(self.config_file, to_dict(config))
        self.images.mkdir(exist_ok=True)


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

    def may_change(k: str) -> bool:  # k itself, or a nested config that holds it
        parts = k.split(".")
        prefixes = (".".join(parts[:i]) for i in range(1, len(parts) + 1))
        return k == "run_dir" or any(p in may_differ for p in prefixes)

    return [
        f"{k}: run has {old.get(k)!r}, command asks {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if not may_change(k) and old.get(k) != new.get(k)
    ]


def describe_outputs(run_dir: Path, entries: list[tuple[str, str]]) -> list[str]:
    """``label  path`` lines for the ``(label, relative path)`` entries that exist."""
    return [f"{label:<18} {run_dir / rel}" for label, rel in entries if (run_dir / rel).exists()]


def read_rows(path: Path, up_to_step: int | None = None) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (none when it is absent), without a line torn by a
    kill; with ``up_to_step``, only the rows logged at or before that step."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            if up_to_step is None or row.get("step", 0) <= up_to_step:
                rows.append(row)
    return rows


class MetricsLogger:
    """Metrics as CSV and JSON lines always, TensorBoard when it is installed.

    On resume, rows past the resumed step are dropped so a killed run leaves no duplicates;
    with ``keep_rows`` (how many there were when the checkpoint resumed from was saved),
    also a row of that very step logged after it (an epoch's end, at the step of a
    mid-epoch checkpoint).
    """

    def __init__(
        self,
        run_dir: RunDir,
        resume_step: int | None = None,
        tensorboard: bool = True,
        keep_rows: int | None = None,
    ) -> None:
        self.csv_path = run_dir.path / "metrics.csv"
        self.jsonl_path = run_dir.path / "metrics.jsonl"
        self.rows = read_rows(self.jsonl_path, resume_step)
        if keep_rows is not None:
            self.rows = self.rows[:keep_rows]
        self._rewrite()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional: the tensorboard extra

                self.tb = SummaryWriter(str(run_dir.path / "events"))
            except ImportError:  # tensorboard is an optional extra
                self.tb = None

    def _columns(self) -> list[str]:
        cols: list[str] = []
        for row in self.rows:
            cols += [k for k in row if k not in cols]
        return cols

    def _rewrite(self) -> None:

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
        # appended, not atomic: a torn last line is skipped by read_rows and rewritten
        with naming_disk_full(self.jsonl_path, "the rows logged before it are kept"):
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
            self.tb = None


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float):
        return round(v, 6)
    return v


# ---------------------------------------------------------------------------- the skeleton


class TrainingRun(RunDir):
    """The run folder as a trainer holds it for one invocation (see the module docstring).

    Opening it locks it (for as long as ``hold``, an ExitStack the caller closes on any
    exit, lives; without ``hold`` it is not locked), checks the config against the stored
    one, allowing the fields the config marks resumable to differ, and sets
    :attr:`resuming`: whether ``resume_file`` (relative to the folder; None: a
    checkpoints/last checkpoint) exists. It writes nothing: :meth:`start` (called by
    :meth:`open_metrics`, once the trainer has loaded its data and models) writes the
    config, so a run refused before it starts (a missing data folder, a typo) leaves no
    config.json to refuse the corrected command with; a folder it had to create for the
    lock is removed again when ``hold`` closes. ``dist`` is torchrun's
    :class:`~world_models.training.distributed.DistContext` (None: one process) and
    ``device`` the device its collectives use. ``watched`` names what a NaN or Inf is
    found in and ``advice`` says what to change then.
    """

    def __init__(
        self,
        config: Any,
        *,
        hold: contextlib.ExitStack | None = None,
        dist: DistContext | None = None,
        device: torch.device | None = None,
        resume_file: str | None = None,
        watched: str = "loss",
        advice: str = "Lower --lr",
    ) -> None:

        super().__init__(config.run_dir)
        self.config, self.watched, self.advice = config, watched, advice
        self.dist = DistContext() if dist is None else dist
        self.device = torch.device("cpu") if device is None else device
        self.metrics: MetricsLogger | None = None
        self.started = False
        resuming, refused = False, None
        if self.dist.is_main:
            try:
                if hold is not None:  # rank 0 alone writes the folder, so it alone locks it
                    missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
                    hold.enter_context(self.lock())
                    hold.callback(self._remove_if_unstarted, missing)  # before the unlock
                resuming = self.open(config, resumable_fields(config), write=False)
                if resume_file is not None:
                    resuming = (self.path / resume_file).exists()
            except Exception as exc:  # noqa: BLE001 - re-raised below, once the others know
                refused = exc
        if self.dist.enabled:
            # Rank 0 alone judges the folder and the others follow it: no rank resumes alone,
            # and none waits forever for a rank 0 that refused the folder.
            verdict = torch.tensor([refused is not None, resuming], dtype=torch.int32)
            failed, resuming = map(bool, self.dist.from_main(verdict.to(self.device)).tolist())
            if failed and refused is None:
                raise ConfigError(f"rank 0 refused the run folder {self.path} (see its error)")
        if refused is not None:
            raise refused
        self.resuming: bool = resuming

    def start(self) -> None:
        """The run starts: write its config (rank 0; once). See the class docstring."""
        if self.dist.is_main and not self.started:
            self.write_config(self.config)
        self.started = True

    def _remove_if_unstarted(self, created: list[Path]) -> None:
        """Undo the folders (``created``: deepest first) that locking a run which then
        never started made, with the lock file; nothing else is ever in them."""
        if self.started or not created:
            return
        with contextlib.suppress(OSError):
            (self.path / LOCK_FILE).unlink(missing_ok=True)  # still held: nobody else has it
            for folder in created:
                folder.rmdir()  # only if empty: stops at anything not ours

    def say(self, text: str) -> None:
        """Print a line, on rank 0 only."""
        if self.dist.is_main:
            print(text, flush=True)

    def resume_verdict(
        self,
        *,
        step: int,
        epoch: int,
        epochs: int,
        finished: bool,
        unit: str = "epoch",
        raise_flags: Sequence[str] = ("--epochs",),
    ) -> bool:
        """Say where a re-run stands: resumed (and from where) or already finished (and which
        flags train it further). ``epoch`` counts the finished ones. True: train on."""
        if finished:
            if self.resuming:
                self.say(
                    f"{self.path} is already finished ({unit} {epoch:,}, step {step:,}); "
                    f"raise {' or '.join(raise_flags)} to train it further"
                )
            return False
        if self.resuming:
            self.say(f"resumed from step {step:,} ({unit} {epoch + 1:,} of {epochs:,})")
        return True

    def open_metrics(self, step: int, rows: Any = None) -> MetricsLogger | None:
        """Start logging at ``step``, the step training (re)starts from: the rows past it,
        which this run will log again, are dropped, and with ``rows`` (the checkpoint's
        :attr:`rows_logged`) any past the first ``rows``. Rank 0 only (None elsewhere).
        The run has started (:meth:`start`)."""
        self.start()
        if self.dist.is_main:
            tensorboard = bool(getattr(self.config, "tensorboard", True))
            keep = rows if isinstance(rows, int) and not isinstance(rows, bool) else None
            self.metrics = MetricsLogger(self, step, tensorboard, keep)
        return self.metrics

    @property
    def rows_logged(self) -> int | None:
        """How many metrics rows are logged so far (for a checkpoint's meta; rank 0)."""
        return None if self.metrics is None else len(self.metrics.rows)

    def log(self, step: int, **values: float | int | str) -> None:
        """One metrics row (rank 0; a no-op elsewhere)."""
        if self.metrics is not None:
            self.metrics.log(step, **values)

    def stop_if_diverged(self, bad: bool | torch.Tensor, where: str) -> None:
        """Raise :class:`TrainingDivergedError` when ``bad`` (a NaN or Inf was seen) is true
        on any rank, naming the last good checkpoint. Under torchrun this is a collective:
        every rank calls it at the same point. ``where``: e.g. :func:`at_step`'s text."""
        if self.dist.enabled:
            bad = self.dist.any_true(torch.as_tensor(bad, device=self.device))
        elif torch.is_tensor(bad):
            bad = bool(bad.item())
        if not bad:
            return
        meta = _saved_meta(self.last)
        if meta is None:
            last, then = "none saved yet", "to start over (no last good checkpoint to resume from)"
        else:
            last = f"{self.last} (step {meta.get('step', '?')})"
            then = "to resume from the last good checkpoint"
        raise TrainingDivergedError(
            f"{self.watched} became NaN or Inf {where}; training stopped. Last good "
            f"checkpoint: {last}. {self.advice}, then re-run the same command {then}."
        )

    def plot_curve(
        self,
        series: Mapping[str, str],
        title: str,
        file: str = "loss_curve.png",
        **plot_kwargs: Any,
    ) -> Path | None:
        """Plot the logged metrics ``{label: metric key}`` against the step into ``file``
        (rank 0; nothing before any is logged). ``plot_kwargs``: xlabel, ylabel, logy."""

        if self.metrics is None:
            return None
        curves = {}
        for label, key in series.items():
            points = [(r["step"], r[key]) for r in self.metrics.rows if key in r]
            curves[label] = tuple(zip(*points)) if points else ((), ())
        if not any(len(xs) for xs, _ in curves.values()):
            return None
        return plot_curves(curves, self.path / file, title=title, **plot_kwargs)

    def close(self) -> None:
        """Flush and close the metrics (the lock goes with ``hold``)."""
        if self.metrics is not None:
            self.metrics.close()


class Trainer:
    """The one shape of V's, M's and C's trainers, driven by :func:`run_trainer`.

    ``__init__(config, hold)`` sets up: it opens the run folder as :attr:`run` (locked for
    as long as ``hold`` lives), loads the data, builds the model from its config and, when
    the run resumes, calls :meth:`load_state`. :meth:`fit` trains on (by steps or
    generations) to the end or the time budget, scoring with :meth:`evaluate` and saving
    with :meth:`save_state`; :meth:`close` frees what the trainer holds, on any exit.
    """

    run: TrainingRun

    def load_state(self) -> None:
        """Continue from the run folder's saved state (called by ``__init__`` on resume)."""
        raise NotImplementedError

    def save_state(self, where: Path) -> None:
        """Save a checkpoint at ``where``; at ``run.last``, all a re-run resumes from."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """The model's held-out scores now, by metric name."""
        raise NotImplementedError

    def fit(self) -> Path:
        """Train to the end (or this invocation's time budget); return the run folder."""
        raise NotImplementedError

    def close(self) -> None:
        """Free the trainer's resources; the metrics are flushed and closed."""
        self.run.close()


def run_trainer(trainer_class: Callable[[Any, contextlib.ExitStack], Trainer], config: Any) -> Path:
    """Train (or resume) ``config``'s run with ``trainer_class``; return the run folder.
    The folder stays locked until the trainer is closed, which it is on any exit."""
    with contextlib.ExitStack() as hold:
        trainer = trainer_class(config, hold)
        try:
            return trainer.fit()
        finally:
            trainer.close()


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """torch's global RNG state: the CPU's, and ``device``'s when it is a GPU."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Any, device: torch.device) -> None:
    """Restore :func:`rng_state`'s ``state`` (nothing when a checkpoint has none: older
    runs resume as before, with the seed's stream)."""
    if not isinstance(state, dict):
        return
    if torch.is_tensor(state.get("cpu")):
        torch.set_rng_state(state["cpu"].to("cpu", torch.uint8))
    if device.type == "cuda" and torch.is_tensor(state.get("cuda")):
        torch.cuda.set_rng_state(state["cuda"].to("cpu", torch.uint8), device)


def at_step(step: int, epoch: int | None = None, unit: str = "epoch") -> str:
    """``at step 1,250 (epoch 3)``: where something happened; ``epoch`` counts from 0."""
    return f"at step {step:,}" + (f" ({unit} {epoch + 1:,})" if epoch is not None else "")


def _saved_meta(checkpoint: Path) -> dict[str, Any] | None:
    """meta.json of a saved checkpoint ({} when unreadable), None when there is none."""

    path = recover_dir(checkpoint)
    if not (path / WEIGHTS_FILE).is_file():
        return None
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def summarize_run(
    run_dir: str | os.PathLike,
    *,
    unit: str = "epoch",
    scores: Sequence[tuple[str, str, Literal["min", "max"]]] = (),
    outputs: Sequence[tuple[str, str]] = RUN_OUTPUTS,
) -> str:
    """What a trainer prints at the end: the run folder; how far it got (``unit``s done,
    from checkpoints/last, of the config's ``unit + "s"``); the best and the last logged
    value of each of its ``scores`` (label, metric key, whether "min" or "max" is best);
    and where its ``outputs`` (label, relative path) are."""
    run_dir = Path(run_dir)
    lines = [f"{'run folder:':<18} {run_dir}"]
    meta = _saved_meta(run_dir / "checkpoints" / "last") or {}
    done = meta.get(unit, meta.get("trainer", {}).get(unit))
    if isinstance(done, int):
        try:
            total = json.loads((run_dir / "config.json").read_text()).get(f"{unit}s")
        except (OSError, ValueError, AttributeError):
            total = None
        of = f" of {total:,}" if isinstance(total, int) else ""
        step = meta.get("step", 0)
        lines.append(f"{unit + 's done:':<18} {done:,}{of} (step {step:,})")
    rows = read_rows(run_dir / "metrics.jsonl")
    for label, key, best in scores:
        points = [
            (r.get("step", 0), float(r[key]))
            for r in rows
            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
        ]
        if points:
            pick = min if best == "min" else max
            step, value = pick(points, key=lambda p: p[1])
            lines.append(f"{label:<18} best {value:.4g} (step {step:,}), last {points[-1][1]:.4g}")
    return "\n".join(lines + describe_outputs(run_dir, list(outputs)))
