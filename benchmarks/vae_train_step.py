"""ConvVAE training-step throughput (img/s) on data already in memory.

Times forward + loss + backward + Adam step for each variant, all in the same process,
and prints each as a ratio against the first (eager fp32). Data are uint8 frames already
on the device, as a trainer that keeps the dataset resident has them.

    python benchmarks/vae_train_step.py                      # CPU: batch 64, fp32 and bf16
    python benchmarks/vae_train_step.py --device cuda --batch 1024 4096 \
        --variants fp32 bf16-cl bf16-cl-compile
"""

from __future__ import annotations

import argparse
import time

import torch

from world_models.models.vae import ConvVAE

VARIANTS = {
    # name: (autocast dtype or None, channels_last, compile)
    "fp32": (None, False, False),
    "bf16": (torch.bfloat16, False, False),
    "fp32-cl": (None, True, False),
    "bf16-cl": (torch.bfloat16, True, False),
    "bf16-cl-compile": (torch.bfloat16, True, True),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(variant: str, batch: int, device: torch.device, steps: int, warmup: int) -> float:
    dtype, channels_last, compile_ = VARIANTS[variant]
    torch.manual_seed(0)
    vae = ConvVAE(uint8_input=True).to(device)
    vae.check_inputs = False
    if channels_last:
        vae = vae.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-4)
    # NHWC uint8 permuted to NCHW is channels_last for free, as the data loaders yield it.
    frames = torch.randint(0, 256, (batch, 64, 64, 3), dtype=torch.uint8, device=device)
    x = frames.permute(0, 3, 1, 2)
    if not channels_last:
        x = x.contiguous()

    def step(model, x):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            recon, mu, logvar = model(x)
            total, _, _ = vae.compute_loss(x, recon, mu, logvar)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return total

    fn = torch.compile(step) if compile_ else step
    for _ in range(warmup):
        fn(vae, x)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = fn(vae, x)
    sync(device)
    elapsed = time.perf_counter() - t0
    assert torch.isfinite(loss)
    return batch * steps / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, nargs="+", default=[64])
    p.add_argument("--variants", nargs="+", default=["fp32", "bf16"], choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: by device)")
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    device = torch.device(args.device)
    steps = args.steps or (20 if device.type == "cpu" else 50)
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{torch.get_num_threads()}"
    )
    print(f"device: {name}, torch {torch.__version__}, {steps} timed steps")
    print(f"{'batch':>6} {'variant':<16} {'img/s':>10} {'vs first':>9}")
    for batch in args.batch:
        base = None
        for variant in args.variants:
            ips = measure(variant, batch, device, steps, args.warmup)
            base = base or ips
            print(f"{batch:>6} {variant:<16} {ips:>10,.0f} {ips / base:>8.2f}x")


if __name__ == "__main__":
    main()
