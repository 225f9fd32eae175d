"""Whole-pipeline recipes: ``reproduce(config) -> root folder``.

``doom`` follows the paper's DoomTakeCover experiment: collect random-policy episodes
(a uniform random action held 1-10 frames) -> train V (z = 64) -> encode the series ->
train M (LSTM 512, done head with positives x10, seq len 500, truncated BPTT, lr decay)
-> evolve C only inside the dream (tau 1.15, 2100-step limit, popsize 64 x 16 rollouts,
the mean scored every 25 generations) -> score C in the dream and in the real game,
100 trials each.
``debug`` is the same pipeline on the tiny fake env with tiny sizes (tests, smoke runs).

One knob, ``scale``, shrinks the amounts (episodes, generations, evaluation rollouts and,
below 0.1, trials and training epochs) and never the architecture or the per-generation
settings. Every stage writes under ``root`` and resumes on a re-run (finished stages return
quickly), so the same command continues a killed recipe.

``budget="cpu"`` is a named recipe for a 2-core CPU: the whole Doom pipeline in about 90
minutes (:data:`CPU_BUDGET` gives every number and the README why). V, M and C then stop on
time budgets, so each stage's completion is recorded in ``root/stages.json``: a re-run skips
the finished stages instead of training them for another budget. ``popsize``, ``rollouts``
and ``dream_max_steps`` override the per-generation work of either budget.

Imports of the stages sit inside the functions: this module holds ``ReproduceConfig``,
which ``world-models reproduce --help`` reads without loading torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from world_models.core.config import Positional, override
from world_models.core.errors import ConfigError


@dataclass(frozen=True)
class ReproduceConfig:
    """Options of ``world-models reproduce``."""

    game: Annotated[Literal["doom", "debug"], Positional] = "doom"
    """Which recipe (the command's positional argument)."""
    root: Path | None = None
    """Folder for every stage's output (None: runs/reproduce-<game>)."""
    scale: float = 1.0
    """Multiplies the amounts: episodes (10,000), generations (2,000), evaluation rollouts
    (1,024); trials (100) and V's and M's epochs shrink only below 0.1. 1.0 = the
    original's amounts."""
    device: str | None = None
    """cpu, cuda, ...; None picks CUDA when present."""
    workers: int = 0
    """Worker processes for collection and real-env evaluation (0: all cores)."""
    seed: int = 0
    """Base seed of every stage."""
    budget: Literal["paper", "cpu", "session"] = "paper"
    """paper: the original's settings times scale; cpu: the 2-core recipe of 2026-12-02
    (~90 minutes); session: the 2-core recipe of 2026-12-03 (<= 150 minutes: 4x the data, a
    shared-mixture M, CMA-ES 64 x 8, candidates chosen on real games). Both stop stages on
    time budgets; scale is ignored."""
    popsize: int | None = None
    """CMA-ES candidates per generation (None: the budget's: 64 paper, 32 cpu)."""
    rollouts: int | None = None
    """Dreams per candidate (None: the budget's: 16 paper, 8 cpu)."""
    dream_max_steps: int | None = None
    """Dream step cap while evolving (None: 2100, the original's)."""
    progress: bool = True
    """Show progress bars."""


CPU_BUDGET: dict[str, dict[str, Any]] = {
    # ~5 min: 1,000 random episodes (~316k frames) with 2 workers
    "collect": {"episodes": 1000},
    # 25 min: more steps than the paper's batch 100 at lr 1e-4 would give in the time
    "vae": {
        "batch_size": 64,
        "lr": 6e-4,
        "lr_scaling": "none",
        "epochs": 20,
        "time_budget_s": 25 * 60,
    },
    # 15 min: shorter windows and smaller batches give ~10x the optimizer steps per epoch
    "mdrnn": {
        "batch_size": 16,
        "seq_len": 200,
        "epochs": 200,
        "lr_decay": 1.0,
        "dropout": 0.1,
        "time_budget_s": 15 * 60,
    },
    # 30 min: sampled deaths and a calibrated offset make the dream kill (envs/dream.py
    # says why); tau 2.2 with dropout masks shrank the dream's "stand still" blind spot
    # most in docs/results-doom.md's sweep
    "controller": {
        "popsize": 32,
        "rollouts": 8,
        "generations": 1000,
        "eval_every": 10,
        "eval_rollouts": 128,
        "done_mode": "sample",
        "tau": 2.2,
        "dream_dropout": True,
        "time_budget_s": 30 * 60,
    },
    "evaluate": {"trials": 100},
}
"""The named 2-core CPU recipe of ``reproduce doom --budget cpu`` (a stage's fields)."""

SESSION_BUDGET: dict[str, dict[str, Any]] = {
    # ~9 min at ~2,300 frames/s on 2 workers (1.29M frames): M's epochs see 4x the
    # episodes of the cpu recipe, so it overfits later
    "collect": {"episodes": 4000},
    # 35 min (~250 img/s on an AVX2-only 2-core CPU, ~500 with native bf16): held-out recon
    # 5.8 after 6.3k steps; the frame cache holds 800k frames (~10 GB)
    "vae": {
        "batch_size": 64,
        "lr": 6e-4,
        "lr_scaling": "none",
        "epochs": 20,
        "max_frames": 800_000,
        "time_budget_s": 35 * 60,
    },
    # 35 min: one mixture choice per step keeps a dreamed frame one coherent scene
    # (docs/results-doom.md, session 4)
    "mdrnn": {
        "batch_size": 16,
        "seq_len": 200,
        "epochs": 200,
        "dropout": 0.1,
        "shared_mixture": True,
        "time_budget_s": 35 * 60,
    },
    # 20 min: the original's 64 candidates; 8 dreams each and a 1,000-step cap because 64 x
    # 16 x 2,100 steps is ~100 s per generation at this CPU's ~20k dream steps/s; the
    # mean is kept every 5 generations for the select stage
    "controller": {
        "popsize": 64,
        "rollouts": 8,
        "generations": 1000,
        "eval_every": 5,
        "eval_rollouts": 128,
        "dream_max_steps": 1000,
        "done_mode": "sample",
        "tau": 1.15,
        "dream_dropout": True,
        "time_budget_s": 20 * 60,
    },
    # ~5 min: 8 candidates x 8 real games (seeds 500,000 + i, apart from the test seeds)
    "select": {"candidates": 8, "games": 8},
    "evaluate": {"trials": 100},
}
"""The named 2-core recipe of ``reproduce doom --budget session`` (<= 150 min)."""

BUDGETS = {"cpu": CPU_BUDGET, "session": SESSION_BUDGET}
"""The time-budgeted recipes by name."""


def _amounts(
    scale: float, episodes: int, generations: int, eval_rollouts: int, trials: int
) -> dict[str, int]:
    if not scale > 0:
        raise ConfigError(f"scale must be > 0, got {scale}")
    return {
        "episodes": max(4, round(episodes * scale)),
        "generations": max(1, round(generations * scale)),
        "eval_rollouts": max(8, round(eval_rollouts * scale)),
        "trials": trials if scale >= 0.1 else max(4, round(trials * scale * 10)),
    }


def _epochs(scale: float, epochs: int) -> int:
    """Training epochs: as the preset says from scale 0.1 up; fewer below (at least 2, or 1
    below scale 0.01, where a run is a smoke test of the pipeline)."""
    return epochs if scale >= 0.1 else max(1 if scale < 0.01 else 2, round(epochs * scale * 10))


def stage_configs(config: ReproduceConfig) -> dict[str, Any]:
    """The config of every stage, in order: collect, vae, encode, mdrnn, controller,
    evaluate (real env), evaluate_dream."""
    from world_models.data.configs import COLLECT_PRESETS as COLLECT
    from world_models.data.configs import ENCODE_PRESETS as ENCODE
    from world_models.evaluation.evaluate import EvaluateConfig
    from world_models.training.configs import TRAIN_CONTROLLER_PRESETS as CONTROLLER
    from world_models.training.configs import TRAIN_MDNRNN_PRESETS as MDRNN
    from world_models.training.configs import TRAIN_VAE_PRESETS as VAE

    root = config.root or Path(f"runs/reproduce-{config.game}")
    cpu = config.budget in BUDGETS  # time-budgeted
    if config.budget not in ("paper", *BUDGETS):
        raise ConfigError(f"unknown budget {config.budget!r}; choose paper, {', '.join(BUDGETS)}")
    if config.game == "doom" and cpu:
        budget = BUDGETS[config.budget]
        n = {
            "episodes": budget["collect"]["episodes"],
            "generations": budget["controller"]["generations"],
            "eval_rollouts": budget["controller"]["eval_rollouts"],
            "trials": budget["evaluate"]["trials"],
        }
        env = "doom"
        collect = override(COLLECT["doom"], episodes=n["episodes"])
        vae = override(VAE["doom"], **budget["vae"])
        mdrnn = override(MDRNN["doom"], **budget["mdrnn"])
        controller = override(CONTROLLER["doom"], **budget["controller"])
        max_steps = None
    elif config.game == "doom":
        n = _amounts(config.scale, 10_000, 2_000, 1_024, 100)
        env = "doom"
        collect = override(COLLECT["doom"], episodes=n["episodes"])
        vae = VAE["doom"]
        mdrnn = MDRNN["doom"]
        controller = CONTROLLER["doom"]
        max_steps = None
    elif config.game == "debug":
        n = _amounts(config.scale, 8, 3, 8, 4)
        env = "fake-discrete"
        collect = override(COLLECT["debug"], env=env, episodes=n["episodes"], max_steps=30)
        vae = override(VAE["debug"], latent_size=8, holdout_fraction=0.25)
        mdrnn = override(
            MDRNN["debug"],
            latent_size=8,
            hidden_size=16,
            done_head=True,
            holdout_fraction=0.25,
            tensorboard=False,
        )
        controller = override(CONTROLLER["debug"], dream_max_steps=30)
        max_steps = 30
    else:
        raise ConfigError(f"unknown recipe {config.game!r}; choose doom or debug")
    common = {"progress": config.progress}
    stages: dict[str, Any] = {}
    stages["collect"] = override(
        collect, out_dir=root / "data", seed=config.seed, workers=config.workers, **common
    )
    per_gen = {
        k: v
        for k, v in (
            ("popsize", config.popsize),
            ("rollouts", config.rollouts),
            ("dream_max_steps", config.dream_max_steps),
        )
        if v is not None
    }
    controller = override(controller, **per_gen)
    scale = 1.0 if cpu else config.scale
    stages["vae"] = override(
        vae,
        epochs=_epochs(scale, vae.epochs),
        data_dir=root / "data",
        run_dir=root / "vae",
        device=config.device,
        seed=config.seed,
        **common,
    )
    vae_ckpt = root / "vae" / "checkpoints" / "best"
    stages["encode"] = override(
        ENCODE["doom"],
        data_dir=root / "data",
        vae=vae_ckpt,
        out_dir=root / "series",
        device=config.device,
        **common,
    )
    stages["mdrnn"] = override(
        mdrnn,
        epochs=_epochs(scale, mdrnn.epochs),
        series_dir=root / "series",
        run_dir=root / "mdrnn",
        device=config.device or "auto",
        seed=config.seed,
        **common,
    )
    stages["controller"] = override(
        controller,
        target="dream",
        env=env,
        mdrnn=root / "mdrnn" / "checkpoints" / "best",
        vae=vae_ckpt,
        series_dir=root / "series",
        data_dir=None,
        run_dir=root / "controller",
        generations=n["generations"],
        eval_rollouts=n["eval_rollouts"],
        eval_every=min(controller.eval_every, n["generations"]),
        device=config.device,
        seed=config.seed,
        **common,
    )
    stages["evaluate"] = override(
        EvaluateConfig(),
        controller=root / "controller" / "checkpoints" / "best",
        vae=vae_ckpt,
        mdrnn=root / "mdrnn" / "checkpoints" / "best",
        env=env,
        trials=n["trials"],
        seed=10**6 + config.seed,
        max_steps=max_steps,
        workers=config.workers,
        device=config.device,
        out_dir=root / "evaluation",
        **common,
    )
    if config.budget == "session":  # the candidates are chosen on real games
        from world_models.evaluation.configs import SelectConfig

        games = SESSION_BUDGET["select"] if config.game == "doom" else {"games": 2}
        # no best/worst videos: 100 recorded Doom games cost minutes the budget lacks
        stages["evaluate"] = override(stages["evaluate"], video="none")
        stages["select"] = override(
            SelectConfig(),
            run_dir=root / "controller",
            vae=vae_ckpt,
            mdrnn=root / "mdrnn" / "checkpoints" / "best",
            env=env,
            max_steps=max_steps or 2100,
            workers=config.workers,
            device=config.device,
            progress=config.progress,
            **games,
        )
        stages["evaluate_random"] = override(
            stages["evaluate"], policy="random", controller=None, out_dir=root / "eval-random"
        )
    # the paper reports both: the score in the dream C was trained in, and the real one
    stages["evaluate_dream"] = override(
        stages["evaluate"],
        target="dream",
        series_dir=root / "series",
        dream=stages["controller"].dream,
        out_dir=root / "evaluation-dream",
    )
    return stages


class _Stages:
    """Which stages have finished (``stages.json``: name -> seconds it took), so a re-run
    of a time-budgeted recipe skips them rather than training another budget."""

    def __init__(self, path: Path) -> None:
        import json

        self.path = path
        self.done: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}

    def run(self, name: str, work: Callable[[], Any], log: Callable[[str], None]) -> None:
        import time

        from world_models.core.atomic import atomic_write_json

        if name in self.done:
            log(f"      {name}: finished earlier ({self.done[name]:.0f} s), skipped")
            return
        t0 = time.perf_counter()
        work()
        self.done[name] = round(time.perf_counter() - t0, 1)
        log(f"      {name}: {self.done[name]:.0f} s")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, self.done)


def _calibrate(ctrl, path: Path, log: Callable[[str], None]) -> None:
    """Write ``path``: the done offset at which the random policy survives in M's dream as
    long as in the collected data (see :func:`world_models.envs.dream.calibrate_done_offset`)."""
    from world_models.core.atomic import atomic_write_json
    from world_models.evaluation.fidelity import FidelityConfig, calibrate
    from world_models.evaluation.fidelity import dream_for as make_dream

    fc = FidelityConfig(
        vae=ctrl.vae,
        mdrnn=ctrl.mdrnn,
        env=ctrl.env,
        series_dir=ctrl.series_dir,
        data_dir=None,
        dream=ctrl.dream,
        seed=ctrl.seed,
        device=ctrl.device,
    )
    dream, mode = make_dream(fc)
    result = calibrate(dream, fc, mode)
    log(
        f"      done offset {result['done_offset']:+.3f}: random survives "
        f"{result['dream_length']:.0f} dream steps, {result['data_length']:.0f} in the data"
    )
    atomic_write_json(path, result)


def _best_or_last(run: Path) -> Path:
    best = run / "checkpoints" / "best"
    return best if best.exists() else run / "checkpoints" / "last"


def reproduce(config: ReproduceConfig, log: Callable[[str], None] = print) -> Path:
    """Run every stage in order (each resumes); return the root folder."""
    from world_models.data.collect import collect
    from world_models.data.encode import encode
    from world_models.evaluation.evaluate import evaluate, summarize
    from world_models.training.controller import train_controller
    from world_models.training.mdrnn import train_mdrnn
    from world_models.training.vae import train_vae

    stages = stage_configs(config)
    root = stages["collect"].out_dir.parent
    done = _Stages(root / "stages.json")
    log(f"[1/6] collect {stages['collect'].episodes} episodes -> {stages['collect'].out_dir}")
    done.run("collect", lambda: collect(stages["collect"]), log)
    log(f"[2/6] train V -> {stages['vae'].run_dir}")
    done.run("vae", lambda: train_vae(stages["vae"]), log)
    vae_ckpt = _best_or_last(stages["vae"].run_dir)
    log(f"[3/6] encode -> {stages['encode'].out_dir}")
    done.run("encode", lambda: encode(override(stages["encode"], vae=vae_ckpt)), log)
    log(f"[4/6] train M -> {stages['mdrnn'].run_dir}")
    done.run("mdrnn", lambda: train_mdrnn(stages["mdrnn"]), log)
    m_ckpt = _best_or_last(stages["mdrnn"].run_dir)
    ctrl = override(stages["controller"], mdrnn=m_ckpt, vae=vae_ckpt)
    if config.budget in BUDGETS:  # the dream's death rate matched to the data's (envs/dream.py)
        path = root / "calibration.json"
        done.run("calibrate", lambda: _calibrate(ctrl, path, log), log)
        offset = json.loads(path.read_text())["done_offset"]
        ctrl = override(ctrl, done_offset=offset)
    log(f"[5/6] evolve C in the dream for {ctrl.generations} generations -> {ctrl.run_dir}")
    done.run("controller", lambda: train_controller(ctrl), log)
    c_ckpt = _best_or_last(ctrl.run_dir)
    if "select" in stages:
        from world_models.evaluation.select import select_controller

        sel = override(stages["select"], vae=vae_ckpt, mdrnn=m_ckpt)
        log(f"      choose among the kept means on {sel.games} real games each")
        done.run("select", lambda: select_controller(sel), log)
        c_ckpt = ctrl.run_dir / "checkpoints" / "selected"
    ev = override(stages["evaluate"], controller=c_ckpt, vae=vae_ckpt, mdrnn=m_ckpt)
    log(f"[6/6] evaluate in the dream and the real env, {ev.trials} trials each")
    dream_ev = override(
        stages["evaluate_dream"],
        controller=c_ckpt,
        vae=vae_ckpt,
        mdrnn=m_ckpt,
        dream=ctrl.dream,
    )
    done.run("evaluate_dream", lambda: log(summarize(evaluate(dream_ev))), log)
    done.run("evaluate", lambda: log(summarize(evaluate(ev))), log)
    if "evaluate_random" in stages:  # the baseline, same command and seeds
        rand = override(stages["evaluate_random"], vae=vae_ckpt, mdrnn=m_ckpt)
        done.run("evaluate_random", lambda: log(summarize(evaluate(rand))), log)
    return ctrl.run_dir.parent
