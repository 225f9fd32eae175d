"""The optional Ray backend: same results as local processes; a killed actor is an error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from world_models.core.errors import MissingDependencyError
from world_models.envs.pool import (
    EnvFactory,
    RayEnvPool,
    WorkerDiedError,
    make_pool,
    run_sequential,
)
from world_models.models.controller import Controller
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE
from world_models.policies.controller import ControllerPolicy

SHORT = {"min_len": 5, "max_len": 12}


def _policy():
    torch.manual_seed(0)
    c = Controller(latent_size=8, hidden_size=16, output_size=3, action_mode="carracing")
    with torch.no_grad():
        c.fc.weight.mul_(20)
    return ControllerPolicy(
        ConvVAE(8), MDNRNN(latent_size=8, action_size=3, hidden_size=16, num_gaussians=2), c, "cpu"
    )


def test_without_ray_the_backend_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(MissingDependencyError, match=r"world_models\[ray\]"):
        make_pool("ray", EnvFactory("fake"), 1, 1)
    with pytest.raises(ValueError, match="unknown rollout backend"):
        make_pool("dask", EnvFactory("fake"), 1, 1)


def test_ray_pool_matches_sequential_and_reports_a_killed_actor(one_thread):
    ray = pytest.importorskip("ray")
    factory = EnvFactory("fake", env_kwargs=SHORT)
    policy = _policy()
    seq = run_sequential(factory, policy, range(4))
    pool = RayEnvPool(factory, workers=2, envs_per_worker=1, retries=0, cpus_per_worker=0.5)
    try:
        res = pool.run(policy, range(4), record=True)
        assert np.allclose(res.returns, seq.returns, rtol=1e-4)
        assert [f.shape[0] for f in res.frames] == [n + 1 for n in res.lengths]
        ray.kill(pool._procs[1])
        with pytest.raises(WorkerDiedError, match="actor 1 died"):
            pool.run(policy, range(4))
        pool.retries = 1  # restarted, the wave re-run: the same results again
        assert np.allclose(pool.run(policy, range(4)).returns, seq.returns, rtol=1e-4)
    finally:
        pool.close()
        ray.shutdown()
