"""Dream throughput: BatchedDream against stepping one dream at a time, in one run.

Measured at the Doom shapes by default (z 64, LSTM 512, K 5, 1 action, done head):

* ``dream steps/s`` of :class:`~world_models.envs.dream.BatchedDream` with N = 1, 64 and
  1024 parallel dreams (controller + LSTM cell + MDN sampling + done mask per step, via
  ``BatchedDream.evaluate`` with a done head that never fires, so every step is counted).
* ``DreamEnv``: the Gymnasium env, one dream, through ``env.step`` (numpy in and out).
* one CMA-ES generation in the dream, popsize x rollouts (64 x 16 = 1024 dreams) of
  ``--gen-steps`` steps: ``ours`` is one ``evaluate`` of the whole population; the
  baseline is what one-dream-per-process code does in each process: a loop over the
  dreams, batch 1. The baseline is timed on ``--baseline-dreams`` of the 1024 and scaled
  linearly (it is a sequential loop, so its time is linear in the number of dreams).

Usage::

    python benchmarks/dream_throughput.py                    # CPU, 1 thread, ~40 s
    python benchmarks/dream_throughput.py --device cuda --gen-steps 2100 --cuda-graph
"""

from __future__ import annotations

import argparse
import time

import torch

from world_models.envs.dream import BatchedDream, DreamEnv
from world_models.models.configs import ControllerConfig, MDNRNNConfig
from world_models.models.controller import Controller
from world_models.models.mdrnn import MDNRNN


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_models(z: int, hidden: int, k: int, device: torch.device):
    torch.manual_seed(0)
    m = MDNRNN.from_config(
        MDNRNNConfig(
            latent_size=z, action_size=1, hidden_size=hidden, num_gaussians=k, done_head=True
        )
    )
    with torch.no_grad():  # never done: every dream runs every step, so all steps count
        m.head.weight[-1].zero_()
        m.head.bias[-1] = -100.0
    c = Controller.from_config(
        ControllerConfig(latent_size=z, hidden_size=hidden, output_size=1, action_mode="thirds")
    )
    return m.to(device).eval(), c.to(device)


def _graph_check(bd: BatchedDream, asked: bool) -> None:
    if asked and not bd.cuda_graph:  # the capture failed (warned): not graph figures
        raise SystemExit("CUDA graph capture failed (see the warning); no graph figures")


def dream_steps_per_s(m, c, n: int, steps: int, device, cuda_graph: bool) -> float:
    """N dreams of ``steps`` steps as one batch, shaped as a generation is (N / 16
    candidates x 16 rollouts when N allows, else N x 1); best of 2 runs."""
    p, r = (n // 16, 16) if n >= 16 and n % 16 == 0 else (n, 1)
    bd = BatchedDream(m, tau=1.15, max_steps=steps, device=device, cuda_graph=cuda_graph)
    params = torch.randn(p, c.num_params, device=device) * 0.1
    bd.evaluate(c, params, r, seed=0, check_every=10**9)  # warm-up (and graph capture)
    _graph_check(bd, cuda_graph)
    best = float("inf")
    for rep in range(2):
        _sync(device)
        t0 = time.perf_counter()
        bd.evaluate(c, params, r, seed=rep, check_every=10**9)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return n * steps / best


def dream_env_steps_per_s(m, steps: int, device) -> float:
    env = DreamEnv(m, tau=1.15, max_steps=10**9, device=device)
    env.reset(seed=0)
    t0 = time.perf_counter()
    for t in range(steps):
        env.step(t % 3)
    return steps / (time.perf_counter() - t0)


def generation_time(m, c, popsize: int, rollouts: int, steps: int, device, cuda_graph: bool):
    bd = BatchedDream(m, tau=1.15, max_steps=steps, device=device, cuda_graph=cuda_graph)
    params = torch.randn(popsize, c.num_params, device=device) * 0.1
    bd.evaluate(c, params, rollouts, seed=0)  # warm-up
    _graph_check(bd, cuda_graph)
    _sync(device)
    t0 = time.perf_counter()
    bd.evaluate(c, params, rollouts, seed=1)
    _sync(device)
    return time.perf_counter() - t0


def baseline_generation_time(
    m, c, popsize: int, rollouts: int, steps: int, device, sample: int
) -> tuple[float, int]:
    """One dream at a time (batch 1), ``sample`` of the popsize x rollouts dreams, scaled."""
    bd = BatchedDream(m, tau=1.15, max_steps=steps, device=device)
    params = torch.randn(popsize, c.num_params, device=device) * 0.1
    bd.evaluate(c, params[:1], 1, seed=0)  # warm-up
    total = popsize * rollouts
    sample = min(sample, total)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(sample):
        bd.evaluate(c, params[i % popsize : i % popsize + 1], 1, seed=i)
    _sync(device)
    return (time.perf_counter() - t0) * total / sample, sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--gaussians", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100, help="steps per throughput measurement")
    ap.add_argument("--sizes", default="1,64,1024", help="parallel dreams to measure")
    ap.add_argument("--popsize", type=int, default=64)
    ap.add_argument("--rollouts", type=int, default=16)
    ap.add_argument("--gen-steps", type=int, default=200, help="dream length of the generation")
    baseline = "dreams the batch-1 baseline actually runs (then scaled)"
    ap.add_argument("--baseline-dreams", type=int, default=128, help=baseline)
    threads = (
        "torch threads (0: leave as is); 1 by default: the per-process baseline is one core"
        " per process, and 2 threads on a shared box mostly contend"
    )
    ap.add_argument("--threads", type=int, default=1, help=threads)
    ap.add_argument("--cuda-graph", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    m, c = make_models(args.latent, args.hidden, args.gaussians, device)
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"z {args.latent}, LSTM {args.hidden}, K {args.gaussians}, controller "
        f"{c.num_params} params, cuda_graph {args.cuda_graph and device.type == 'cuda'}"
    )

    env_rate = dream_env_steps_per_s(m, max(50, args.steps), device)
    modes = [False] + ([True] if args.cuda_graph and device.type == "cuda" else [])
    names = ["eager", "CUDA graph"][: len(modes)]
    print(f"\n{'dreams':>8} " + " ".join(f"{n + ' steps/s':>20}" for n in names) + "  vs N=1")
    print(f"{'DreamEnv':>8} {env_rate:>20,.0f}  (gymnasium env.step, one dream)")
    base = None
    for n in (int(s) for s in args.sizes.split(",")):
        rates = [dream_steps_per_s(m, c, n, args.steps, device, g) for g in modes]
        base = base or rates[-1]
        cells = " ".join(f"{x:>20,.0f}" for x in rates)
        print(f"{n:>8} {cells}  x{rates[-1] / base:.1f}")

    p, r, s = args.popsize, args.rollouts, args.gen_steps
    times = [generation_time(m, c, p, r, s, device, g) for g in modes]
    naive, k = baseline_generation_time(m, c, p, r, s, device, args.baseline_dreams)
    print(f"\none CMA-ES generation in the dream: {p} x {r} = {p * r} dreams x {s} steps")
    for name, t in zip(names, times):
        print(f"  BatchedDream, one batch, {name + ':':<12} {t:8.3f} s  (x{naive / t:.1f})")
    print(f"  one dream at a time (batch 1):       {naive:8.3f} s  (timed {k} dreams, scaled)")
    full = 2100
    if s < full:
        print(
            f"  at the full {full}-step limit (no early deaths), ours would take "
            f"~{min(times) * full / s:.2f} s per generation on this device"
        )


if __name__ == "__main__":
    main()
