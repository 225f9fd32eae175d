"""Train V: ``train_vae(config) -> run folder``.

Speed comes from the data path, not tricks in the loss: frames stay uint8 until they are on
the device (:class:`~world_models.data.sources.FrameSource`, resident on the GPU when it
fits), bf16 autocast and channels_last on the GPU, optional ``torch.compile``, and no
host-device sync in the step (losses are accumulated on the device and read every
``log_every`` steps). Re-running the same command resumes from ``checkpoints/last``.

The run folder, the resume verdict, metrics, the NaN stop, the loss curve and the summary
are the shared :class:`~world_models.training.runs.TrainingRun` skeleton's; under torchrun
its rank 0 alone opens the folder and decides. This module keeps what is V's own: the
model and fused Adam, the frame sources, the step-based loop (warm-up, time budget and
checkpoints by rank 0's clock, mid-epoch resume), held-out scores and the pictures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from world_models.core.checkpoint import load_state_strict, read_checkpoint, read_optimizer_state
from world_models.core.errors import CheckpointError, DataError
from world_models.core.media import save_grid, save_reconstruction_grid
from world_models.data import store
from world_models.data.sources import FrameSource
from world_models.models.vae import ConvVAE
from world_models.models.world_model import ENV_KEY
from world_models.training import distributed
from world_models.training.configs import TrainVAEConfig
from world_models.training.runs import (
    RNG_KEY,
    RUN_OUTPUTS,
    Trainer,
    TrainingRun,
    at_step,
    rng_state,
    run_trainer,
    set_rng_state,
    summarize_run,
)

WINDOW_KEY = "world_models_log_window"
"""Key, in a mid-epoch checkpoint's optimizer state, of the loss sums since the last metrics
row: the resumed run's next row averages the same steps as an uninterrupted run's."""


@dataclass
class TrainerState:
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    images_seen: int = 0
    best_holdout: float = math.inf
    finished: bool = False


def effective_lr(config: TrainVAEConfig, world_size: int = 1) -> float:
    ratio = config.batch_size * world_size / config.lr_reference_batch
    factor = {"sqrt": math.sqrt(ratio), "linear": ratio, "none": 1.0}[config.lr_scaling]
    return config.lr * factor


def _auto_amp(device: torch.device) -> bool:
    if device.type == "cuda":
        return True
    try:  # bf16 on a CPU without native support is slower than fp32
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class VAETrainer(Trainer):
    """V's trainer: fused Adam on the ConvVAE over the frame sources, step by step."""

    def __init__(self, config: TrainVAEConfig, hold: contextlib.ExitStack | None = None) -> None:
        """``hold`` keeps rank 0's lock on the run folder until the caller closes it."""

        self.config = config
        self.dist, self.device = distributed.setup(config.device)
        self.run = TrainingRun(
            config,
            hold=hold,
            dist=self.dist,
            device=self.device,
            advice="Lower --lr (or raise --warmup-steps)",
        )
        self._cudnn_benchmark = torch.backends.cudnn.benchmark
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick each conv's kernel once
        self.amp = _auto_amp(self.device) if config.amp is None else config.amp
        self.channels_last = config.channels_last
        self.train_src = FrameSource(
            config.data_dir,
            "train",
            config.holdout_fraction,
            self.device,
            config.max_frames,
            cache_dir=config.cache_dir,
        )
        manifest = store.read_manifest(config.data_dir) or {}
        self.env = manifest.get("env") if isinstance(manifest.get("env"), str) else None
        episodes = store.list_episodes(config.data_dir)
        if episodes and not store.split_episodes(episodes, "holdout", config.holdout_fraction):
            raise DataError(
                f"{config.data_dir}: no held-out episodes at holdout_fraction="
                f"{config.holdout_fraction}; collect more episodes or raise --holdout-fraction"
            )
        self.hold_src = FrameSource(
            config.data_dir,
            "holdout",
            config.holdout_fraction,
            self.device,
            cache_dir=config.cache_dir,
        )
        self.per_epoch = self.train_src.num_frames // (config.batch_size * self.dist.world_size)
        if self.per_epoch == 0:
            raise DataError(
                f"{config.data_dir}: {self.train_src.num_frames} training frames are fewer than "
                f"one batch of {config.batch_size * self.dist.world_size}; lower --batch-size"
            )
        torch.manual_seed(config.seed)
        self.model = ConvVAE.from_config(dataclasses.replace(config.model, uint8_input=True))
        self.model.check_inputs = False  # FrameSource yields valid uint8; skip the sync
        self.model.to(self.device)
        if self.channels_last:  # before the optimizer state exists, which follows its layout
            self.model.to(memory_format=torch.channels_last)
        self.lr = effective_lr(config, self.dist.world_size)
        self.opt = self._adam()
        self.state = TrainerState()
        self._window: dict | None = None  # loss sums since the last row, while saving
        self._resumed_window: dict | None = None
        self._metrics_rows = None  # rows logged when the checkpoint resumed from was saved
        if self.run.resuming:
            self.load_state()
        self.net: torch.nn.Module = self.model
        if self.dist.enabled:
            self.net = DDP(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None
            )
        self.step_fn = torch.compile(self._step) if config.compile else self._step
        # Fixed pictures, so every epoch's grids show the same frames and the same z.
        self.fixed_frames = self.hold_src.sample(8, seed=config.seed)
        # the run starts: its config.json is written
        self.run.open_metrics(self.state.step, self._metrics_rows)

    # ------------------------------------------------------------------ state
    def _adam(self) -> torch.optim.Adam:
        params = list(self.model.parameters())
        if self.device.type == "cuda":
            try:  # one kernel for every parameter instead of several per tensor
                return torch.optim.Adam(params, lr=self.lr, fused=True)
            except (TypeError, RuntimeError):  # an old torch, or no fused kernel for these
                pass
        return torch.optim.Adam(params, lr=self.lr)

    def _load_optimizer(self, state: dict, source: str) -> None:
        """Adam's saved moments, checked against this model's parameters (a run of another
        latent size has the same number of tensors, with other shapes)."""
        try:
            # Keep this run's kernel choice: a checkpoint may come from another device.
            for saved, ours in zip(state["param_groups"], self.opt.param_groups):
                saved.update({k: ours[k] for k in ("fused", "foreach", "capturable") if k in ours})
            self.opt.load_state_dict(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{source}: optimizer.pt does not fit this model ({exc})"
            ) from None
        for p, moments in self.opt.state.items():
            for k, v in moments.items():
                if not torch.is_tensor(v) or v.dim() == 0:
                    continue  # the step count
                if v.shape != p.shape:
                    raise CheckpointError(
                        f"{source}: optimizer.pt holds {k} of shape {tuple(v.shape)} for a "
                        f"parameter of shape {tuple(p.shape)}; it was saved by another model"
                    )
                if v.stride() != p.stride():  # fused kernels walk both as flat memory
                    moments[k] = torch.empty_like(p).copy_(v)

    def load_state(self) -> None:
        ckpt = read_checkpoint(self.run.last, expected_kind="ConvVAE", device=self.device)
        if ckpt.config != dataclasses.asdict(self.model.config):
            raise CheckpointError(
                f"checkpoint {ckpt.path} is of another model config ({ckpt.config}) than "
                f"this run ({dataclasses.asdict(self.model.config)})"
            )
        load_state_strict(self.model, ckpt.tensors, f"checkpoint {ckpt.path}")
        opt_state = read_optimizer_state(ckpt.path)
        if opt_state is not None:
            rng = opt_state.pop(RNG_KEY, None)
            window = opt_state.pop(WINDOW_KEY, None)
            if isinstance(window, dict) and not self.dist.enabled:  # rank 0's sums only
                self._resumed_window = window
            self._load_optimizer(opt_state, f"checkpoint {ckpt.path}")
            set_rng_state(rng, self.device)  # z's noise goes on where it stopped
        trainer = ckpt.meta.get("trainer", {})
        self._metrics_rows = ckpt.meta.get("metrics_rows")
        self.state = TrainerState(
            **{k: trainer[k] for k in trainer if k in TrainerState.__dataclass_fields__}
        )

    def save_state(self, where: Path) -> None:
        if not self.dist.is_main:
            return
        state = dataclasses.asdict(self.state)
        if math.isinf(state["best_holdout"]):
            state["best_holdout"] = 1e30  # JSON has no infinity
        self.model.save_pretrained(
            where,
            step=self.state.step,
            optimizer_state={
                **self.opt.state_dict(),
                RNG_KEY: rng_state(self.device),
                **({WINDOW_KEY: self._window} if self._window else {}),
            },
            meta={
                "trainer": state,
                "run_dir": str(self.run.path),
                "metrics_rows": self.run.rows_logged,
                **({ENV_KEY: self.env} if self.env else {}),  # later commands check it
            },
        )

    # ------------------------------------------------------------------ steps
    def _lr_at(self, step: int) -> float:
        w = self.config.warmup_steps
        return self.lr * min(1.0, (step + 1) / w) if w > 0 else self.lr

    def _step(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            recon, mu, logvar = self.net(x)
            total, rec, kl = self.model.compute_loss(x, recon, mu, logvar, self.config.beta)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        return total.detach(), rec.detach(), kl.detach()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out loss in eval mode (z = mu, running BatchNorm stats), frame-weighted."""
        self.model.eval()
        sums = torch.zeros(3, device=self.device)
        n = 0
        for x in self.hold_src.batches(512, shuffle=False, drop_last=False):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                recon, mu, logvar = self.model(x)
                parts = self.model.compute_loss(x, recon, mu, logvar, self.config.beta)
            sums += torch.stack(parts) * x.shape[0]
            n += x.shape[0]
        self.model.train()
        total, rec, kl = (sums / max(n, 1)).tolist()
        return {"holdout_loss": total, "holdout_recon": rec, "holdout_kl": kl}

    # ------------------------------------------------------------------ loop
    def _train_batches(self, epoch: int, start: int) -> Iterator[torch.Tensor]:
        """This rank's batches of ``epoch`` (order fixed by seed and epoch) from batch
        ``start`` on: a mid-epoch resume gathers none of the batches it skips."""
        return self.train_src.batches(
            self.config.batch_size,
            seed=self.config.seed * 100_003 + epoch,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            start=start,
        )

    def _clock(self, t_start: float, last_ckpt: float, at_log: bool) -> tuple[bool, bool]:
        """(time budget spent, checkpoint due) by rank 0's clock. Both lead into collectives,
        so under DDP every rank takes rank 0's answer, asked at log steps only (which sync
        anyway). A single process reads its clock every step; that costs nothing."""
        if self.dist.enabled and not at_log:
            return False, False
        now, budget = time.perf_counter(), self.config.time_budget_s
        flags = [budget is not None and now - t_start >= budget]
        flags.append(now - last_ckpt >= self.config.checkpoint_every_s)
        if self.dist.enabled:
            shared = torch.tensor(flags, dtype=torch.int32, device=self.device)
            flags = [bool(f) for f in self.dist.from_main(shared).tolist()]
        return flags[0], flags[1]

    def fit(self) -> Path:

        cfg, st = self.config, self.state
        per_epoch = self.per_epoch
        total_steps = per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)
        if not self.run.resume_verdict(
            step=st.step,
            epoch=st.epoch,
            epochs=cfg.epochs,
            finished=st.epoch >= cfg.epochs or st.step >= total_steps,
            raise_flags=("--epochs", "--max-steps"),
        ):
            return self.run.path
        if self.dist.is_main and st.step == 0:
            self.write_pictures("init")
        t_start = last_ckpt = time.perf_counter()
        bar = tqdm(
            total=total_steps,
            initial=st.step,
            unit="step",
            disable=not (cfg.progress and self.dist.is_main),
            dynamic_ncols=True,
        )
        stop = False
        while st.epoch < cfg.epochs and not stop:
            sums = torch.zeros(3, device=self.device)
            bad = torch.zeros((), dtype=torch.bool, device=self.device)
            since, t_log = 0, time.perf_counter()
            if self._resumed_window is not None:  # mid-epoch: the steps since the last row
                sums += self._resumed_window["sums"].to(self.device)
                since, self._resumed_window = int(self._resumed_window["since"]), None
            for x in self._train_batches(st.epoch, st.batch_in_epoch):
                for group in self.opt.param_groups:
                    group["lr"] = self._lr_at(st.step)
                parts = torch.stack(self.step_fn(x))
                sums += parts
                bad |= ~torch.isfinite(parts).all()
                st.step += 1
                st.batch_in_epoch += 1
                st.images_seen += x.shape[0] * self.dist.world_size
                since += 1
                stop = st.step >= total_steps
                at_log = st.step % cfg.log_every == 0 or stop
                over_budget, ckpt_due = self._clock(t_start, last_ckpt, at_log)
                stop = stop or over_budget
                if at_log or stop:
                    self.run.stop_if_diverged(bad, at_step(st.step, st.epoch))
                    mean = (self.dist.mean(sums) / since).tolist()
                    now = time.perf_counter()  # after the syncs above: the GPU's work is done
                    ips = since * x.shape[0] * self.dist.world_size / (now - t_log)
                    self.run.log(
                        st.step,
                        epoch=st.epoch,
                        loss=mean[0],
                        recon=mean[1],
                        kl=mean[2],
                        lr=self.opt.param_groups[0]["lr"],
                        img_per_s=round(ips, 1),
                    )
                    bar.set_postfix(loss=f"{mean[0]:.1f}", img_s=f"{ips:,.0f}")
                    sums.zero_()
                    since, t_log = 0, now
                bar.update(1)
                if ckpt_due and not stop:
                    self.run.stop_if_diverged(bad, f"before the checkpoint {at_step(st.step)}")
                    if since:
                        self._window = {"sums": sums.detach().cpu(), "since": since}
                    self.save_state(self.run.last)
                    self._window = None
                    last_ckpt = time.perf_counter()
                if stop:
                    break
            epoch_done = not stop or st.batch_in_epoch >= per_epoch
            self.run.stop_if_diverged(bad, at_step(st.step, st.epoch))
            if epoch_done:
                st.epoch += 1
                st.batch_in_epoch = 0
            self._end_of_epoch(epoch_done)
            last_ckpt = time.perf_counter()
        st.finished = st.epoch >= cfg.epochs or st.step >= total_steps
        bar.close()
        self.save_state(self.run.last)
        return self.run.path

    def _end_of_epoch(self, epoch_done: bool) -> None:
        scores = self.evaluate()
        # Every rank checks (a collective), each with its own identical scores.
        bad = torch.tensor(not math.isfinite(scores["holdout_loss"]), device=self.device)
        self.run.stop_if_diverged(bad, f"on held-out data {at_step(self.state.step)}")
        if self.dist.is_main:
            self.run.log(self.state.step, epoch=self.state.epoch, **scores)
            if scores["holdout_loss"] < self.state.best_holdout:
                self.state.best_holdout = scores["holdout_loss"]
                self.save_state(self.run.best)
            self.save_state(self.run.last)
            if epoch_done and (self.state.epoch % self.config.image_every == 0):
                self.write_pictures(f"epoch{self.state.epoch:03d}")
            self.run.plot_curve(
                {"train loss": "loss", "held-out loss": "holdout_loss"},
                title="ConvVAE loss (reconstruction + beta * KL)",
            )

    def write_pictures(self, tag: str) -> None:

        self.model.eval()
        with torch.no_grad():
            recon, _, _ = self.model(self.fixed_frames)
            gen = torch.Generator().manual_seed(self.config.seed)
            z = torch.randn(16, self.model.latent_size, generator=gen).to(self.device)
            save_reconstruction_grid(
                self.fixed_frames, recon, self.run.images / f"reconstructions_{tag}.png"
            )
            save_grid(self.model.decode(z), self.run.images / f"samples_{tag}.png", nrow=8)
        self.model.train()

    def close(self) -> None:
        self.run.close()
        # DDP holds the process group, and self.step_fn (a bound method) makes a cycle that
        # only the garbage collector frees: left to interpreter exit, gloo's threads die
        # there and abort the process ("terminate called without an active exception").
        self.net = self.step_fn = None  # type: ignore[assignment]
        gc.collect()
        distributed.teardown(self.dist)
        torch.backends.cudnn.benchmark = self._cudnn_benchmark  # as the caller had it


def train_vae(config: TrainVAEConfig) -> Path:
    """Train (or resume) a ConvVAE run; return the run folder.

    The folder holds ``checkpoints/{last,best}`` (ConvVAE checkpoints with optimizer and
    trainer state), ``metrics.csv``/``metrics.jsonl``, ``images/`` and ``loss_curve.png``.
    """
    return run_trainer(VAETrainer, config)


def summarize(run_dir: Path) -> str:
    """A few lines: where a run's results are, how far it got and its losses."""
    return summarize_run(
        run_dir,
        scores=[("held-out loss:", "holdout_loss", "min"), ("train loss:", "loss", "min")],
        outputs=[*RUN_OUTPUTS, ("pictures:", "images/")],
    )
