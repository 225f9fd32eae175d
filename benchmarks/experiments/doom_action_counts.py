"""Action frequencies of a controller over 5 real Doom episodes (docs/results-doom.md).

usage: python doom_action_counts.py CONTROLLER MDRNN VAE
"""

import sys

import numpy as np

from world_models.envs.pool import EnvFactory, run_sequential
from world_models.evaluation.configs import EvaluateConfig
from world_models.evaluation.evaluate import build_policy

c, m, v = sys.argv[1:4]
policy = build_policy(EvaluateConfig(controller=c, vae=v, mdrnn=m, env="doom"))
counts = np.zeros(3)
orig = policy.act


def act(obs, active=None):
    a = orig(obs, active)
    idx = np.arange(len(a)) if active is None else np.flatnonzero(active)
    np.add.at(counts, a[idx], 1)
    return a


policy.act = act
res = run_sequential(EnvFactory("doom", 2100), policy, range(5))
print("lengths", res.lengths, "actions stay/left/right", (counts / counts.sum()).round(3))
