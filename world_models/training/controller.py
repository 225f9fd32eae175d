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
from world_models.training.runs import Trainer, TrainingRun, run_trainer, summarize_run

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
            stacklevel=6,  # the caller of train_controller
        )
    return make_es(dim, config.sigma0, config.popsize, config.seed, arrays)


def write_cma_state(
    path: Path,
    es,
    trainer: dict,
    best_params: np.ndarray | None,
    history: np.ndarray | None = None,
) -> None:
    """``cma_state.npz``, atomically: ``es``'s arrays, every generation's fitnesses, the
    trainer's record and the best candidate."""
    arrays = cma_state(es)
    if history is not None:
        arrays[HISTORY_KEY] = np.asarray(history, np.float64)
    arrays["trainer"] = np.array(json.dumps(trainer))
    if best_params is not None:
        arrays["best_candidate"] = np.asarray(best_params, np.float64)
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


def read_cma_state(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """:func:`write_cma_state`'s arrays and trainer record (a one-line error if unreadable)."""
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
        self.controller = Controller.from_config(spec).to(device)
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
            self.pool = None


# ---------------------------------------------------------------------------- training


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


class ControllerTrainer(Trainer):
    """C's trainer: CMA-ES over C's flat parameters, generation by generation."""

    def __init__(self, config: TrainControllerConfig, hold: contextlib.ExitStack) -> None:
        """``hold`` keeps the lock on the run folder until the caller closes it."""
        self.config = config
        self.device = pick_device(config.device)
        _check_vae(config)
        _check_env(config)
        self.run = TrainingRun(
            config,
            hold=hold,
            device=self.device,
            resume_file=STATE_FILE,  # the CMA-ES state is the truth on resume
            watched="the returns",
            advice="Check M and V",
        )
        hold.callback(self.run.close)
        self.state_path = self.run.path / STATE_FILE
        self.scorer = _Scorer(config, self.device)
        hold.callback(self.scorer.close)  # its env workers go on any exit, even from here
        self.controller = self.scorer.controller
        self.record = {"generation": 0, "best_candidate_fitness": None, "best_eval": None}
        self.best_params: np.ndarray | None = None
        self.history = np.zeros((0, config.popsize))  # every generation's fitnesses: the replay
        if self.run.resuming:
            self.load_state()
        else:
            dim = self.controller.num_params
            self.es = make_es(dim, config.sigma0, config.popsize, config.seed)

    # ------------------------------------------------------------------ state
    def load_state(self) -> None:
        arrays, self.record = read_cma_state(self.state_path)
        self.best_params = arrays.pop("best_candidate", None)
        if arrays.get(HISTORY_KEY) is not None:
            self.history = arrays[HISTORY_KEY]
        generation = self.record["generation"]
        self.es = resume_es(self.controller.num_params, self.config, arrays, generation)
        if generation and _saved_generation(self.run.last) != generation:
            # killed between the state and `last`: `last` is a generation behind
            _save_last(self.controller, self.es, self.run.last, self.record, self.config)

    def save_state(self, where: Path) -> None:
        """The CMA-ES state file (the truth on resume), then the search distribution's mean
        at ``where`` (checkpoints/last: an output, rewritten on resume when a kill left it
        a generation behind)."""
        write_cma_state(self.state_path, self.es, self.record, self.best_params, self.history)
        _save_last(self.controller, self.es, where, self.record, self.config)

    # ------------------------------------------------------------------ generations
    def generation(self, gen: int) -> dict[str, float]:
        """Ask, score and tell generation ``gen`` (from 0); its metrics row."""
        cfg, es = self.config, self.es
        tg = time.perf_counter()
        seed_generation(cfg.seed, gen)  # the same candidates after a resume
        candidates = np.asarray(es.ask())  # (P, D)
        returns = self.scorer.score(
            candidates, cfg.rollouts, seed=cfg.seed * 10_000_019 + gen * cfg.rollouts
        )  # (P, R)
        fitness = returns.mean(axis=1)  # (P,)
        self.run.stop_if_diverged(not np.all(np.isfinite(fitness)), f"at generation {gen + 1}")
        es.tell(list(candidates), list(-fitness))  # pycma minimises
        self.history = np.concatenate([self.history[:gen], fitness[None].astype(np.float64)])
        i = int(np.argmax(fitness))
        best = self.record["best_candidate_fitness"]
        if best is None or fitness[i] > best:
            self.record["best_candidate_fitness"] = float(fitness[i])
            self.best_params = candidates[i]
            where = self.run.checkpoints / "best_candidate"
            meta = {"fitness": float(fitness[i])}
            _save_controller(self.controller, self.best_params, where, gen + 1, meta)
        self.record["generation"] = gen + 1
        secs = time.perf_counter() - tg
        return {
            "fitness_max": float(fitness.max()),
            "fitness_mean": float(fitness.mean()),
            "fitness_min": float(fitness.min()),
            "fitness_std": float(fitness.std()),
            "sigma": float(es.sigma),
            "seconds": round(secs, 3),
            "episodes_per_s": round(returns.size / secs, 1),
            "episodes": int(returns.size),
        }

    def evaluate(self) -> dict[str, float]:
        """The search distribution's mean on ``eval_rollouts`` episodes of fixed seeds."""
        cfg = self.config
        ev = self.scorer.score(
            np.asarray(self.es.mean)[None],
            cfg.eval_rollouts,
            seed=cfg.seed * 10_000_019 + 7 * 10**8,
            progress=f"evaluate the mean on {cfg.eval_rollouts} episodes",
        )[0]  # (R,)
        return {"eval_mean": float(ev.mean()), "eval_std": float(ev.std())}

    def _keep_evaluated(self, scores: dict[str, float]) -> None:
        """Every evaluated mean is kept (candidates to choose among on real games); the
        best so far is checkpoints/best."""
        gen = self.record["generation"]
        where = self.run.checkpoints / f"eval-gen{gen:05d}"
        _save_controller(self.controller, self.es.mean, where, gen, scores)
        if self.record["best_eval"] is None or scores["eval_mean"] > self.record["best_eval"]:
            self.record["best_eval"] = scores["eval_mean"]
            meta = {**scores, "eval_rollouts": self.config.eval_rollouts}
            _save_controller(self.controller, self.es.mean, self.run.best, gen, meta)

    def fit(self) -> Path:
        cfg, start = self.config, self.record["generation"]
        if not self.run.resume_verdict(
            step=start,
            epoch=start,
            epochs=cfg.generations,
            finished=start >= cfg.generations,
            unit="generation",
            raise_flags=("--generations",),
        ):
            return self.run.path
        self.run.open_metrics(start)
        bar = tqdm(
            total=cfg.generations,
            initial=min(start, cfg.generations),
            unit="gen",
            disable=not cfg.progress,
            dynamic_ncols=True,
        )
        t0 = time.perf_counter()
        try:
            for gen in range(start, cfg.generations):
                row = self.generation(gen)
                budget = cfg.time_budget_s
                out_of_time = budget is not None and time.perf_counter() - t0 >= budget
                last = gen + 1 == cfg.generations or out_of_time
                # the first generation too, so `best` exists from the start of a run
                if (gen + 1) % cfg.eval_every == 0 or last or gen == 0:
                    scores = self.evaluate()
                    self._keep_evaluated(scores)
                    row.update(scores)
                # Logged first: a run killed before its state is saved drops the row on
                # resume and logs it again.
                self.run.log(gen + 1, **row)
                self.save_state(self.run.last)
                bar.set_postfix(
                    best=f"{row['fitness_max']:.1f}",
                    mean=f"{row['fitness_mean']:.1f}",
                    sigma=f"{self.es.sigma:.3f}",
                )
                bar.update(1)
                if out_of_time:
                    break
            self._plot()
        finally:
            bar.close()
        return self.run.path

    def _plot(self) -> None:
        self.run.plot_curve(
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

    def close(self) -> None:
        self.scorer.close()
        self.run.close()


def train_controller(config: TrainControllerConfig) -> Path:
    """Run (or resume) CMA-ES on C; return the run folder.

    The folder holds ``checkpoints/last`` (the mean of the search distribution),
    ``checkpoints/best`` (the mean with the best periodic evaluation),
    ``checkpoints/best_candidate`` (the single best-scoring candidate), ``cma_state.npz``,
    ``metrics.csv``/``metrics.jsonl`` (one row per generation) and ``fitness_curve.png``.
    """
    return run_trainer(ControllerTrainer, config)


def _save_last(controller, es, where: Path, record: dict, config) -> None:
    """``checkpoints/last`` (``where``): the search distribution's mean after
    ``record["generation"]``."""
    meta = {"trainer": record, "target": config.target}
    _save_controller(controller, es.mean, where, record["generation"], meta)


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
