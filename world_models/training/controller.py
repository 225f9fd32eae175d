"""Evolve C: ``train_controller(config) -> run folder``, CMA-ES in the dream or the real env.

Each generation pycma proposes ``popsize`` flat parameter vectors (x0 = 0, sigma0 = 0.1);
every candidate is scored by the mean return of ``rollouts`` episodes, and all candidates
of a generation see the same seeds (in the dream: the same initial z and sampling noise).
Every ``eval_every`` generations the distribution's mean is scored on ``eval_rollouts``
episodes with fixed seeds; the best such mean is ``checkpoints/best``.

* ``target="dream"``: all popsize x rollouts dreams of a generation are one
  :class:`~world_models.envs.dream.BatchedDream` batch.
* ``target="real"``: episodes run in env worker processes and V, M and C run batched in
  this process (:class:`~world_models.envs.pool.EnvPool`).

Resuming without pickles: ``cma_state.npz`` (written atomically every generation) holds
every generation's fitnesses, the mean, step size sigma, covariance C with its
eigen-decomposition B, D, the evolution paths pc and ps, pycma's counters, and this
trainer's generation and best scores. pycma's sampling is seeded per generation, so a
re-run rebuilds ``cma.CMAEvolutionStrategy`` exactly by replaying the run: ask, then tell
the saved fitnesses, generation by generation, scoring nothing (~0.05 s a generation for
C's ~1,000 parameters at popsize 64); a resumed run then proposes what an uninterrupted one
would, bit for bit (tests/test_resume_exact.py). The arrays alone do not rebuild it
exactly: pycma keeps more state than it exposes (mirrored sampling below popsize 6, and
more that differs after a few generations of larger runs), so they are the fallback, for
a state file from before the fitnesses were kept, or a replay that lands elsewhere (another
numpy or BLAS: said in a warning).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import cma
import numpy as np
import torch
from cma.utilities.utils import ElapsedWCTime
from tqdm.auto import tqdm

from world_models.core.atomic import atomic_open
from world_models.core.checkpoint import read_checkpoint
from world_models.core.device import pick_device
from world_models.core.errors import CheckpointError, ConfigError
from world_models.data.series import load_initial_states
from world_models.envs.dream import BatchedDream
from world_models.envs.pool import EnvFactory, make_pool
from world_models.envs.presets import get_preset
from world_models.models.controller import Controller
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE
from world_models.models.world_model import check_trained_env, check_vae_matches
from world_models.policies.controller import ControllerPolicy
from world_models.training.configs import TrainControllerConfig
from world_models.training.runs import ALWAYS_RESUMABLE, TrainingRun, summarize_run

RESUMABLE_FIELDS = ALWAYS_RESUMABLE | {"generations", "cuda_graph", "rollout"}
"""What a re-run may change besides :data:`~world_models.training.runs.ALWAYS_RESUMABLE`:
more generations, and how (not what) the episodes run."""
STATE_FILE = "cma_state.npz"
HISTORY_KEY = "fitness_history"
"""(generations, popsize) float64 in the state file: what each generation told pycma."""


# ---------------------------------------------------------------------------- CMA state


def cma_state(es) -> dict[str, np.ndarray]:
    """The arrays and counters that rebuild ``es`` (see the module docstring)."""
    sm = es.sm
    return {
        "mean": np.asarray(es.mean, np.float64),
        "mean_old": np.asarray(es.mean_old, np.float64),
        "sigma": np.float64(es.sigma),
        "C": np.asarray(sm.C),
        "B": np.asarray(sm.B),
        "D": np.asarray(sm.D),
        "pc": np.asarray(es.pc),
        "ps": np.asarray(es.adapt_sigma.ps),
        "countiter": np.int64(es.countiter),
        "countevals": np.int64(es.countevals),
        "count_tell": np.int64(sm.count_tell),
        "last_update": np.int64(sm.last_update),
    }


def make_es(dim: int, sigma0: float, popsize: int, seed: int, state=None):
    """A fresh ``cma.CMAEvolutionStrategy`` at x0 = 0, or one rebuilt from :func:`cma_state`."""

    opts = {"popsize": popsize, "seed": seed + 1, "verbose": -9, "CMA_diagonal": False}
    if state is None:
        return cma.CMAEvolutionStrategy(np.zeros(dim), sigma0, opts)
    if state["mean"].shape != (dim,):
        raise CheckpointError(
            f"saved CMA-ES state has {state['mean'].shape[0]} parameters, this controller has {dim}"
        )

    es = cma.CMAEvolutionStrategy(state["mean"].copy(), float(state["sigma"]), opts)
    sm = es.sm
    sm.C, sm.B, sm.D = state["C"].copy(), state["B"].copy(), state["D"].copy()
    sm.count_tell, sm.last_update = int(state["count_tell"]), int(state["last_update"])
    if hasattr(sm, "_inverse_root_C"):
        sm._inverse_root_C = None  # recomputed from B and D when needed
    es.pc, es.adapt_sigma.ps = state["pc"].copy(), state["ps"].copy()
    es.mean_old = state["mean_old"].copy()
    es.countiter, es.countevals = int(state["countiter"]), int(state["countevals"])
    es.timer = ElapsedWCTime()  # pycma makes it on its first ask(); we start mid-run
    return es


def seed_generation(seed: int, gen: int) -> None:
    """pycma samples with numpy's global generator: seeded per generation, a resumed (or
    replayed) run proposes the same candidates as an uninterrupted one."""
    np.random.seed((seed * 1_000_003 + gen) % 2**32)


def replay_es(dim: int, config, history: np.ndarray):
    """``es`` as it stood after ``len(history)`` generations of this run: each one asked
    again (seeded as it was) and told its saved fitnesses (``-fitness``: pycma minimises)."""
    es = make_es(dim, config.sigma0, config.popsize, config.seed)
    for gen, fitness in enumerate(history):
        seed_generation(config.seed, gen)
        candidates = np.asarray(es.ask())  # as the run did, step for step
        es.tell(list(candidates), list(-np.asarray(fitness, np.float64)))
    return es


def resume_es(dim: int, config, arrays: dict[str, np.ndarray], generation: int):
    """The saved run's ``es``: replayed when the fitnesses are there (exact), else rebuilt
    from the arrays (see the module docstring)."""
    history = arrays.pop(HISTORY_KEY, None)
    if history is not None and history.shape == (generation, config.popsize):
        es = replay_es(dim, config, history)
        if np.array_equal(es.mean, arrays["mean"]) and float(es.sigma) == float(arrays["sigma"]):
            return es
        warnings.warn(
            "train-controller: replaying the saved CMA-ES run lands elsewhere than its saved "
            "state (another numpy or BLAS?); resuming from the saved arrays, not bit-exactly",
            stacklevel=3,
        )
    return make_es(dim, config.sigma0, config.popsize, config.seed, arrays)


def save_state(
    path: Path,
    es,
    trainer: dict,
    best_params: np.ndarray | None,
    history: np.ndarray | None = None,
) -> None:
    arrays = cma_state(es)
    if history is not None:
        arrays[HISTORY_KEY] = np.asarray(history, np.float64)
    arrays["trainer"] = np.array(json.dumps(trainer))
    if best_params is not None:
        arrays["best_candidate"] = np.asarray(best_params, np.float64)
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_state(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return arrays, json.loads(str(arrays.pop("trainer")))
    except Exception as exc:  # noqa: BLE001 - any unreadable state is the same user error
        raise CheckpointError(
            f"{path}: unreadable CMA-ES state ({exc}); delete it to restart the evolution"
        ) from None


# ---------------------------------------------------------------------------- scoring


class _Scorer:
    """Scores parameter vectors (P, D) -> returns (P, R), in the dream or the real env."""

    def __init__(self, config: TrainControllerConfig, device: torch.device) -> None:

        self.config, self.device = config, device
        preset = get_preset(config.env)
        self.mdrnn = MDNRNN.from_pretrained(config.mdrnn, map_location=device).eval()
        self.vae = None
        if config.vae is not None and (config.target == "real" or config.series_dir is None):
            self.vae = ConvVAE.from_pretrained(config.vae, map_location=device).eval()
            check_vae_matches(config.vae, self.mdrnn, config.mdrnn)
        outputs, mode = preset.controller_outputs, preset.action_mode
        derived = {
            "latent_size": self.mdrnn.latent_size,
            "hidden_size": self.mdrnn.hidden_size,
            "output_size": outputs,
            "action_mode": mode,
        }
        for name, value in derived.items():  # given ones must agree with M and the env
            given = getattr(config.model, name)
            if given is not None and given != value:
                raise ConfigError(f"controller {name}={given!r}, but M and the env need {value!r}")
        spec = dataclasses.replace(config.model, **derived)
        self.controller = Controller(**dataclasses.asdict(spec)).to(device)
        m_in = self.mdrnn.action_size
        if m_in not in preset.actions.model_sizes(preset.action_dim):
            raise ConfigError(
                f"M takes actions of size {m_in}, which does not fit the {config.env} env's actions"
            )
        self.pool = None
        if config.target == "dream":
            mu, logvar = load_initial_states(
                config.series_dir, config.data_dir, self.vae, config.max_initial_states, device
            )
            self.dream = BatchedDream(
                self.mdrnn,
                mu,
                logvar,
                config.dream.tau,
                config.dream.dream_max_steps,
                device,
                cuda_graph=config.cuda_graph,
                done_mode=config.dream.done_mode,
                dropout=config.dream.dream_dropout,
                done_offset=config.dream.done_offset,
            )
        else:
            if self.vae is None:
                raise ConfigError("training in the real env needs --vae")

            self.policy = ControllerPolicy(
                self.vae, self.mdrnn, self.controller, device, config.z_mode
            )
            workers, per = config.rollout.layout(config.popsize * config.rollouts)
            self.pool = make_pool(
                config.rollout.backend,
                EnvFactory(
                    config.env,
                    config.max_steps,
                    backend=config.rollout.env_backend,
                    stall_steps=config.stall_steps,
                ),
                workers,
                per,
                retries=config.rollout.retries,
            )

    def score(
        self, params: np.ndarray, rollouts: int, seed: int, progress: str | None = None
    ) -> np.ndarray:
        """Returns (P, R): candidate p on episode seeds ``seed + r``, the same for every p.
        ``progress``: a label for a bar of the episodes (real env; shown with --progress)."""
        p = params.shape[0]
        if self.pool is None:
            ret = self.dream.evaluate(
                self.controller, torch.as_tensor(params, dtype=torch.float32), rollouts, seed=seed
            )
            return ret.double().cpu().numpy()  # (P, R)
        self.policy.set_population(params)
        seeds = np.tile(np.arange(rollouts) + seed, p)  # (P*R,) the same R seeds per candidate
        cands = np.repeat(np.arange(p), rollouts)  # (P*R,)
        show = progress is not None and self.config.progress
        with tqdm(total=len(seeds), desc=progress, unit="ep", leave=False, disable=not show) as bar:
            res = self.pool.run(
                self.policy,
                seeds,
                candidates=cands,
                max_steps=self.config.max_steps,
                progress=bar.update,
            )
        return res.returns.reshape(p, rollouts)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


# ---------------------------------------------------------------------------- training


def train_controller(config: TrainControllerConfig) -> Path:
    """Run (or resume) CMA-ES on C; return the run folder.

    The folder holds ``checkpoints/last`` (the mean of the search distribution),
    ``checkpoints/best`` (the mean with the best periodic evaluation),
    ``checkpoints/best_candidate`` (the single best-scoring candidate), ``cma_state.npz``,
    ``metrics.csv``/``metrics.jsonl`` (one row per generation) and ``fitness_curve.png``.
    """
    with contextlib.ExitStack() as hold:  # the run folder's lock, released on any exit
        return _train_controller(config, hold)


def _check_vae(config: TrainControllerConfig) -> None:
    """Refuse a ``vae`` other than the VAE whose latents M learned, before the run
    folder is written: in the dream too, where V may not be loaded but is recorded."""
    if config.vae is None:
        return

    meta = read_checkpoint(config.mdrnn, expected_kind="MDNRNN").meta
    if meta.get("vae_sha256") and not (Path(config.vae) / "model.safetensors").is_file():
        raise ConfigError(f"--vae {config.vae}: no VAE checkpoint there")
    check_vae_matches(config.vae, SimpleNamespace(checkpoint_meta=meta), config.mdrnn)


def _check_env(config: TrainControllerConfig) -> None:
    """Refuse an ``env`` other than the one whose episodes M (and V) learned, before the
    run folder is written: a C evolved in a fake env's dream with Doom's actions is noise."""
    check_trained_env(config.env, config.mdrnn, "M")
    check_trained_env(config.env, config.vae, "V")


def _train_controller(config: TrainControllerConfig, hold: contextlib.ExitStack) -> Path:

    device = pick_device(config.device)
    _check_vae(config)
    _check_env(config)
    run = TrainingRun(
        config,
        RESUMABLE_FIELDS,
        hold=hold,
        device=device,
        resume_file=STATE_FILE,  # the CMA-ES state is the truth on resume
        watched="the returns",
        advice="Check M and V",
    )
    hold.callback(run.close)
    state_path = run.path / STATE_FILE
    scorer = _Scorer(config, device)
    dim = scorer.controller.num_params
    trainer = {"generation": 0, "best_candidate_fitness": None, "best_eval": None}
    best_params = None
    history = np.zeros((0, config.popsize))  # every generation's fitnesses: the replay
    if state_path.exists():
        arrays, trainer = load_state(state_path)
        best_params = arrays.pop("best_candidate", None)
        if arrays.get(HISTORY_KEY) is not None:
            history = arrays[HISTORY_KEY]
        es = resume_es(dim, config, arrays, trainer["generation"])
    else:
        es = make_es(dim, config.sigma0, config.popsize, config.seed)
    start = trainer["generation"]
    if start and _saved_generation(run.last) != start:  # killed between the state and `last`
        _save_last(scorer.controller, es, run, trainer, config)
    if not run.resume_verdict(
        step=start,
        epoch=start,
        epochs=config.generations,
        finished=start >= config.generations,
        unit="generation",
        raise_flags=("--generations",),
    ):
        scorer.close()
        return run.path
    run.open_metrics(start)
    bar = tqdm(
        total=config.generations,
        initial=min(start, config.generations),
        unit="gen",
        disable=not config.progress,
        dynamic_ncols=True,
    )
    t0 = time.perf_counter()
    try:
        for gen in range(start, config.generations):
            tg = time.perf_counter()
            seed_generation(config.seed, gen)  # the same candidates after a resume
            candidates = np.asarray(es.ask())  # (P, D)
            returns = scorer.score(
                candidates, config.rollouts, seed=config.seed * 10_000_019 + gen * config.rollouts
            )
            fitness = returns.mean(axis=1)  # (P,)
            run.stop_if_diverged(not np.all(np.isfinite(fitness)), f"at generation {gen + 1}")
            es.tell(list(candidates), list(-fitness))  # pycma minimises
            history = np.concatenate([history[:gen], fitness[None].astype(np.float64)])
            i = int(np.argmax(fitness))
            if (
                trainer["best_candidate_fitness"] is None
                or fitness[i] > trainer["best_candidate_fitness"]
            ):
                trainer["best_candidate_fitness"] = float(fitness[i])
                best_params = candidates[i]
                _save_controller(
                    scorer.controller,
                    best_params,
                    run.checkpoints / "best_candidate",
                    gen + 1,
                    {"fitness": float(fitness[i])},
                )
            trainer["generation"] = gen + 1
            secs = time.perf_counter() - tg
            row = {
                "fitness_max": float(fitness.max()),
                "fitness_mean": float(fitness.mean()),
                "fitness_min": float(fitness.min()),
                "fitness_std": float(fitness.std()),
                "sigma": float(es.sigma),
                "seconds": round(secs, 3),
                "episodes_per_s": round(returns.size / secs, 1),
            }
            row["episodes"] = int(returns.size)
            done = gen + 1 == config.generations
            out_of_time = (
                config.time_budget_s is not None
                and time.perf_counter() - t0 >= config.time_budget_s
            )
            # the first generation too, so `best` exists from the start of a run
            if (gen + 1) % config.eval_every == 0 or done or out_of_time or gen == 0:
                ev = scorer.score(
                    np.asarray(es.mean)[None],
                    config.eval_rollouts,
                    seed=config.seed * 10_000_019 + 7 * 10**8,
                    progress=f"evaluate the mean on {config.eval_rollouts} episodes",
                )[0]  # fixed seeds
                row["eval_mean"], row["eval_std"] = float(ev.mean()), float(ev.std())
                # every evaluated mean is kept: candidates to choose among on real games
                _save_controller(
                    scorer.controller,
                    es.mean,
                    run.checkpoints / f"eval-gen{gen + 1:05d}",
                    gen + 1,
                    {"eval_mean": float(ev.mean()), "eval_std": float(ev.std())},
                )
                if trainer["best_eval"] is None or ev.mean() > trainer["best_eval"]:
                    trainer["best_eval"] = float(ev.mean())
                    _save_controller(
                        scorer.controller,
                        es.mean,
                        run.best,
                        gen + 1,
                        {
                            "eval_mean": float(ev.mean()),
                            "eval_std": float(ev.std()),
                            "eval_rollouts": config.eval_rollouts,
                        },
                    )
            # Logged first: a run killed before its state is saved drops the row on resume
            # and logs it again. Then the state, the truth on resume; `last` is an output
            # (a resumed run rewrites one a kill left a generation behind).
            run.log(gen + 1, **row)
            save_state(state_path, es, trainer, best_params, history)
            _save_last(scorer.controller, es, run, trainer, config)
            bar.set_postfix(
                best=f"{fitness.max():.1f}", mean=f"{fitness.mean():.1f}", sigma=f"{es.sigma:.3f}"
            )
            bar.update(1)
            if out_of_time:
                break
        run.plot_curve(
            {
                "best candidate": "fitness_max",
                "population mean": "fitness_mean",
                "worst candidate": "fitness_min",
                "mean parameters (evaluation)": "eval_mean",
            },
            title="CMA-ES on the controller",
            file="fitness_curve.png",
            xlabel="generation",
            ylabel="return",
            logy=False,
        )
    finally:
        bar.close()
        scorer.close()
    return run.path


def _save_last(controller, es, run: TrainingRun, trainer: dict, config) -> None:
    """``checkpoints/last``: the search distribution's mean after ``trainer["generation"]``."""
    meta = {"trainer": trainer, "target": config.target}
    _save_controller(controller, es.mean, run.last, trainer["generation"], meta)


def _saved_generation(checkpoint: Path) -> int | None:
    try:
        return int(read_checkpoint(checkpoint).meta.get("generation"))
    except (CheckpointError, TypeError, ValueError):
        return None


def _save_controller(controller, params, where: Path, generation: int, meta: dict) -> None:
    controller.set_flat(np.asarray(params))
    controller.save_pretrained(where, step=generation, meta={"generation": generation, **meta})


def summarize(run_dir: Path) -> str:
    """A few lines: where the results are and the best scores."""
    return summarize_run(
        run_dir,
        unit="generation",
        scores=[("best fitness:", "fitness_max", "max"), ("best eval:", "eval_mean", "max")],
        outputs=[
            ("best (mean):", "checkpoints/best"),
            ("last (mean):", "checkpoints/last"),
            ("best candidate:", "checkpoints/best_candidate"),
            ("metrics:", "metrics.csv"),
            ("fitness curve:", "fitness_curve.png"),
        ],
    )
