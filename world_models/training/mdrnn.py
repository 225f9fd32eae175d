"""Train M (the MDN-RNN) on cached latent series: ``train_mdrnn(config) -> run folder``.

Teacher forcing over windows of ``seq_len`` transitions drawn from an in-memory
:class:`~world_models.data.series.SeriesSet` (one gather per batch, no loader processes).

Deliberate choices:

* **z is re-sampled every batch**, ``z = mu + exp(logvar / 2) * eps``, for inputs and
  targets alike (one draw per frame, so z_{t+1} as a target equals z_{t+1} as the next
  input), as the original did. It trains M on the same noisy z that the VAE's posterior
  describes (and that a controller fed sampled z sees), and acts as data augmentation: each
  epoch sees new z. ``sample_z=False`` trains on ``mu`` alone instead; the held-out NLL of
  the two is not comparable (mu sequences are smoother).
* **An epoch** is as many batches as the training split holds transitions
  (``ceil(steps / (batch_size * seq_len))``) of uniformly random windows; with
  ``carry_state`` it is exactly one pass over every step, in lanes (truncated BPTT).
* **Held-out NLL** is computed every epoch on every step of the held-out episodes (split by
  a hash of the file name: stable across runs), with a fixed noise seed so epochs compare.

Run folder (the common layout of :mod:`world_models.training.runs`, whose
:class:`~world_models.training.runs.TrainingRun` opens it, says whether a re-run resumed,
logs the metrics, stops on NaN or Inf, plots the curve and writes the summary)::

    run_dir/config.json            this TrainMDNRNNConfig (a re-run must match it)
    run_dir/checkpoints/last/      MDNRNN checkpoint + optimizer.pt; meta: epoch, step,
                                   batch_in_epoch, best (resumes mid-epoch with save_every),
                                   the V and the env of the series (vae_sha256, env)
    run_dir/checkpoints/best/      the lowest held-out total loss so far
    run_dir/metrics.csv, .jsonl    one row per epoch (train_* and heldout_* loss parts, lr,
                                   seconds, seq_steps_per_s); nll is nats per latent dimension
    run_dir/loss_curve.png         train and held-out total loss per epoch (written when an
                                   invocation's training ends)
    run_dir/events/                TensorBoard, if the ``tensorboard`` package is installed

Re-running the same command with the same ``run_dir`` resumes from ``checkpoints/last``
(raise ``epochs`` to train longer).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from world_models.core.checkpoint import load_state_strict, read_checkpoint, read_optimizer_state
from world_models.core.config import from_dict, to_dict
from world_models.core.device import pick_device
from world_models.core.errors import ConfigError
from world_models.data.series import (
    SeriesBatch,
    SeriesSet,
    load_series,
    series_env,
    series_vae_digest,
)
from world_models.models.mdrnn import MDNRNN, MDNRNNConfig
from world_models.models.world_model import ENV_KEY
from world_models.training import runs
from world_models.training.configs import TRAIN_MDNRNN_PRESETS, TrainMDNRNNConfig
from world_models.training.runs import (
    RNG_KEY,
    Trainer,
    TrainingRun,
    at_step,
    run_trainer,
    summarize_run,
)

CARRY_KEY = "world_models_carry_state"
"""Key of the lanes' LSTM (h, c) in a mid-epoch checkpoint's optimizer state (TBPTT runs)."""
SUMS_KEY = "world_models_epoch_sums"
"""Key of the epoch's loss sums so far in a mid-epoch checkpoint's optimizer state: the
resumed epoch's train_* metrics average all its steps, as an uninterrupted run's do."""


def _model_config(config: TrainMDNRNNConfig, train: SeriesSet) -> MDNRNNConfig:
    """M's config with the series' sizes where it leaves them None (a given size must match)."""
    sizes = {"latent_size": train.latent_size, "action_size": train.action_size}
    for name, data_size in sizes.items():
        given = getattr(config.model, name)
        if given is not None and given != data_size:
            raise ConfigError(
                f"{name}={given} but the series in {config.series_dir} have {data_size}"
            )
    return dataclasses.replace(config.model, **sizes)


def _reset_state(state, first: torch.Tensor):
    """Detach a carried state (truncated BPTT) and zero it for lanes starting an episode."""
    if state is None:
        return None
    keep = (~first).to(state[0].dtype)[None, :, None]  # (1, B, 1)
    return tuple(s.detach() * keep for s in state)


def _batch_loss(
    model: MDNRNN,
    batch: SeriesBatch,
    state,
    sample_z: bool,
    generator: torch.Generator | None,
    autocast: bool,
):
    z = batch.latents(sample_z, generator)  # (B, L+1, Z)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        out = model(z[:, :-1], batch.action, state)
    parts = model.loss(out, z[:, 1:], batch.reward, batch.done, batch.mask, batch.next_mask)
    return parts, out.state


def train_step(
    model: MDNRNN,
    optimizer: torch.optim.Optimizer,
    batch: SeriesBatch,
    *,
    state=None,
    sample_z: bool = True,
    grad_clip: float = 1.0,
    generator: torch.Generator | None = None,
    autocast: bool = False,
):
    """One optimizer step on a batch of windows; returns ``(loss parts, LSTM state)``.

    The whole window goes through ``nn.LSTM`` at once (cuDNN on GPU), from tensors already
    in memory: no Python loop over time steps and no frames to encode.
    """
    parts, new_state = _batch_loss(model, batch, state, sample_z, generator, autocast)
    optimizer.zero_grad(set_to_none=True)
    parts["total"].backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return parts, new_state


class _Sums:
    """Weighted sums of loss parts, kept on the device (no sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.weights: dict[str, torch.Tensor] = {}

    def add(self, parts: dict[str, torch.Tensor], batch: SeriesBatch) -> None:
        steps = batch.mask.sum()
        targets = (batch.mask & batch.next_mask).sum()
        for k, v in parts.items():
            w = targets if k == "nll" else steps
            self.sums[k] = self.sums.get(k, 0) + v.detach().float() * w
            self.weights[k] = self.weights.get(k, 0) + w

    def state(self) -> dict:
        return {"sums": self.sums, "weights": self.weights}

    @classmethod
    def from_state(cls, state, device: torch.device) -> _Sums:
        out = cls()
        if isinstance(state, dict):
            for name in ("sums", "weights"):
                getattr(out, name).update({k: v.to(device) for k, v in state[name].items()})
        return out

    def means(self) -> dict[str, float]:
        return {k: float(self.sums[k] / self.weights[k].clamp(min=1)) for k in self.sums}


@torch.no_grad()
def evaluate(
    model: MDNRNN, data: SeriesSet, config: TrainMDNRNNConfig, device: torch.device
) -> dict[str, float]:
    """Loss parts over every step of ``data`` (file order, fixed z noise)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(config.seed + 7919)
    sums, state = _Sums(), None
    autocast = device.type == "cuda" and config.bf16
    for batch in data.lanes(config.batch_size, config.seq_len):
        if config.carry_state:
            state = _reset_state(state, batch.first)
        parts, new_state = _batch_loss(model, batch, state, config.sample_z, generator, autocast)
        state = new_state if config.carry_state else None
        sums.add(parts, batch)
    model.train(was_training)
    return sums.means()


def _window(config: TrainMDNRNNConfig, train: SeriesSet, held: SeriesSet | None) -> int:
    """The window length actually gathered: ``seq_len``, cut (with a warning) to the longest
    episode. Steps past it are all padding, masked out of every loss: the cut keeps the same
    windows and batches per epoch (which still follow ``seq_len``) and spares the memory
    and time of the padding (only z's sampling noise is drawn for fewer steps)."""
    longest = max(int(s.lengths.max()) for s in (train, held) if s is not None)
    if config.seq_len <= longest:
        return config.seq_len
    warnings.warn(
        f"train-mdrnn: seq_len {config.seq_len} is longer than the longest episode in "
        f"{config.series_dir} ({longest} steps); windows are cut to {longest} steps "
        f"(the rest would be padding)",
        stacklevel=5,  # the caller of train_mdrnn
    )
    return longest


def _check_batch(config: TrainMDNRNNConfig, train: SeriesSet) -> None:
    """Refuse a batch of more windows than the training split holds distinct ones, as
    train-vae refuses a batch of more frames than it has: every batch would repeat windows
    (or, with carry_state, keep lanes that never get an episode), and a typo'd huge batch
    would allocate gigabytes before failing."""
    windows = train.num_windows(config.seq_len)  # the same for the window _window cuts
    if config.batch_size > windows:
        raise ConfigError(
            f"train-mdrnn: --batch-size {config.batch_size} is more than the {windows} "
            f"distinct windows of --seq-len {config.seq_len} in the training split of "
            f"{config.series_dir} ({train.num_episodes} episodes); lower --batch-size "
            f"(or --seq-len)"
        )


class MDNRNNTrainer(Trainer):
    """M's trainer: Adam on the MDN-RNN over windows of the series, epoch by epoch (lanes
    of consecutive windows, carrying the LSTM state, with ``carry_state``)."""

    def __init__(self, config: TrainMDNRNNConfig, hold: contextlib.ExitStack) -> None:
        """``hold`` keeps the lock on the run folder until the caller closes it."""
        self.config = config
        self.device = pick_device(config.device)
        self.autocast = self.device.type == "cuda" and config.bf16
        self.train, self.held = load_series(config.series_dir, config.holdout_fraction)
        self.model_config = _model_config(config, self.train)
        _check_batch(config, self.train)  # before _window's warning: a refusal is one line
        self.window = _window(config, self.train, self.held)
        self.vae_sha256 = series_vae_digest(config.series_dir)  # recorded in M: which V
        self.env = series_env(config.series_dir)  # and which env: later commands refuse another
        # the model's own checks (sizes, K, pos_weight) before the folder is written
        self.model_config = self.model_config.validate("train-mdrnn")
        # Opened (config.json written) once the settings proved usable: a typo'd first try
        # does not stick to the folder.
        self.run = TrainingRun(config, hold=hold, device=self.device)
        hold.callback(self.run.close)
        self.train.to(self.device)
        if self.held is not None:
            self.held.to(self.device)
        torch.manual_seed(config.seed)
        self.model = MDNRNN.from_config(self.model_config).to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.step, self.epoch, self.best = 0, 0, math.inf
        self.skip = 0  # batches of the current epoch done
        self.lr = max(config.lr * config.lr_decay**self.step, config.min_lr)
        self.lstm_state = None  # the lanes' LSTM state, with carry_state
        self.sums = _Sums()  # the epoch's loss sums so far
        self._carry = None  # the lanes' LSTM state when resuming mid-epoch with carry_state
        self._carry_sums = None  # the epoch's loss sums so far, when resuming mid-epoch
        self._metrics_rows = None  # rows logged when the checkpoint resumed from was saved
        self._t_start = time.perf_counter()
        if self.run.resuming:
            self.load_state()

    # ------------------------------------------------------------------ state
    def load_state(self) -> None:
        last = self.run.last
        ckpt = read_checkpoint(last, expected_kind="MDNRNN", device=self.device)
        if from_dict(MDNRNNConfig, ckpt.config) != self.model_config:
            raise ConfigError(f"{last} holds another model config than this run's")
        load_state_strict(self.model, ckpt.tensors, f"checkpoint {last}")
        opt_state = read_optimizer_state(last)
        if opt_state is not None:
            self._carry = opt_state.pop(CARRY_KEY, None)
            self._carry_sums = opt_state.pop(SUMS_KEY, None)
            runs.set_rng_state(opt_state.pop(RNG_KEY, None), self.device)  # dropout's masks go on
            self.opt.load_state_dict(opt_state)
        if self.vae_sha256 and ckpt.meta.get("vae_sha256") not in (None, self.vae_sha256):
            raise ConfigError(
                f"{self.config.series_dir} was re-encoded by another VAE since this run "
                f"started: use a new --run-dir"
            )
        self.step, self.epoch = int(ckpt.meta["step"]), int(ckpt.meta["epoch"])
        self.skip, self.best = int(ckpt.meta["batch_in_epoch"]), float(ckpt.meta["best"])
        self._metrics_rows = ckpt.meta.get("metrics_rows")

    def save_state(self, where: Path) -> None:
        opt_state = {**self.opt.state_dict(), RNG_KEY: runs.rng_state(self.device)}
        if self.config.carry_state and self.skip and self.lstm_state is not None:
            # mid-epoch: the lanes' LSTM state too, so a resumed run continues exactly
            opt_state[CARRY_KEY] = [s.detach().float().cpu() for s in self.lstm_state]
        if self.skip:  # mid-epoch: the epoch's loss sums so far
            opt_state[SUMS_KEY] = {
                part: {k: torch.as_tensor(v).detach().cpu() for k, v in d.items()}
                for part, d in self.sums.state().items()
            }
        meta = {
            "epoch": self.epoch,
            "batch_in_epoch": self.skip,
            "best": self.best,
            "train_config": to_dict(self.config),
            "metrics_rows": self.run.rows_logged,
            **({"vae_sha256": self.vae_sha256} if self.vae_sha256 else {}),
            **({ENV_KEY: self.env} if self.env else {}),
        }
        self.model.save_pretrained(where, step=self.step, meta=meta, optimizer_state=opt_state)

    # ------------------------------------------------------------------ steps
    def _spent(self) -> bool:
        """This invocation's time budget is used up."""
        budget = self.config.time_budget_s
        return budget is not None and time.perf_counter() - self._t_start >= budget

    def _batches(self) -> tuple[Iterator[tuple[int, SeriesBatch]], int]:
        """The current epoch's ``(index, batch)`` from batch ``skip`` on, and how many it has."""
        cfg, train, window = self.config, self.train, self.window
        epoch, skip = self.epoch, self.skip
        if cfg.carry_state:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            plan = train.lane_plan(cfg.batch_size, window, gen)
            lanes = ((i, train.gather(s, e, window, a)) for i, (s, e, a) in enumerate(plan))
            return ((i, b) for i, b in lanes if i >= skip), len(plan)
        bpe = train.batches_per_epoch(cfg.batch_size, cfg.seq_len)

        def sampled() -> Iterator[tuple[int, SeriesBatch]]:
            # One generator per step: a resumed run draws the very windows it would have.
            for i in range(skip, bpe):
                g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * bpe + i)
                yield i, train.sample(cfg.batch_size, window, g)

        return sampled(), bpe

    def _step(self, batch: SeriesBatch) -> dict[str, torch.Tensor]:
        """One optimizer step (z's noise seeded by the step); the loss parts."""
        cfg = self.config
        zgen = torch.Generator(device=self.device).manual_seed(cfg.seed + 31 * self.step + 1)
        if cfg.carry_state:
            self.lstm_state = _reset_state(self.lstm_state, batch.first)
        self.lr = max(cfg.lr * cfg.lr_decay**self.step, cfg.min_lr)
        for group in self.opt.param_groups:
            group["lr"] = self.lr
        parts, new_state = train_step(
            self.model,
            self.opt,
            batch,
            state=self.lstm_state,
            sample_z=cfg.sample_z,
            grad_clip=cfg.grad_clip,
            generator=zgen,
            autocast=self.autocast,
        )
        self.lstm_state = new_state if cfg.carry_state else None
        self.sums.add(parts, batch)
        self.step += 1
        return parts

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss parts over every step of the held-out episodes (none without them)."""
        if self.held is None:
            return {}
        config = dataclasses.replace(self.config, seq_len=self.window)
        return evaluate(self.model, self.held, config, self.device)

    # ------------------------------------------------------------------ loop
    def fit(self) -> Path:
        cfg = self.config
        if not self.run.resume_verdict(
            step=self.step, epoch=self.epoch, epochs=cfg.epochs, finished=self.epoch >= cfg.epochs
        ):
            return self.run.path
        self.run.open_metrics(self.step, self._metrics_rows)
        self.model.train()
        self.lr = max(cfg.lr * cfg.lr_decay**self.step, cfg.min_lr)
        self._t_start = time.perf_counter()
        while self.epoch < cfg.epochs:
            started, steps0 = time.perf_counter(), self.step
            if not self._train_epoch():
                break
            self._end_of_epoch(time.perf_counter() - started, self.step - steps0)
            if self.epoch < cfg.epochs and self._spent():  # the epoch's end used the rest
                self.run.say(f"time budget reached {at_step(self.step, self.epoch - 1)}")
                break
        self.run.plot_curve(
            {"train loss": "train_total", "held-out loss": "heldout_total"},
            title="MDN-RNN loss (nll + weighted reward and done terms)",
        )
        return self.run.path

    def _train_epoch(self) -> bool:
        """The current epoch's batches from batch ``skip`` on; False when the time budget
        ran out within it (checkpoints/last is saved there, and a re-run continues)."""
        cfg = self.config
        resumed = self.skip and self._carry_sums is not None
        self.sums = _Sums.from_state(self._carry_sums, self.device) if resumed else _Sums()
        self.lstm_state = None
        if cfg.carry_state and self.skip and self._carry is not None:
            self.lstm_state = tuple(x.to(self.device) for x in self._carry)  # (1, B, H) each
        self._carry = self._carry_sums = None
        batches, total = self._batches()
        bar = tqdm(
            total=total,
            initial=self.skip,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            disable=not cfg.progress,
            leave=False,
            dynamic_ncols=True,
        )
        for i, batch in batches:
            parts = self._step(batch)
            self.skip = i + 1
            bar.update(1)
            # The clock every step (free; at log steps only, slow steps ran 4x over budget);
            # a device sync only at log steps and before a checkpoint.
            over_budget = self._spent() and self.skip < total
            saving = over_budget or bool(cfg.save_every and self.step % cfg.save_every == 0)
            if self.step % cfg.log_every == 0 or saving:
                value = float(parts["total"].detach())  # the one sync: NaN check and display
                self.run.stop_if_diverged(not math.isfinite(value), at_step(self.step, self.epoch))
                bar.set_postfix(nll=f"{float(parts['nll'].detach()):.4f}", lr=f"{self.lr:.2e}")
            if saving:
                self.save_state(self.run.last)  # mid-epoch: a re-run continues from here
            if over_budget:
                bar.close()
                self.run.say(f"time budget reached {at_step(self.step, self.epoch)}")
                return False
        bar.close()
        return True

    def _end_of_epoch(self, seconds: float, steps: int) -> None:
        """Score the epoch, log its row, keep the best and save checkpoints/last."""
        cfg = self.config
        train_means = self.sums.means()
        bad = not all(math.isfinite(v) for v in train_means.values())
        self.run.stop_if_diverged(bad, at_step(self.step, self.epoch))
        held_means = self.evaluate()
        self.epoch, self.skip = self.epoch + 1, 0
        score = held_means.get("total", train_means.get("total", math.inf))
        row = {
            "epoch": self.epoch,
            "lr": self.lr,
            **{f"train_{k}": v for k, v in train_means.items()},
            **{f"heldout_{k}": v for k, v in held_means.items()},
            "seconds": seconds,
            "seq_steps_per_s": steps * cfg.batch_size * self.window / seconds,
        }
        # Logged before saving: if killed in between, the resumed run drops and redoes it.
        self.run.log(self.step, **row)
        if score < self.best:
            self.best = score
            self.save_state(self.run.best)
        self.save_state(self.run.last)
        held_text = f", held-out nll {held_means['nll']:.4f}" if held_means else ""
        print(
            f"epoch {self.epoch}/{cfg.epochs}: train nll {train_means.get('nll', math.nan):.4f}"
            f"{held_text} ({seconds:.1f}s)",
            flush=True,
        )


def train_mdrnn(config: TrainMDNRNNConfig) -> Path:
    """Train (or resume training) an MDN-RNN; return the run folder (see module docstring)."""
    return run_trainer(MDNRNNTrainer, config)


def default_config(**overrides) -> TrainMDNRNNConfig:
    """The carracing preset with ``overrides`` (a convenience for notebooks and tests)."""
    return dataclasses.replace(TRAIN_MDNRNN_PRESETS["carracing"], **overrides)


def summarize(run_dir: Path) -> str:
    """A few lines: where a run's results are, how far it got and its losses."""
    return summarize_run(
        run_dir,
        scores=[("held-out nll:", "heldout_nll", "min"), ("train nll:", "train_nll", "min")],
    )
