"""Whole-pipeline recipes: ``reproduce(config) -> root folder``.

A recipe is data: :func:`recipe` returns its :class:`Stage` records in order (name, config,
what it reads and writes), and :func:`reproduce` runs them, numbering them ``[k/N]`` and
recording each one's wall time in ``root/stages.json`` once it has finished, so a re-run
skips the finished stages and resumes the one a kill interrupted (every stage resumes).

* ``doom`` follows the paper's DoomTakeCover experiment: collect random-policy episodes
  (a uniform random action held 1-10 frames) -> train V (z = 64) -> encode the series ->
  train M (LSTM 512, done head with positives x10, seq len 500, truncated BPTT, lr decay)
  -> evolve C only inside the dream (tau 1.15, 2100-step limit, popsize 64 x 16 rollouts,
  the mean scored every 25 generations) -> score C in the dream and in the real game,
  100 trials each.
* ``carracing`` follows the paper's CarRacing experiment: Brownian random-policy episodes
  -> V (z = 32) -> encode -> M (LSTM 256, 5 Gaussians) -> C on [z, h] (867 weights)
  evolved by CMA-ES in the real env (envpool's when installed) -> scored on Gymnasium's
  CarRacing-v3, 100 tracks; ``--z-only`` evolves the paper's "V model only" C on z alone
  beside it (same data, V and M).
* ``debug`` is the Doom pipeline on the tiny fake env with tiny sizes (tests, smoke runs).

``budget``: ``paper`` takes the original's amounts times ``scale`` (which never shrinks the
architecture or the per-generation settings); ``cpu`` and ``session`` are named recipes
for a 2-core CPU (:data:`CPU_BUDGET`, :data:`SESSION_BUDGET`,
:data:`CARRACING_CPU_BUDGET` give every number and why), whose V, M and C stop on time
budgets. ``popsize``, ``rollouts`` and ``dream_max_steps`` override the per-generation
work of any budget.

Imports of the stages sit inside the functions: this module holds ``ReproduceConfig``,
which ``world-models reproduce --help`` reads without loading torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

from world_models.core.config import Positional, override
from world_models.core.errors import ConfigError
from world_models.core.layout import Layout


@dataclass(frozen=True)
class ReproduceConfig:
    """Options of ``world-models reproduce``."""

    game: Annotated[Literal["doom", "carracing", "debug"], Positional] = "doom"
    """Which recipe (the command's positional argument)."""
    root: Path | None = None
    """Folder for every stage's output (None: runs/reproduce-<game>)."""
    scale: float = 1.0
    """Multiplies the amounts: episodes (10,000), generations (2,000; CarRacing 1,800),
    evaluation rollouts (1,024); trials (100) and V's and M's epochs shrink only below 0.1.
    1.0 = the original's amounts."""
    device: str | None = None
    """cpu, cuda, ...; None picks CUDA when present."""
    workers: int = 0
    """Worker processes for collection and real-env evaluation (0: all cores)."""
    seed: int = 0
    """Base seed of every stage."""
    budget: Literal["paper", "cpu", "session"] = "paper"
    """paper: the original's settings times scale; cpu: the 2-core recipe (Doom: that of
    2026-12-02, ~90 minutes; CarRacing: <= 150 minutes, C in the real env); session: the
    2-core Doom recipe of 2026-12-03 (<= 150 minutes: 4x the data, a shared-mixture M,
    CMA-ES 64 x 8, candidates chosen on real games). These stop stages on time budgets;
    scale is ignored."""
    z_only: bool = False
    """Evolve C on z alone (the paper's "V model only" row) into controller-z/ and score it
    into evaluation-z/, reusing the data, V and M of the same root."""
    popsize: int | None = None
    """CMA-ES candidates per generation (None: the budget's)."""
    rollouts: int | None = None
    """Episodes (dreams or real) per candidate (None: the budget's)."""
    dream_max_steps: int | None = None
    """Dream step cap while evolving (None: the budget's; 2100, the original's)."""
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


CARRACING_CPU_BUDGET: dict[str, dict[str, Any]] = {
    # ~3 min with envpool (~2,750 frames/s on 2 threads): 400 Brownian-policy tracks,
    # 400k frames (the original: 10,000 tracks, beyond this CPU's V budget anyway)
    "collect": {"episodes": 400, "backend": "auto"},
    # 18 min (~250 img/s on an AVX2-only 2-core CPU): about 0.65 of a pass over the frames.
    # Cut from 25 min on 2026-12-04, with M's 15: C's curve was still rising at 65 min
    "vae": {
        "batch_size": 64,
        "lr": 6e-4,
        "lr_scaling": "none",
        "epochs": 20,
        "time_budget_s": 18 * 60,
    },
    # 12 min at ~32,750 seq-steps/s: windows of 200 and batches of 16 give ~7k steps
    "mdrnn": {"batch_size": 16, "seq_len": 200, "epochs": 500, "time_budget_s": 12 * 60},
    # 78 min in the real env (~80 generations): 16 candidates x 2 tracks (the same two for
    # all candidates of a generation), episodes cut after 100 steps without a new tile, the
    # mean scored on 16 fixed tracks every 10 generations
    "controller": {
        "popsize": 16,
        "rollouts": 2,
        "generations": 1000,
        "eval_every": 10,
        "eval_rollouts": 16,
        "stall_steps": 100,
        "env_backend": "auto",
        "time_budget_s": 78 * 60,
    },
    "evaluate": {"trials": 100},
}
"""The named 2-core recipe of ``reproduce carracing --budget cpu`` (<= 150 min)."""

BUDGETS = {"cpu": CPU_BUDGET, "session": SESSION_BUDGET}
"""The time-budgeted Doom recipes by name."""


@dataclass(frozen=True)
class Stage:
    """One step of a recipe: what :func:`reproduce` runs, logs and times."""

    name: str
    """Its key in stages.json (its wall seconds, once finished)."""
    says: str
    """What the log line that starts it says."""
    config: Any
    """Its config, every path under the recipe's root."""
    run: Callable[[Any, Callable[[str], None]], Any]
    """``run(config, log)``: does the stage's work (each resumes on a re-run)."""
    inputs: tuple[Path, ...] = ()
    """What it reads (earlier stages' outputs)."""
    outputs: tuple[Path, ...] = ()
    """What it writes."""
    prepare: Callable[[Any], Any] | None = None
    """Fills in, when the stage starts, what earlier stages decided (the checkpoint that
    exists, the calibrated done offset)."""


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


def _mdrnn_batch(scale: float, batch: int, episodes: int) -> int:
    """M's batch: the preset's from scale 0.1 up; below, at most a quarter of the episodes
    (train-mdrnn refuses a batch of more windows than its series hold, and an episode
    shorter than a window is one: 100 lanes of 500 steps do not fit 10 Doom episodes)."""
    return batch if scale >= 0.1 else max(1, min(batch, episodes // 4))


@dataclass
class _Game:
    """One game's stage settings before the paths: presets with the budget applied."""

    env: str
    collect: Any
    vae: Any
    encode: Any
    mdrnn: Any
    controller: Any
    n: dict[str, int]
    max_steps: int | None = None
    timed: bool = False  # stages stop on time budgets (scale is ignored)
    select: dict[str, Any] | None = None  # choose C on real games: SelectConfig fields


def _game(config: ReproduceConfig) -> _Game:
    from world_models.data.configs import COLLECT_PRESETS as COLLECT
    from world_models.data.configs import ENCODE_PRESETS as ENCODE
    from world_models.training.configs import TRAIN_CONTROLLER_PRESETS as CONTROLLER
    from world_models.training.configs import TRAIN_MDNRNN_PRESETS as MDRNN
    from world_models.training.configs import TRAIN_VAE_PRESETS as VAE

    if config.budget not in ("paper", *BUDGETS):
        raise ConfigError(f"unknown budget {config.budget!r}; choose paper, {', '.join(BUDGETS)}")
    game = config.game
    if game not in ("doom", "carracing", "debug"):
        raise ConfigError(f"unknown recipe {game!r}; choose doom, carracing or debug")
    budget: dict[str, dict[str, Any]] | None = None
    if config.budget != "paper" and game != "debug":
        if game == "carracing" and config.budget != "cpu":
            raise ConfigError("the carracing recipe has budgets paper and cpu")
        budget = CARRACING_CPU_BUDGET if game == "carracing" else BUDGETS[config.budget]
    preset = "doom" if game == "debug" else game
    if budget is not None:
        n = {
            "episodes": budget["collect"]["episodes"],
            "generations": budget["controller"]["generations"],
            "eval_rollouts": budget["controller"]["eval_rollouts"],
            "trials": budget["evaluate"]["trials"],
        }
        return _Game(
            env=game,
            collect=override(COLLECT[game], **budget["collect"]),
            vae=override(VAE[game], **budget["vae"]),
            encode=ENCODE[preset],
            mdrnn=override(MDRNN[game], **budget["mdrnn"]),
            controller=override(CONTROLLER[game], **budget["controller"]),
            n=n,
            timed=True,
            select=budget.get("select"),
        )
    if game == "debug":
        env = "fake-discrete"
        return _Game(
            env=env,
            collect=override(COLLECT["debug"], env=env, max_steps=30),
            vae=override(VAE["debug"], latent_size=8, holdout_fraction=0.25),
            encode=ENCODE["doom"],
            mdrnn=override(
                MDRNN["debug"],
                latent_size=8,
                hidden_size=16,
                done_head=True,
                holdout_fraction=0.25,
                tensorboard=False,
            ),
            controller=override(CONTROLLER["debug"], dream_max_steps=30),
            n=_amounts(config.scale, 8, 3, 8, 4),
            max_steps=30,
            timed=config.budget != "paper",
            select={"games": 2} if config.budget == "session" else None,
        )
    generations = 1800 if game == "carracing" else 2000
    return _Game(
        env=game,
        collect=COLLECT[game],
        vae=VAE[game],
        encode=ENCODE[preset],
        mdrnn=MDRNN[game],
        controller=CONTROLLER[game],
        n=_amounts(config.scale, 10_000, generations, 1_024, 100),
    )


def _checkpoints_that_exist(config: Any) -> Any:
    """A ``.../checkpoints/best`` that a run did not write (no evaluation improved, or a
    run without held-out data) is replaced by its ``last``."""
    changes = {}
    for name in ("vae", "mdrnn", "controller"):
        path = getattr(config, name, None)
        if isinstance(path, Path) and path.name == "best" and not path.exists():
            changes[name] = path.with_name("last")
    return override(config, **changes) if changes else config


def _calibrated(layout: Layout) -> Callable[[Any], Any]:
    """Checkpoints that exist and the done offset of ``calibration.json``."""

    def prepare(config: Any) -> Any:
        config = _checkpoints_that_exist(config)
        offset = json.loads(layout.calibration.read_text())["done_offset"]
        return override(config, done_offset=offset)

    return prepare


def recipe(config: ReproduceConfig) -> list[Stage]:
    """The stages of ``config``'s recipe, in order (see the module docstring)."""
    g = _game(config)
    root = config.root or Path(f"runs/reproduce-{config.game}")
    at = Layout.under(root, "-z" if config.z_only else "")
    ctrl = _controller_config(config, g, at)
    stages = _world_model_stages(config, g, at)
    stages += _controller_stages(g, at, ctrl)
    select = _select_stage(config, g, at)
    c_ckpt = at.controller
    if select is not None:
        stages.append(select)
        c_ckpt = select.outputs[0]
    stages += _evaluate_stages(config, g, at, ctrl, c_ckpt)
    return stages


def _common(config: ReproduceConfig) -> dict[str, Any]:
    """Settings every stage takes from the recipe's own."""
    return {"progress": config.progress}


def _world_model_stages(config: ReproduceConfig, g: _Game, at: Layout) -> list[Stage]:
    """Collect, train V, encode, train M."""
    common = _common(config)
    scale = 1.0 if g.timed else config.scale
    return [
        Stage(
            "collect",
            f"collect {g.n['episodes']} episodes -> {at.data}",
            override(
                g.collect,
                episodes=g.n["episodes"],
                out_dir=at.data,
                seed=config.seed,
                workers=config.workers,
                **common,
            ),
            _collect,
            outputs=(at.data,),
        ),
        Stage(
            "vae",
            f"train V -> {at.vae_run}",
            override(
                g.vae,
                epochs=_epochs(scale, g.vae.epochs),
                data_dir=at.data,
                run_dir=at.vae_run,
                device=config.device,
                seed=config.seed,
                **common,
            ),
            _train_vae,
            (at.data,),
            (at.vae_run,),
        ),
        Stage(
            "encode",
            f"encode -> {at.series}",
            override(
                g.encode,
                data_dir=at.data,
                vae=at.vae,
                out_dir=at.series,
                device=config.device,
                **common,
            ),
            _encode,
            (at.data, at.vae),
            (at.series,),
            _checkpoints_that_exist,
        ),
        Stage(
            "mdrnn",
            f"train M -> {at.mdrnn_run}",
            override(
                g.mdrnn,
                epochs=_epochs(scale, g.mdrnn.epochs),
                batch_size=_mdrnn_batch(scale, g.mdrnn.batch_size, g.n["episodes"]),
                series_dir=at.series,
                run_dir=at.mdrnn_run,
                device=config.device or "auto",
                seed=config.seed,
                **common,
            ),
            _train_mdrnn,
            (at.series,),
            (at.mdrnn_run,),
        ),
    ]


def _controller_config(config: ReproduceConfig, g: _Game, at: Layout) -> Any:
    """C's training config: the game's, under the recipe's root, with the per-generation
    work the command overrides."""
    real_c = g.controller.target == "real"
    per_gen = {
        k: v
        for k, v in (
            ("popsize", config.popsize),
            ("rollouts", config.rollouts),
            ("dream_max_steps", config.dream_max_steps),
        )
        if v is not None
    }
    ctrl = override(
        g.controller,
        target="real" if real_c else "dream",
        env=g.env,
        mdrnn=at.mdrnn,
        vae=at.vae,
        series_dir=None if real_c else at.series,
        data_dir=None,
        run_dir=at.controller_run,
        generations=g.n["generations"],
        eval_rollouts=g.n["eval_rollouts"],
        eval_every=min(g.controller.eval_every, g.n["generations"]),
        device=config.device,
        seed=config.seed,
        **per_gen,
        **_common(config),
    )
    return override(ctrl, hidden_input=False) if config.z_only else ctrl


def _calibrates(g: _Game) -> bool:
    """Whether the recipe matches the dream's death rate to the data's before evolving C
    in the dream (the time-budgeted ones)."""
    return g.timed and g.controller.target != "real"


def _controller_prepare(g: _Game, at: Layout) -> Callable[[Any], Any]:
    """What C's stages fill in when they start: checkpoints that exist, and the calibrated
    done offset where the recipe calibrates."""
    return _calibrated(at) if _calibrates(g) else _checkpoints_that_exist


def _controller_stages(g: _Game, at: Layout, ctrl: Any) -> list[Stage]:
    """Calibrate the dream (time-budgeted dream recipes), then evolve C."""
    real_c = ctrl.target == "real"
    stages = []
    if _calibrates(g):
        stages.append(
            Stage(
                "calibrate",
                "calibrate the dream's done offset on the random policy",
                ctrl,
                partial(_calibrate, path=at.calibration),
                (at.vae, at.mdrnn, at.series),
                (at.calibration,),
                _checkpoints_that_exist,
            )
        )
    where = "the real env" if real_c else "the dream"
    stages.append(
        Stage(
            f"controller{at.suffix}",
            f"evolve C in {where} for {ctrl.generations} generations -> {at.controller_run}",
            ctrl,
            _train_controller,
            (at.vae, at.mdrnn) + (() if real_c else (at.series,)),
            (at.controller_run,),
            _controller_prepare(g, at),
        )
    )
    return stages


def _select_stage(config: ReproduceConfig, g: _Game, at: Layout) -> Stage | None:
    """Choose C among the kept means on real games (the game's select settings), or None."""
    from world_models.evaluation.configs import SelectConfig

    if g.select is None:
        return None
    sel = override(
        SelectConfig(),
        run_dir=at.controller_run,
        vae=at.vae,
        mdrnn=at.mdrnn,
        env=g.env,
        max_steps=g.max_steps or 2100,
        workers=config.workers,
        device=config.device,
        **g.select,
        **_common(config),
    )
    return Stage(
        f"select{at.suffix}",
        f"choose among the kept means on {sel.games} real games each",
        sel,
        _select,
        (at.controller_run,),
        (at.controller_run / "checkpoints" / "selected",),
        _checkpoints_that_exist,
    )


def _evaluate_stages(
    config: ReproduceConfig, g: _Game, at: Layout, ctrl: Any, c_ckpt: Path
) -> list[Stage]:
    """Score C (``c_ckpt``) in the dream (when it was evolved there) and in the real env,
    and the random data policy beside it (time-budgeted recipes)."""
    from world_models.evaluation.evaluate import EvaluateConfig

    real_c = ctrl.target == "real"
    evaluate = override(
        EvaluateConfig(),
        controller=c_ckpt,
        vae=at.vae,
        mdrnn=at.mdrnn,
        env=g.env,
        trials=g.n["trials"],
        seed=10**6 + config.seed,
        max_steps=g.max_steps,
        workers=config.workers,
        device=config.device,
        out_dir=at.evaluation,
        **_common(config),
    )
    if g.select is not None:  # no best/worst videos: minutes the session budget lacks
        evaluate = override(evaluate, video="none")
    models = (at.vae, at.mdrnn, c_ckpt)
    stages = []
    if not real_c:  # the paper reports both: the score in the dream C was trained in
        stages.append(
            Stage(
                f"evaluate_dream{at.suffix}",
                f"evaluate C in the dream, {evaluate.trials} trials",
                override(
                    evaluate,
                    target="dream",
                    series_dir=at.series,
                    dream=ctrl.dream,
                    out_dir=at.evaluation_dream,
                ),
                _evaluate,
                models + (at.series,),
                (at.evaluation_dream,),
                _controller_prepare(g, at),
            )
        )
    stages.append(
        Stage(
            f"evaluate{at.suffix}",
            f"evaluate C in the real env, {evaluate.trials} trials",
            evaluate,
            _evaluate,
            models,
            (at.evaluation,),
            _checkpoints_that_exist,
        )
    )
    if g.timed and not config.z_only:  # the baseline, same command and seeds
        stages.append(
            Stage(
                "evaluate_random",
                f"evaluate the random data policy in the real env, {evaluate.trials} trials",
                override(evaluate, policy="random", controller=None, out_dir=at.evaluation_random),
                _evaluate,
                (at.vae, at.mdrnn),
                (at.evaluation_random,),
                _checkpoints_that_exist,
            )
        )
    return stages


def stage_configs(config: ReproduceConfig) -> dict[str, Any]:
    """Each stage's config by name, in order (before :attr:`Stage.prepare`)."""
    return {s.name: s.config for s in recipe(config)}


# ------------------------------------------------------------------------------ stages


def _collect(config: Any, log: Callable[[str], None]) -> None:
    from world_models.data.collect import collect

    collect(config)


def _train_vae(config: Any, log: Callable[[str], None]) -> None:
    from world_models.training.vae import train_vae

    train_vae(config)


def _encode(config: Any, log: Callable[[str], None]) -> None:
    from world_models.data.encode import encode

    encode(config)


def _train_mdrnn(config: Any, log: Callable[[str], None]) -> None:
    from world_models.training.mdrnn import train_mdrnn

    train_mdrnn(config)


def _train_controller(config: Any, log: Callable[[str], None]) -> None:
    from world_models.training.controller import train_controller

    train_controller(config)


def _select(config: Any, log: Callable[[str], None]) -> None:
    from world_models.evaluation.select import select_controller, summarize

    log(summarize(select_controller(config)))


def _evaluate(config: Any, log: Callable[[str], None]) -> None:
    from world_models.evaluation.evaluate import evaluate, summarize

    log(summarize(evaluate(config)))


def _calibrate(ctrl: Any, log: Callable[[str], None], path: Path) -> None:
    """Write ``path`` (the recipe's calibration.json): the done offset at which the random
    policy survives in M's dream as long as in the collected data (see
    :func:`world_models.envs.dream.calibrate_done_offset`)."""
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


class _Stages:
    """Which stages have finished (``stages.json``: name -> seconds it took), so a re-run
    skips them rather than training another budget."""

    def __init__(self, path: Path) -> None:
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


def reproduce(config: ReproduceConfig, log: Callable[[str], None] = print) -> Path:
    """Run every stage of the recipe in order (each resumes); return the root folder."""
    stages = recipe(config)
    root = stages[0].config.out_dir.parent
    done = _Stages(Layout.under(root).stages)
    for k, stage in enumerate(stages, 1):
        log(f"[{k}/{len(stages)}] {stage.says}")

        def work(stage: Stage = stage) -> Any:
            prepared = stage.prepare(stage.config) if stage.prepare else stage.config
            return stage.run(prepared, log)

        done.run(stage.name, work, log)
    return root
