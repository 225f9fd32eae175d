"""MDN-RNN training throughput: our trainer's step against a naive baseline, in one run.

Measured in sequence-steps per second (batch x window length per optimizer step):

* ``ours``: :func:`world_models.training.mdrnn.train_step` on windows drawn from an
  in-memory :class:`~world_models.data.series.SeriesSet` of cached (mu, logvar): one gather,
  z re-sampled, ``nn.LSTM`` over the whole window (cuDNN on CUDA, bf16 autocast there),
  per-dimension mixture loss, clip, Adam.
* ``naive``: what the popular PyTorch port's data path costs, made worse by a Python loop
  over ``nn.LSTMCell``: every batch re-encodes its frames with a ConvVAE
  (``world_models.models.vae.ConvVAE``, uint8 frames already in memory, so no disk or
  decoding is counted against it), then steps the cell once per time step with a
  shared-weight mixture head and the port's GMM loss.
* ``encode+lstm``: the same on-the-fly encoding with ``nn.LSTM`` over the window (what that
  port actually trains with), to show where the time goes.

All three use the same batch, window, z, action, hidden and K. Usage::

    python benchmarks/mdrnn_throughput.py                 # CPU: batch 16 x 32 steps
    python benchmarks/mdrnn_throughput.py --batch 100 --seq-len 999 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from world_models.data.series import SeriesSet
from world_models.models.configs import MDNRNNConfig
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE
from world_models.training.mdrnn import train_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, seconds: float, min_calls: int = 2) -> list[float]:
    """Call ``fn`` for about ``seconds`` (at least ``min_calls`` times); per-call times."""
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < min_calls:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def make_series(episodes: int, length: int, z: int, a: int, seed: int = 0) -> SeriesSet:
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(episodes):
        eps.append(
            {
                "mu": rng.normal(size=(length, z)).astype(np.float16),
                "logvar": np.full((length, z), -4.0, np.float16),
                "action": rng.uniform(-1, 1, size=(length, a)).astype(np.float32),
                "reward": rng.normal(size=length).astype(np.float32),
                "terminated": np.zeros(length, bool),
                "truncated": np.zeros(length, bool),
            }
        )
    return SeriesSet(eps, [f"ep{i}.npz" for i in range(episodes)])


def make_ours(args, device: torch.device):
    """Our trainer's step on windows of an in-memory series set; returns the step function."""
    data = make_series(args.episodes, args.episode_len, args.latent, args.action).to(device)
    config = MDNRNNConfig(
        latent_size=args.latent,
        action_size=args.action,
        hidden_size=args.hidden,
        num_gaussians=args.gaussians,
    )
    model = MDNRNN.from_config(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    autocast = device.type == "cuda"
    gen = torch.Generator().manual_seed(0)
    zgen = torch.Generator(device=device).manual_seed(0)

    def step():
        batch = data.sample(args.batch, args.seq_len, gen)
        train_step(model, optimizer, batch, generator=zgen, autocast=autocast)

    return step


class _PortHead(nn.Module):
    """The port's head: K mixture weights shared by all dimensions, (2Z+1)K + 2 outputs."""

    def __init__(self, hidden: int, z: int, k: int) -> None:
        super().__init__()
        self.z, self.k = z, k
        self.linear = nn.Linear(hidden, (2 * z + 1) * k + 2)

    def nll(self, h: torch.Tensor, z_next: torch.Tensor) -> torch.Tensor:
        """h (..., H), z_next (..., Z): the port's gmm_loss, scaled by 1 / (Z + 2)."""
        out = self.linear(h)
        zk = self.z * self.k
        mu = out[..., :zk].unflatten(-1, (self.k, self.z))  # (..., K, Z)
        sigma = out[..., zk : 2 * zk].unflatten(-1, (self.k, self.z)).exp()  # (..., K, Z)
        logpi = torch.log_softmax(out[..., 2 * zk : 2 * zk + self.k], dim=-1)  # (..., K)
        normal = torch.distributions.Normal(mu, sigma)
        log_prob = normal.log_prob(z_next.unsqueeze(-2)).sum(-1)  # (..., K)
        return -torch.logsumexp(logpi + log_prob, dim=-1).mean() / (self.z + 2)


def make_baseline(args, device: torch.device, loop: bool):
    """The port-style step: encode frames, then LSTMCell loop (``loop``) or nn.LSTM."""
    b, t = args.batch, args.seq_len
    frames = torch.randint(0, 256, (b, t + 1, 3, 64, 64), dtype=torch.uint8, device=device)
    actions = torch.rand(b, t, args.action, device=device) * 2 - 1
    vae = ConvVAE(latent_size=args.latent, uint8_input=True).to(device).eval()
    vae.check_inputs = False
    if loop:
        rnn: nn.Module = nn.LSTMCell(args.latent + args.action, args.hidden).to(device)
    else:
        rnn = nn.LSTM(args.latent + args.action, args.hidden, batch_first=True).to(device)
    head = _PortHead(args.hidden, args.latent, args.gaussians).to(device)
    params = list(rnn.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)

    def step():
        with torch.no_grad():  # the port encodes every batch's frames afresh
            flat = frames.flatten(0, 1)  # (B*(T+1), 3, 64, 64)
            mu, logvar = vae.encode(flat)
            z = (mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)).view(b, t + 1, -1)
        x = torch.cat([z[:, :-1], actions], dim=-1)  # (B, T, Z + A)
        if loop:
            h = torch.zeros(b, args.hidden, device=device)
            c = torch.zeros_like(h)
            outs = []
            for i in range(t):  # one cell call per time step
                h, c = rnn(x[:, i], (h, c))
                outs.append(h)
            hs = torch.stack(outs, 1)  # (B, T, H)
        else:
            hs, _ = rnn(x)  # (B, T, H)
        loss = head.nll(hs, z[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    sizes = {"--batch": 16, "--seq-len": 32, "--latent": 32, "--action": 3, "--hidden": 256}
    for flag, default in {**sizes, "--gaussians": 5}.items():
        p.add_argument(flag, type=int, default=default)
    p.add_argument("--episodes", type=int, default=200, help="episodes in the in-memory set")
    p.add_argument("--episode-len", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=12.0, help="time per method, in all")
    rounds = "alternate the methods this many times (a machine's load drifts; this spreads it)"
    p.add_argument("--rounds", type=int, default=4, help=rounds)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument(
        "--only",
        action="append",
        choices=["ours", "encode+lstm", "naive"],
        help="run only these (repeatable); the ratio needs ours and naive",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    steps = args.batch * args.seq_len
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
        f"batch {args.batch} x {args.seq_len} steps, z {args.latent}, action {args.action}, "
        f"LSTM {args.hidden}, K {args.gaussians}"
    )
    makers = {
        "ours": lambda: make_ours(args, device),
        "encode+lstm": lambda: make_baseline(args, device, loop=False),
        "naive": lambda: make_baseline(args, device, loop=True),
    }
    steps_fn = {n: make() for n, make in makers.items() if not args.only or n in args.only}
    for fn in steps_fn.values():  # warm-up (allocations, first-call overheads)
        fn()
        fn()
    times: dict[str, list[float]] = {n: [] for n in steps_fn}
    for _ in range(args.rounds):
        for name, fn in steps_fn.items():
            times[name] += _timed(fn, device, args.seconds / args.rounds)
    results = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        results[name] = steps / med
        print(
            f"{name:>12}: {steps / med:12,.0f} seq-steps/s  (median {med * 1e3:8.1f} ms/step "
            f"over {len(ts)} steps)",
            flush=True,
        )
    if "ours" in results and "naive" in results:
        print(f"ratio ours / naive: {results['ours'] / results['naive']:.1f}x")
    if "ours" in results and "encode+lstm" in results:
        print(f"ratio ours / encode+lstm: {results['ours'] / results['encode+lstm']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
