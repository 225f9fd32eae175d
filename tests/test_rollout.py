"""Parallel real rollouts: equal to sequential ones, and a dead worker is an error, not a hang."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from world_models.envs.pool import EnvFactory, EnvPool, WorkerDiedError, run_sequential
from world_models.models.controller import Controller
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE
from world_models.policies import BrownianPolicy
from world_models.policies.controller import ControllerPolicy

SHORT = {"min_len": 5, "max_len": 12}


# Small models: one thread avoids oversubscribing the cores shared with env workers.
pytestmark = pytest.mark.usefixtures("one_thread")


def _policy():
    torch.manual_seed(0)
    c = Controller(latent_size=8, hidden_size=16, output_size=3, action_mode="carracing")
    with torch.no_grad():
        c.fc.weight.mul_(20)  # strong actions, so returns depend on the controller
    return ControllerPolicy(
        ConvVAE(8),
        MDNRNN(latent_size=8, action_size=3, hidden_size=16, num_gaussians=2),
        c,
        "cpu",
        z_mode="sample",
    )


def test_parallel_matches_sequential_and_records_raw_frames():
    factory = EnvFactory("fake", env_kwargs=SHORT)
    policy = _policy()
    seeds = list(range(5))
    seq = run_sequential(factory, policy, seeds)
    with EnvPool(factory, workers=2, envs_per_worker=2) as pool:  # 4 slots: two waves
        par = pool.run(policy, seeds, record=True)
        assert np.allclose(par.returns, seq.returns, rtol=1e-4)
        assert np.array_equal(par.lengths, seq.lengths)
        assert len(set(np.round(par.returns, 3))) > 1  # episodes really differ
        # raw 96x96 env frames, one more than the steps (the reset frame)
        assert [f.shape for f in par.frames] == [(n + 1, 96, 96, 3) for n in par.lengths]
        # a generic policy without an active mask, and max_steps cut here
        brown = BrownianPolicy(np.array([-1, 0, 0]), np.array([1, 1, 1]))
        a = pool.run(brown, seeds, max_steps=4)
        b = run_sequential(factory, brown, seeds, max_steps=4)
    assert np.array_equal(a.lengths, np.full(5, 4)) and np.allclose(a.returns, b.returns)


def test_killed_worker_is_a_clear_error_not_a_hang():
    factory = EnvFactory("fake", env_kwargs={"min_len": 200, "max_len": 200, "step_delay": 0.01})
    pool = EnvPool(factory, workers=2, envs_per_worker=1, step_timeout_s=30, poll_s=0.1)
    try:
        victim = pool._procs[1].pid
        threading.Timer(1.0, os.kill, (victim, signal.SIGKILL)).start()
        t0 = time.monotonic()
        with pytest.raises(WorkerDiedError, match="worker 1 .* died"):
            pool.run(_policy(), [0, 1])
        assert time.monotonic() - t0 < 20
    finally:
        pool.close()


def test_crashing_env_raises_after_retries():
    factory = EnvFactory("fake", env_kwargs={**SHORT, "die_on_seed": 2})
    with EnvPool(factory, workers=2, retries=1) as pool:
        with pytest.raises(WorkerDiedError, match=r"exit code 7.*after 1 restart"):
            pool.run(_policy(), [0, 1, 2, 3])


class DieOnce(gym.Wrapper):
    """Exits the process once ever (a marker file remembers it): on its first reset, or
    with ``at_step`` at that step of seed 0's episode (other workers mid-wave then)."""

    def __init__(self, env, marker: str, at_step: int = 0) -> None:
        super().__init__(env)
        self.marker, self.at_step, self.seed, self.t = marker, at_step, None, 0

    def _die_once(self) -> None:
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(9)

    def reset(self, **kwargs):
        if not self.at_step:
            self._die_once()
        self.seed, self.t = kwargs.get("seed"), 0
        return self.env.reset(**kwargs)

    def step(self, action):
        self.t += 1
        if self.at_step and self.seed == 0 and self.t == self.at_step:
            self._die_once()
        return self.env.step(action)


class DieOnceFactory:
    def __init__(self, marker: str, at_step: int = 0) -> None:
        self.marker, self.at_step = marker, at_step

    def __call__(self):
        return DieOnce(EnvFactory("fake", env_kwargs=SHORT)(), self.marker, self.at_step)


@pytest.mark.parametrize(
    "workers, per_worker, at_step",
    [(1, 3, 0), (2, 1, 3)],  # alone at reset; one of two, mid-episode
)
def test_dead_worker_is_restarted_and_its_wave_rerun(tmp_path, workers, per_worker, at_step):
    policy = _policy()
    seeds = [0, 1, 2]
    expected = run_sequential(EnvFactory("fake", env_kwargs=SHORT), policy, seeds)
    factory = DieOnceFactory(str(tmp_path / "died"), at_step)
    with EnvPool(factory, workers=workers, envs_per_worker=per_worker, retries=2) as pool:
        res = pool.run(policy, seeds)
        assert (tmp_path / "died").exists()
        assert np.allclose(res.returns, expected.returns, rtol=1e-4)
        again = pool.run(policy, seeds)  # the survivors' pipes are in step too
    assert np.allclose(again.returns, expected.returns, rtol=1e-4)


def test_env_error_in_a_worker_is_reported_with_its_message():
    factory = EnvFactory("fake", env_kwargs={"no_such_option": 1})  # FakeEnv() raises
    with EnvPool(factory, workers=1) as pool:
        with pytest.raises(WorkerDiedError, match="failed: TypeError.*no_such_option"):
            pool.run(_policy(), [0])


def test_hung_worker_times_out():
    factory = EnvFactory("fake", env_kwargs={**SHORT, "step_delay": 30.0})
    with EnvPool(factory, workers=1, step_timeout_s=1.0, poll_s=0.1) as pool:
        t0 = time.monotonic()
        with pytest.raises(WorkerDiedError, match="did not answer within 1 s"):
            pool.run(_policy(), [0])
        assert time.monotonic() - t0 < 10
        assert not pool._procs[0].is_alive()  # ended, not left hanging
