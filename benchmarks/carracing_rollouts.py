"""CarRacing rollouts of V + M + C candidates, as CMA-ES in the real env runs them: the
env's Gymnasium implementation against envpool's, in one run.

Both step the same population (random V z32, M LSTM 256 x 5 Gaussians, C 867 weights: the
paper's sizes; the weights do not change the cost) through ``EnvPool`` worker processes,
V, M and C batched in this process, alternating ``--rounds`` times. Steps/s counts every
env step of every episode, start-up included, as train-controller would.

    python benchmarks/carracing_rollouts.py --popsize 8 --rollouts 2 --max-steps 300
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from world_models.envs.configs import RolloutSettings
from world_models.envs.pool import EnvFactory, make_pool
from world_models.models.configs import CONTROLLER_PRESETS, MDNRNN_PRESETS
from world_models.models.controller import Controller
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE
from world_models.policies.controller import ControllerPolicy


def run(backend: str, args, policy: ControllerPolicy, params: np.ndarray) -> float:
    episodes = args.popsize * args.rollouts
    workers, per = RolloutSettings(workers=args.workers).layout(episodes)
    factory = EnvFactory("carracing", args.max_steps, backend=backend)
    t0 = time.perf_counter()
    with make_pool("local", factory, workers, per) as pool:
        policy.set_population(params)
        seeds = np.tile(np.arange(args.rollouts), args.popsize)
        cands = np.repeat(np.arange(args.popsize), args.rollouts)
        res = pool.run(policy, seeds, candidates=cands, max_steps=args.max_steps)
    return float(res.lengths.sum()) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--popsize", type=int, default=8)
    p.add_argument("--rollouts", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads here (0: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vae = ConvVAE(latent_size=32).eval()
    mdrnn = MDNRNN.from_config(MDNRNN_PRESETS["carracing"]).eval()
    c = Controller.from_config(CONTROLLER_PRESETS["carracing"])
    policy = ControllerPolicy(vae, mdrnn, c, torch.device("cpu"))
    # steer about 0 and full gas: the car drives down the track and episodes run full length
    params = np.random.default_rng(0).normal(0, 0.05, (args.popsize, c.num_params))
    speeds: dict[str, list[float]] = {"gymnasium": [], "envpool": []}
    for r in range(args.rounds):
        for backend in speeds:
            speeds[backend].append(run(backend, args, policy, params))
            print(f"round {r}: {backend:9s} {speeds[backend][-1]:8.0f} env steps/s", flush=True)
    gym_, pool = (statistics.median(speeds[b]) for b in ("gymnasium", "envpool"))
    print(f"median: gymnasium {gym_:.0f}, envpool {pool:.0f} env steps/s: {pool / gym_:.2f}x")
    print(f"torch threads {torch.get_num_threads()}; {args.popsize} x {args.rollouts} episodes")


if __name__ == "__main__":
    main()
