"""``collect(config) -> Path``: random-policy rollouts into an episode store, in parallel.

With ``controller`` (and its ``vae`` and ``mdrnn``) the evolved V+M+C plays instead, taking
the random policy's action with probability ``explore`` per step: the data for the paper's
iterative training, where M learns what happens in the places C goes.

Episode ``i`` is a pure function of :func:`episode_seed` ``(seed, i)`` (the env's reset seed
and the policy's seed), whichever worker runs it, so the same command gives the same bytes
with 1 or 16 workers, and datasets of different seeds share no episode. Each worker process
(spawn) keeps one env, closed when it exits, and writes whole episodes atomically;
re-running the command skips the valid episodes already there and collects the rest, so a
killed run resumes and a larger ``--episodes`` tops a dataset up. A worker that dies makes
the run fail with :class:`WorkerDiedError` instead of hanging. The folder is locked for the
whole run (:mod:`world_models.core.locking`): a second collection into it stops at once.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import multiprocessing.util
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from world_models.core.atomic import clean_temp_files
from world_models.core.errors import ConfigError, DataError, WorkerDiedError
from world_models.core.locking import lock_folder
from world_models.core.processes import bind_to_parent, start_resource_tracker
from world_models.data import store
from world_models.data.configs import CollectConfig
from world_models.envs.make import check_available, make_env, resolve_backend
from world_models.envs.presets import EnvPreset, Preprocess, preprocess_frames, register_preset
from world_models.policies import ExplorePolicy, make_random_policy


def manifest_signature(config: CollectConfig) -> dict[str, Any]:
    """What makes two collections the same dataset (the episode count is not part of it)."""
    preset = config.env_preset()
    policy: dict[str, Any] = {"name": config.policy_name()}
    if policy["name"] == "brownian":
        policy["dt"] = config.dt
    if policy["name"] == "repeat":
        policy["min_repeat"], policy["max_repeat"] = 1, config.max_repeat
    models = config.world_model()
    if models is not None:
        from world_models.core.checkpoint import weights_digest  # late: workers skip torch

        # the weights, not the paths, say which controller made the data
        digests = {f"{k}_sha256": weights_digest(Path(v)) for k, v in models.items()}
        policy = {"name": "controller", **digests, "explore": config.explore, "random": policy}
    return {
        "source": "collect",
        "env": preset.name,
        "env_id": preset.env_id,
        "backend": config.backend,
        "preprocess": config.preprocess().to_dict(),
        "policy": policy,
        "seed": config.seed,
        "episode_seed": "SeedSequence([seed, i])",  # older datasets used seed + i
        "max_steps": config.max_steps,
        "env_kwargs": dict(sorted({**dict(preset.env_kwargs), **config.env_kwargs}.items())),
        "action": {
            "kind": preset.action_kind,
            "dim": preset.action_dim,
            "stored_as": "float32 (T, A)"
            + (" one-hot" if preset.action_kind == "discrete" else ""),
            # Doom datasets collected before the DoomActions wrapper (no such entry) have
            # left and right swapped: VizDoom's own index 1 moves right.
            **({"classes": list(preset.action_classes)} if preset.action_classes else {}),
        },
    }


# ---------------------------------------------------------------------------- one episode


def episode_seed(seed: int, index: int) -> int:
    """Seed of episode ``index``: a 64-bit hash of (seed, index), so seeds 0 and 1 share no
    episode (``seed + index`` made them share all but one), a dataset has no two alike (32
    bits would, for 1% of 10,000-episode datasets), and resuming needs only the index."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


_CHUNK = 256
"""Raw frames resized per call in :func:`run_episode` (a Doom chunk holds 15 MB)."""


def run_episode(
    env, policy, seed: int, one_hot: int | None = None, preprocess: Preprocess | None = None
) -> store.Episode:
    """Play one episode from ``env.reset(seed=seed)``; ``obs[t]`` is the frame acted on.

    With ``preprocess`` the env hands out raw frames (``make_env(raw_frames=True)``) and
    they are preprocessed here, ``_CHUNK`` at a time, for a policy that never looks at them
    (a random one: it is handed the raw frame)."""
    obs, _ = env.reset(seed=seed)
    policy.reset(1, seed=[seed])
    frames, actions, rewards, terms, truncs = [], [], [], [], []
    chunks: list[np.ndarray] = []
    while True:
        action = policy.act(obs[None])[0]
        frames.append(obs)
        if preprocess is not None and len(frames) == _CHUNK:
            chunks.append(preprocess_frames(np.stack(frames), preprocess))
            frames = []
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        if terminated or truncated:
            break
    if preprocess is not None:
        if frames:
            chunks.append(preprocess_frames(np.stack(frames), preprocess))
        seen = np.concatenate(chunks)  # (T, 64, 64, 3)
    else:
        seen = np.stack(frames)
    act = np.asarray(actions)
    if one_hot is not None:  # discrete actions are stored one-hot: (T,) int -> (T, k)
        act = np.eye(one_hot, dtype=np.float32)[act.astype(np.int64)]
    return store.Episode(
        obs=seen.astype(np.uint8, copy=False),  # (T, 64, 64, 3)
        action=act.astype(np.float32).reshape(len(seen), -1),  # (T, A)
        reward=np.asarray(rewards, np.float32),  # (T,)
        terminated=np.asarray(terms, bool),  # (T,)
        truncated=np.asarray(truncs, bool),  # (T,)
    )


class _Collector:
    """An env and a policy that write episodes by index; one per worker process."""

    def __init__(self, config: CollectConfig) -> None:
        self.config = config
        preset = config.env_preset()
        models = config.world_model()
        # a random policy never looks at the frames: they are resized per episode, in chunks
        preprocess = config.preprocess()
        self.preprocess = preprocess if models is None else None
        self.env = make_env(
            preset,
            preprocess=preprocess,
            max_steps=config.max_steps,
            backend=config.backend,
            env_kwargs=config.env_kwargs,
            raw_frames=self.preprocess is not None,
        )
        self.policy = make_random_policy(
            config.policy_name(), self.env.action_space, dt=config.dt, max_repeat=config.max_repeat
        )
        if models is not None:
            mode = preset.action_mode
            self.policy = _controller_policy(models, self.policy, config.explore, mode)
        self.one_hot = preset.action_dim if preset.actions.discrete else None

    def __call__(self, index: int) -> tuple[int, int, float]:
        seed = episode_seed(self.config.seed, index)
        ep = run_episode(self.env, self.policy, seed, self.one_hot, self.preprocess)
        out = Path(self.config.out_dir) / store.episode_name(index)
        store.write_episode(out, ep, self.config.compress_level)
        return index, len(ep), ep.total_reward

    def close(self) -> None:
        self.env.close()  # VizDoom's game process outlives a worker that does not close it


def _controller_policy(models: dict[str, Path], random, explore: float, action_mode: str):
    """V + M + C on the CPU, one thread (one env per worker process), mixed with ``random``."""
    # late, all three: a random-policy worker never loads torch
    import torch

    from world_models.models.world_model import load_world_model
    from world_models.policies.controller import ControllerPolicy

    torch.set_num_threads(1)  # the workers share the cores already (and _init_worker's)
    wm = load_world_model(**models, action_mode=action_mode, device="cpu")
    return ExplorePolicy(ControllerPolicy(wm.vae, wm.mdrnn, wm.controller, "cpu"), random, explore)


_WORKER: _Collector | BaseException | None = None


def _close_worker() -> None:
    global _WORKER
    worker, _WORKER = _WORKER, None
    if isinstance(worker, _Collector):
        worker.close()


def _on_sigterm(signum: int, frame: Any) -> None:
    """Die as SIGTERM would (the pool terminates the others when one worker dies), but close
    the env first: os._exit runs no cleanup, and VizDoom's game process ignores SIGTERM."""
    try:
        _close_worker()
    finally:
        os._exit(128 + signum)  # a half-written episode is a temp file: cleaned next run


def _exit_with_parent(parent: int) -> None:
    """Workers exit within a second of the main process dying (even by SIGKILL), instead of
    finishing queued episodes or waiting forever on the task queue: a fallback where
    :func:`bind_to_parent` cannot have the kernel SIGKILL them at once (not Linux)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)  # the main thread closes the env: _on_sigterm
    time.sleep(5.0)
    os._exit(1)  # it is stuck


def _keep_fds_from_children() -> None:
    """Make the pipes multiprocessing passed to this worker non-inheritable: VizDoom's game
    process inherited them, and one that outlived a crashed worker held its death sentinel
    open, so the pool waited for ever instead of raising WorkerDiedError."""
    if os.path.isdir("/proc/self/fd"):  # Linux; elsewhere nothing to do cheaply
        for name in os.listdir("/proc/self/fd"):
            if int(name) > 2:  # stdin/out/err stay: the game may write to them
                try:
                    os.set_inheritable(int(name), False)
                except OSError:
                    pass  # the listing's own, already closed


def _init_worker(config: CollectConfig, preset: EnvPreset, parent: int | None = None) -> None:
    global _WORKER
    register_preset(preset, overwrite=True)  # one the caller registered is known here too
    # it dies with the main process, and its env's game with it, whatever ends either
    bind_to_parent(parent)
    _keep_fds_from_children()
    signal.signal(signal.SIGTERM, _on_sigterm)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    # nothing else closes the env when the worker exits, and VizDoom's game would outlive it
    multiprocessing.util.Finalize(None, _close_worker, exitpriority=10)
    # one thread each, as the workers share the cores (torch resizes the frames). An env
    # variable would come too late where torch was loaded before the fork
    import torch

    torch.set_num_threads(1)
    try:
        _WORKER = _Collector(config)
    except Exception as exc:  # noqa: BLE001 - re-raised by _work, so the parent sees it
        _WORKER = exc


def _work(index: int) -> tuple[int, int, float]:
    if isinstance(_WORKER, BaseException):
        raise _WORKER  # an env that failed to build: the original error, not a dead pool
    assert _WORKER is not None
    return _WORKER(index)


# ---------------------------------------------------------------------------- collect


def _todo(config: CollectConfig) -> tuple[Iterator[int], int, int]:
    """Indices still to collect (missing or damaged files), in order and lazily, how many,
    and the frames already there.

    Only the files in the folder are read, never ``range(episodes)`` up front: a huge
    ``--episodes`` starts at once. Writes are atomic, so a file is whole or absent unless
    something damaged it later; with ``verify`` every kept file is inflated and CRC-checked
    (:func:`store.verify_episode`, in threads: zlib releases the GIL), else only its
    headers are read (:func:`store.check_episode`), which misses damage inside the
    compressed data."""
    out = Path(config.out_dir)
    kept = []
    for path in store.list_episodes(out) if out.is_dir() else []:
        i = store.episode_index(path.name)
        if i is not None and i < config.episodes and path.name == store.episode_name(i):
            kept.append(i)
    check = store.verify_episode if config.verify else store.check_episode

    def checked(i: int) -> int | DataError:
        try:
            return check(out / store.episode_name(i))
        except DataError as exc:
            return exc

    threads = min(32, _default_workers(), max(1, len(kept)))
    with ThreadPoolExecutor(threads, thread_name_prefix="collect-verify") as pool:
        results = list(pool.map(checked, kept))
    frames, good = 0, set()
    for i, result in zip(kept, results):
        if isinstance(result, DataError):
            warnings.warn(f"re-collecting a bad episode: {result}", stacklevel=3)
        else:
            good.add(i)
            frames += result
    todo = (i for i in range(config.episodes) if i not in good)
    return todo, config.episodes - len(good), frames


def _check_manifest(out: Path, signature: dict[str, Any]) -> None:
    old = store.read_manifest(out)
    if old is None or not store.list_episodes(out):
        return  # nothing to protect: e.g. a first run that failed before its first episode
    diff = sorted(k for k in signature if old.get(k) != signature[k])
    if diff:
        what = "; ".join(f"{k}: {old.get(k)} there, {signature[k]} now" for k in diff)
        raise ConfigError(
            f"{out} holds episodes made with other settings ({what}); "
            f"use another --out-dir or the same options"
        )


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def collect(config: CollectConfig) -> Path:
    """Collect ``config.episodes`` episodes into ``config.out_dir``; return the folder."""

    if getattr(mp.current_process(), "_inheriting", False):
        # a spawned worker importing an unguarded script: it would re-run the whole
        # collection and race the real one on the folder (multiprocessing's own check)
        raise ConfigError(
            "collect() ran while a worker process was starting: call it under "
            "`if __name__ == '__main__':` in your script (or use workers=1)"
        )
    rules = [
        ("episodes", config.episodes >= 1, ">= 1"),
        ("seed", config.seed >= 0, ">= 0"),
        ("workers", config.workers >= 0, ">= 0 (0: all cores)"),
        ("max_steps", config.max_steps is None or config.max_steps >= 1, ">= 1 (or None)"),
    ]
    for name, ok, rule in rules:
        if not ok:
            raise ConfigError(f"collect: {name} must be {rule}, got {getattr(config, name)}")
    preset = config.env_preset()
    # the manifest records the implementation used, so auto is resolved once, here
    config = dataclasses.replace(config, backend=resolve_backend(config.backend, preset))
    check_available(preset, config.backend)  # a clear error here, not in a worker
    signature = manifest_signature(config)  # checks the crop before the folder is touched
    models = config.world_model()
    if models is not None:  # a mismatch fails here in one line, not in every worker
        # late: the workers import this module and must not load torch
        from world_models.models.world_model import load_world_model

        load_world_model(**models, action_mode=preset.action_mode)
    # One writer per dataset: two runs into one folder would both pass the settings check
    # below and interleave their episodes under one manifest.
    with lock_folder(config.out_dir, "dataset folder") as out:
        return _collect_locked(config, out, signature)


def _collect_locked(config: CollectConfig, out: Path, signature: dict[str, Any]) -> Path:
    clean_temp_files(out)  # leftovers of a killed run
    _check_manifest(out, signature)
    todo, missing, frames = _todo(config)
    store.write_manifest(
        out,
        {
            **signature,
            "episodes": config.episodes - missing,
            "frames": frames,
            "complete": not missing,
        },
    )
    if missing:
        frames += _run(config, todo, missing)
    # counts of episodes 0..episodes-1 (files beyond, from a larger earlier run, are kept)
    store.write_manifest(
        out, {**signature, "episodes": config.episodes, "frames": frames, "complete": True}
    )
    return out


def _stop(pool: ProcessPoolExecutor) -> None:
    """End the workers now (Ctrl-C, SIGTERM, an error), not after their episodes: they lead
    process groups of their own, so the terminal's Ctrl-C reaches this process only. Each
    closes its env on SIGTERM (:func:`_on_sigterm`); one stuck in C code is SIGKILLed."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + 5.0
    for proc in procs:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()  # its group's watchdog ends the game it leaves
            proc.join(timeout=1.0)


def _progress(config: CollectConfig, total: int):

    return tqdm(
        total=total,
        unit="ep",
        desc=f"collect {config.env}",
        disable=not config.progress,
        dynamic_ncols=True,
    )


def _run(config: CollectConfig, todo: Iterable[int], count: int) -> int:
    """Collect the ``count`` episodes ``todo``; return their frame count."""
    workers = config.workers or _default_workers()
    workers = max(1, min(workers, count))
    steps, t0 = 0, time.perf_counter()
    bar = _progress(config, count)

    def done(n: int) -> None:
        nonlocal steps
        steps += n
        bar.update(1)
        bar.set_postfix(steps=steps, steps_per_s=f"{steps / (time.perf_counter() - t0):.0f}")

    try:
        # an env whose game is a process of its own runs in a worker even alone: the game
        # then dies with the command even by SIGKILL (core/processes.py)
        if workers == 1 and not config.env_preset().game_process:
            collector = _Collector(config)
            try:
                for i in todo:
                    done(collector(i)[1])
            finally:
                collector.close()
            return steps
        ctx = mp.get_context("spawn")  # no fork: envs and threads do not survive it well
        start_resource_tracker()  # one that a SIGHUP to this process group spares
        pool = ProcessPoolExecutor(
            workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(config, config.env_preset(), os.getpid()),
        )
        # A few tasks in flight per worker: a crash loses little work, Ctrl-C stops soon.
        pending: dict[Any, int] = {}
        queue = iter(todo)
        try:
            while True:
                while len(pending) < 2 * workers:
                    i = next(queue, None)
                    if i is None:
                        break
                    pending[pool.submit(_work, i)] = i
                if not pending:
                    break
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    i = pending.pop(fut)
                    try:
                        done(fut.result()[1])
                    except BrokenProcessPool:
                        raise WorkerDiedError(
                            f"a collection worker died abruptly (episode {i} or another was "
                            f"in flight: crashed env, out of memory, or a script calling "
                            f"collect() without an `if __name__ == '__main__':` guard); "
                            f"finished episodes are kept: re-run the same command to resume"
                        ) from None
        except BaseException:
            _stop(pool)
            raise
        pool.shutdown(wait=True)
        return steps
    finally:
        bar.close()
