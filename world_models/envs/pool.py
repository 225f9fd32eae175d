"""Real-environment rollouts in parallel, with V, M and C run once per step for all envs.

Environments step in worker processes (``multiprocessing`` Pipes, several envs per
worker); the policy runs only in the main process, as one batch for every live env, so
there is never a model copy per worker. Episodes run in waves of up to ``workers *
envs_per_worker``; episode i is a function of its seed (the env's reset seed and the
policy's seed), so results do not depend on the number of workers.

A worker that dies (crash, OOM kill) is noticed within ``poll_s``: its pipe raises
EOFError or ``is_alive()`` is false. With ``retries > 0`` the dead workers are restarted
and the whole wave is re-run from its seeds (same results, since episodes are functions
of their seeds); otherwise, or when retries run out, :class:`WorkerDiedError` stops the
run. A worker alive but silent for ``step_timeout_s`` is treated as dead. Never a hang.
Workers die with this process, however it ends, and take what their envs started
(VizDoom's games) with them (:mod:`world_models.core.processes`); :meth:`EnvPool.close`
(also on Ctrl-C or the CLI's SIGTERM) has them close their envs first.

:class:`RayEnvPool` (optional ``ray`` extra) puts the envs in Ray actors behind the same
interface, for rollouts across machines; :func:`make_pool` picks the backend.

This module imports no torch at the top, so spawned workers start fast.

Why collection has a pool of its own (:mod:`world_models.data.collect`): there each worker
plays whole episodes with its own policy and writes them to disk, so a task is one
episode and a ``ProcessPoolExecutor`` fits; here the policy is one batched model in the
main process and the envs step in lock step with it, which needs pipes per step. Both
raise :class:`~world_models.core.errors.WorkerDiedError`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from world_models.core.errors import WorkerDiedError, require
from world_models.core.processes import (
    bind_to_parent,
    kill_group_on_exit,
    start_resource_tracker,
)
from world_models.envs.make import FrameObservation, check_available, make_env, resolve_backend
from world_models.envs.presets import get_preset
from world_models.policies import Policy


@dataclass(frozen=True)
class EnvFactory:
    """A picklable recipe for one env: ``make_env(get_preset(env), max_steps, env_kwargs)``
    (the preset is looked up here, in the main process)."""

    env: str = "fake"
    """Env preset name (carracing, doom, fake, fake-discrete, or a registered one)."""
    max_steps: int | None = None
    """Truncate episodes after this many steps (None: the env's own limit)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the env's constructor."""
    backend: str = "gymnasium"
    """The env's implementation: gymnasium, envpool or auto (:func:`resolve_backend`)."""
    stall_steps: int | None = None
    """End an episode after this many steps without a positive reward (None: never)."""

    def __post_init__(self) -> None:
        # the preset itself travels to the workers: one the caller registered (not built
        # in) is unknown by name in a fresh process
        object.__setattr__(self, "preset", get_preset(self.env))

    def check(self) -> None:
        """A missing optional dependency as one clear error here, not in a worker."""
        preset = self.preset
        check_available(preset, resolve_backend(self.backend, preset))

    def __call__(self):
        preset = self.preset
        return make_env(
            preset,
            max_steps=self.max_steps,
            backend=resolve_backend(self.backend, preset),
            env_kwargs=dict(self.env_kwargs),
            stall_steps=self.stall_steps,
        )


@dataclass
class RolloutResult:
    """``returns`` (E,) float64 and ``lengths`` (E,) int64 per episode, in the seeds' order;
    ``frames`` (when recorded) one (T+1, H, W, 3) uint8 array of raw env frames each."""

    returns: np.ndarray
    lengths: np.ndarray
    seeds: np.ndarray
    frames: list[np.ndarray] | None = None


# ---------------------------------------------------------------------------- worker side


def _split_raw(env, action):
    """Step ``env`` and return (obs, raw frame, reward, terminated, truncated)."""

    if isinstance(env, FrameObservation):
        raw, rew, term, trunc, _ = env.env.step(action)
        return env.observation(raw), _raw_frame(raw), rew, term, trunc
    obs, rew, term, trunc, _ = env.step(action)
    return obs, obs, rew, term, trunc


def _raw_frame(raw):
    return raw["screen"] if isinstance(raw, dict) else raw


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM (EnvPool.close of a worker that did not close): close envs


def _worker(conn, factory: Callable[[], Any], n_envs: int, parent: int | None = None) -> None:
    """Serve ``("reset", [(slot, seed)], record)``, ``("step", [(slot, action)], record)``
    and ``("close",)`` over ``conn`` until told to close or the pipe breaks. An exception
    (making or stepping an env) is sent back as ``("__error__", text)`` and ends the worker.

    It dies with ``parent`` and takes what its envs started (VizDoom's games) with it,
    whatever ends it (:func:`~world_models.core.processes.bind_to_parent`)."""
    bind_to_parent(parent)
    signal.signal(signal.SIGTERM, _interrupt)
    envs: list[Any] = []
    try:
        envs = [factory() for _ in range(n_envs)]
        while True:
            msg = conn.recv()
            if msg[0] == "close":
                break
            conn.send(_serve(envs, msg))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass
    except Exception as exc:  # noqa: BLE001 - reported to the main process, which raises
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        try:
            conn.send(("__error__", last))
        except (BrokenPipeError, OSError):
            pass
    finally:
        for env in envs:
            env.close()


def _serve(envs: list, msg: tuple) -> list:
    out: list = []
    if msg[0] == "reset":
        for slot, seed in msg[1]:
            env = envs[slot]
            if msg[2]:  # record: keep the raw frame beside the preprocessed one
                if isinstance(env, FrameObservation):
                    raw, _ = env.env.reset(seed=int(seed))
                    out.append((env.observation(raw), _raw_frame(raw)))
                    continue
            obs, _ = env.reset(seed=int(seed))
            out.append((obs, obs if msg[2] else None))
        return out
    for slot, action in msg[1]:
        if msg[2]:
            obs, raw, rew, term, trunc = _split_raw(envs[slot], action)
        else:
            obs, rew, term, trunc, _ = envs[slot].step(action)
            raw = None
        out.append((obs, raw, float(rew), bool(term), bool(trunc)))
    return out


# ---------------------------------------------------------------------------- main side


class EnvPool:
    """Worker processes holding ``envs_per_worker`` envs each; see the module docstring.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        workers: int = 2,
        envs_per_worker: int = 1,
        step_timeout_s: float = 120.0,
        poll_s: float = 0.2,
        retries: int = 0,
        start_method: str = "spawn",
    ) -> None:
        if workers < 1 or envs_per_worker < 1:
            raise ValueError(
                f"need workers and envs_per_worker >= 1, got {workers}, {envs_per_worker}"
            )
        self.factory, self.workers, self.per_worker = factory, workers, envs_per_worker
        self.step_timeout_s, self.poll_s, self.retries = step_timeout_s, poll_s, retries
        self._ctx = mp.get_context(start_method)
        self._procs: list[Any] = [None] * workers
        self._conns: list[Any] = [None] * workers
        for w in range(workers):
            self._start(w)

    @property
    def slots(self) -> int:
        return self.workers * self.per_worker

    def _start(self, w: int) -> None:
        if self._ctx.get_start_method() != "fork":
            start_resource_tracker()  # one that a SIGHUP to this process group spares
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker,
            args=(child, self.factory, self.per_worker, os.getpid()),
            daemon=True,
            name=f"world-models-env-{w}",
        )
        proc.start()
        child.close()  # so the parent sees EOF when the worker dies
        self._procs[w], self._conns[w] = proc, parent

    def _restart_dead(self) -> None:
        for w, proc in enumerate(self._procs):
            if not proc.is_alive():
                self._conns[w].close()
                proc.join(timeout=1)
                self._start(w)

    def _dead(self, w: int, why: str) -> WorkerDiedError:
        proc = self._procs[w]
        proc.join(timeout=1.0)  # reap it, so the exit code is known
        if proc.is_alive():  # hung: end it, so a retry starts a fresh one
            proc.kill()
            proc.join(timeout=2.0)
        hint = "" if "failed" in why else " If it was killed for memory, use fewer --workers."
        return WorkerDiedError(
            f"environment worker {w} (pid {proc.pid}) {why} (exit code {proc.exitcode}); "
            f"its episodes are lost.{hint}"
        )

    def _request(self, w: int, msg: tuple) -> None:
        try:
            self._conns[w].send(msg)
        except (BrokenPipeError, EOFError, OSError):
            raise self._dead(w, "died") from None

    def _reply(self, w: int) -> list:
        conn, proc = self._conns[w], self._procs[w]
        deadline = time.monotonic() + self.step_timeout_s
        while True:
            try:
                if conn.poll(self.poll_s):
                    reply = conn.recv()
                    if isinstance(reply, tuple) and reply and reply[0] == "__error__":
                        raise self._dead(w, f"failed: {reply[1]}")
                    return reply
            except (EOFError, OSError):
                raise self._dead(w, "died") from None
            if not proc.is_alive():
                if conn.poll(0):  # it answered just before exiting
                    continue
                raise self._dead(w, "died")
            if time.monotonic() > deadline:
                raise self._dead(w, f"did not answer within {self.step_timeout_s:.0f} s")

    def _call(self, per_worker: dict[int, list], kind: str, record: bool) -> dict[int, list]:
        """Send to every worker, then read every reply, even after one worker failed: an
        unread reply would be taken for the answer to the next request (after a retry)."""
        sent, error = [], None
        for w, items in per_worker.items():
            try:
                self._request(w, (kind, items, record))
                sent.append(w)
            except WorkerDiedError as exc:
                error = error or exc
        replies = {}
        for w in sent:
            try:
                replies[w] = self._reply(w)
            except WorkerDiedError as exc:
                error = error or exc
        if error is not None:
            raise error
        return replies

    # ------------------------------------------------------------------ rollouts
    def run(
        self,
        policy: Policy,
        seeds: Sequence[int],
        *,
        candidates: Sequence[int] | None = None,
        max_steps: int | None = None,
        record: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> RolloutResult:
        """Play one episode per seed with ``policy``; see :class:`RolloutResult`.

        ``candidates`` (E,) go to ``policy.reset(..., candidates=...)`` (population mode of
        :class:`~world_models.policies.controller.ControllerPolicy`). ``max_steps`` cuts
        episodes here (in addition to the env's own limit). ``progress(k)`` is called when
        k more episodes finish.
        """
        seeds = np.asarray(list(seeds), np.int64)
        cands = None if candidates is None else np.asarray(list(candidates), np.int64)
        n = len(seeds)
        returns, lengths = np.zeros(n), np.zeros(n, np.int64)
        frames: list[np.ndarray] | None = [None] * n if record else None  # type: ignore
        for start in range(0, n, self.slots):
            idx = np.arange(start, min(n, start + self.slots))
            for attempt in range(self.retries + 1):
                try:
                    r, ln, fr = self._wave(
                        policy, seeds[idx], None if cands is None else cands[idx], max_steps, record
                    )
                    break
                except WorkerDiedError as exc:
                    if attempt == self.retries:
                        raise WorkerDiedError(f"{exc} (after {attempt} restart(s))") from None
                    self._restart_dead()
            returns[idx], lengths[idx] = r, ln
            if frames is not None:
                for j, i in enumerate(idx):
                    frames[i] = fr[j]
            if progress is not None:
                progress(len(idx))
        return RolloutResult(returns, lengths, seeds, frames)

    def _wave(self, policy, seeds, cands, max_steps, record):
        k = len(seeds)
        where = [divmod(i, self.per_worker) for i in range(k)]  # env i -> (worker, slot)
        by_worker: dict[int, list] = {}
        for i, (w, s) in enumerate(where):
            by_worker.setdefault(w, []).append((s, int(seeds[i])))
        replies = self._call(by_worker, "reset", record)
        obs_list = [None] * k
        raw: list[list] = [[] for _ in range(k)]
        for w, items in by_worker.items():
            for (s, _), (obs, fr) in zip(items, replies[w]):
                i = w * self.per_worker + s
                obs_list[i] = obs
                if record:
                    raw[i].append(fr)
        obs = np.stack(obs_list)  # (k, 64, 64, 3) uint8
        if cands is None:
            policy.reset(k, seed=[int(s) for s in seeds])
        else:
            policy.reset(k, seed=[int(s) for s in seeds], candidates=cands)
        active = np.ones(k, bool)
        returns, lengths = np.zeros(k), np.zeros(k, np.int64)
        use_mask = getattr(policy, "supports_active", False)
        while active.any():
            actions = policy.act(obs, active) if use_mask else policy.act(obs)
            by_worker = {}
            for i in np.flatnonzero(active):
                w, s = where[i]
                by_worker.setdefault(w, []).append((s, actions[i]))
            replies = self._call(by_worker, "step", record)
            for w, items in by_worker.items():
                for (s, _), (o, fr, rew, term, trunc) in zip(items, replies[w]):
                    i = w * self.per_worker + s
                    obs[i] = o
                    returns[i] += rew
                    lengths[i] += 1
                    if record:
                        raw[i].append(fr)
                    if term or trunc or (max_steps is not None and lengths[i] >= max_steps):
                        active[i] = False
        return returns, lengths, [np.stack(f) for f in raw] if record else None

    def close(self) -> None:
        """Ask every worker to close its envs; one still there after 2 s is SIGTERMed (it
        closes its envs then), one still there 2 s later SIGKILLed (its group's watchdog
        then ends what its envs started). Replies nobody will read (an interrupted wave)
        are drained meanwhile: a worker blocked sending one would not read the request."""
        procs = zip(self._procs, self._conns)
        live = [(w, p, c) for w, (p, c) in enumerate(procs) if p is not None]
        for _, proc, conn in live:
            try:
                if proc.is_alive():
                    conn.send(("close",))
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 2.0
        for _, proc, conn in live:
            while proc.is_alive() and time.monotonic() < deadline:
                try:
                    if conn.poll(0.05):
                        conn.recv()
                except (EOFError, OSError):
                    proc.join(timeout=max(0.0, deadline - time.monotonic()))
                    break
        for end in ("terminate", "kill"):
            stuck = [proc for _, proc, _ in live if proc.is_alive()]
            for proc in stuck:
                getattr(proc, end)()
            for proc in stuck:
                proc.join(timeout=2)
        for w, proc, conn in live:
            proc.join(timeout=0)  # reap
            conn.close()
            self._procs[w] = None

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _EnvServer:
    """The envs of one Ray actor; ``serve`` answers the same messages as :func:`_worker`."""

    def __init__(self, factory: Callable[[], Any], n_envs: int) -> None:
        kill_group_on_exit()  # what the envs start (VizDoom's games) ends with the actor
        self.envs = [factory() for _ in range(n_envs)]

    def serve(self, msg: tuple) -> list:
        return _serve(self.envs, msg)


class RayEnvPool(EnvPool):
    """:class:`EnvPool` with Ray actors instead of local processes (optional ``ray`` extra).

    The same interface and guarantees: the policy runs batched in this process, actors
    only step envs; an actor that dies (``RayActorError``), raises, or does not answer
    within ``step_timeout_s`` is a :class:`WorkerDiedError` (restarted with ``retries``).
    Connects to the cluster in ``RAY_ADDRESS`` when set, else starts a local Ray.
    ``options``: :class:`EnvPool`'s ``step_timeout_s`` and ``retries`` (actors are not
    polled, and not started as processes).
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        workers: int = 2,
        envs_per_worker: int = 1,
        *,
        cpus_per_worker: float = 1.0,
        **options: Any,
    ) -> None:

        self._ray = require("ray", "ray", "the ray rollout backend")
        if not self._ray.is_initialized():
            self._ray.init(include_dashboard=False, log_to_driver=False)
        self._actor_cls = self._ray.remote(num_cpus=cpus_per_worker)(_EnvServer)
        self._alive: list[bool] = [False] * workers
        super().__init__(factory, workers, envs_per_worker, poll_s=0.0, **options)

    def _start(self, w: int) -> None:
        self._procs[w] = self._actor_cls.remote(self.factory, self.per_worker)
        self._alive[w] = True

    def _restart_dead(self) -> None:
        for w, alive in enumerate(self._alive):
            if not alive:
                self._start(w)

    def _ray_dead(self, w: int, why: str) -> WorkerDiedError:
        self._alive[w] = False
        try:
            self._ray.kill(self._procs[w])
        except Exception:  # noqa: BLE001 - already gone
            pass
        return WorkerDiedError(f"ray env actor {w} {why}; its episodes are lost")

    def _call(self, per_worker: dict[int, list], kind: str, record: bool) -> dict[int, list]:
        ray = self._ray
        refs = {
            w: self._procs[w].serve.remote((kind, items, record)) for w, items in per_worker.items()
        }
        out = {}
        for w, ref in refs.items():
            try:
                out[w] = ray.get(ref, timeout=self.step_timeout_s)
            except ray.exceptions.GetTimeoutError:
                raise self._ray_dead(
                    w, f"did not answer within {self.step_timeout_s:.0f} s"
                ) from None
            except ray.exceptions.RayActorError as exc:
                raise self._ray_dead(w, f"died ({type(exc).__name__})") from None
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None) or exc
                raise self._ray_dead(w, f"failed: {type(cause).__name__}: {cause}") from None
        return out

    def close(self) -> None:
        for w, actor in enumerate(self._procs):
            if actor is not None:
                try:
                    self._ray.kill(actor)
                except Exception:  # noqa: BLE001 - already gone
                    pass
                self._procs[w] = None


def make_pool(
    backend: str, factory: Callable[[], Any], workers: int, envs_per_worker: int, **kwargs
) -> EnvPool:
    """An :class:`EnvPool` (``backend="local"``) or a :class:`RayEnvPool` (``"ray"``)."""
    if isinstance(factory, EnvFactory):
        factory.check()
    if backend == "local":
        return EnvPool(factory, workers, envs_per_worker, **kwargs)
    if backend == "ray":
        return RayEnvPool(factory, workers, envs_per_worker, **kwargs)
    raise ValueError(f"unknown rollout backend {backend!r}; choose local or ray")


def run_sequential(
    factory: Callable[[], Any], policy: Policy, seeds: Sequence[int], max_steps: int | None = None
) -> RolloutResult:
    """The reference: one env in this process, one episode at a time, batch size 1."""
    env = factory()
    returns, lengths = [], []
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=int(seed))
            policy.reset(1, seed=[int(seed)])
            total, t = 0.0, 0
            while True:
                action = policy.act(obs[None])[0]
                obs, rew, term, trunc, _ = env.step(action)
                total += float(rew)
                t += 1
                if term or trunc or (max_steps is not None and t >= max_steps):
                    break
            returns.append(total)
            lengths.append(t)
    finally:
        env.close()
    return RolloutResult(
        np.array(returns), np.array(lengths, np.int64), np.asarray(list(seeds), np.int64)
    )
