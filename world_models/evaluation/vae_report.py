"""Pictures of a trained VAE: reconstructions, samples and a latent traversal."""

from __future__ import annotations

from pathlib import Path

import torch

from world_models.core.media import grid, save_grid, save_png, save_reconstruction_grid
from world_models.models.vae import ConvVAE


@torch.no_grad()
def latent_traversal(
    vae: ConvVAE, frame: torch.Tensor, dims: list[int], values: torch.Tensor
) -> torch.Tensor:
    """Decode ``frame``'s mu with one dimension at a time swept over ``values``.

    Args:
        frame: (1, C, 64, 64) uint8 or float frame.
        dims: latent dimensions to sweep (one row each).
        values: (V,) values for the swept dimension.
    Returns:
        (len(dims) * V, C, 64, 64) images, row-major.
    """
    mu = vae.get_latent_representation(frame)  # (1, Z)
    z = mu.repeat(len(dims) * len(values), 1)  # (D*V, Z)
    for i, d in enumerate(dims):
        z[i * len(values) : (i + 1) * len(values), d] = values.to(z)
    return vae.decode(z)


@torch.no_grad()
def most_used_dims(vae: ConvVAE, frames: torch.Tensor, k: int) -> list[int]:
    """The ``k`` latent dimensions with the largest mean KL over ``frames`` (the ones in use)."""
    mu, logvar = vae.encode(frames)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).float().mean(0)  # (Z,)
    return kl.topk(min(k, kl.numel())).indices.tolist()


@torch.no_grad()
def write_vae_report(
    vae: ConvVAE,
    frames: torch.Tensor,
    out_dir: str | Path,
    *,
    num_samples: int = 32,
    traversal_dims: int = 8,
    seed: int = 0,
    prefix: str = "",
) -> dict[str, Path]:
    """Write ``{prefix}reconstructions.png``, ``samples.png`` and ``latent_traversal.png``.

    Args:
        frames: (N, C, 64, 64) held-out frames (uint8 or float), N >= 1.
    Returns:
        name -> path of each picture.
    """
    out_dir = Path(out_dir)
    was_training = vae.training
    vae.eval()
    device = vae.fc_mu.weight.device
    try:
        frames = frames.to(device)
        recon, _, _ = vae(frames)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        z = torch.randn(num_samples, vae.latent_size, generator=gen).to(device)
        dims = most_used_dims(vae, frames, traversal_dims)
        values = torch.linspace(-3, 3, 9)
        trav = latent_traversal(vae, frames[:1], dims, values)
        paths = {
            "reconstructions": save_reconstruction_grid(
                frames, recon, out_dir / f"{prefix}reconstructions.png"
            ),
            "samples": save_grid(vae.decode(z), out_dir / f"{prefix}samples.png", nrow=8),
            "latent_traversal": save_png(
                grid(trav, nrow=len(values), scale=2), out_dir / f"{prefix}latent_traversal.png"
            ),
        }
    finally:
        vae.train(was_training)
    return paths
