"""V: the convolutional variational autoencoder, exactly as the seed specifies.

Layer table (z = 32, 64x64x3 input; 1,778,819 parameters; the seed's "~4M" is wrong)::

    encoder  Conv2d(3->32,    k4 s2 p1) + BatchNorm2d + ReLU   -> (B, 32, 32, 32)
             Conv2d(32->64,   k4 s2 p1) + BatchNorm2d + ReLU   -> (B, 64, 16, 16)
             Conv2d(64->128,  k4 s2 p1) + BatchNorm2d + ReLU   -> (B, 128, 8, 8)
             Conv2d(128->256, k4 s2 p1) + BatchNorm2d + ReLU   -> (B, 256, 4, 4)
             flatten                                           -> (B, 4096)
    fc_mu, fc_logvar  Linear(4096 -> z)                        -> (B, z) each
    decoder_input     Linear(z -> 4096), reshape               -> (B, 256, 4, 4)
    decoder  ConvTranspose2d(256->128, k4 s2 p1) + BN + ReLU   -> (B, 128, 8, 8)
             ConvTranspose2d(128->64,  k4 s2 p1) + BN + ReLU   -> (B, 64, 16, 16)
             ConvTranspose2d(64->32,   k4 s2 p1) + BN + ReLU   -> (B, 32, 32, 32)
             ConvTranspose2d(32->3,    k4 s2 p1) + Sigmoid     -> (B, 3, 64, 64)

Run ``python -m world_models.models.vae`` for a self-check that prints this table with
the shapes measured on a real forward pass.
"""

from __future__ import annotations

import sys
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from world_models.core.checkpoint import PretrainedMixin
from world_models.models.configs import VAEConfig

IMAGE_SIZE = 64
FLAT_FEATURES = 256 * 4 * 4  # 4096
SPEC_PARAMETERS_Z32 = 1_778_819


def _caller_level() -> int:
    """``stacklevel`` of the first frame outside this library and torch (the user's line)."""
    level, frame = 1, sys._getframe(1)  # level 1: the function that warns
    while frame is not None and frame.f_globals.get("__name__", "").startswith(
        ("world_models.", "torch.")
    ):
        level, frame = level + 1, frame.f_back
    return level


class FrameRangeWarning(UserWarning):
    """Float frames given to :class:`ConvVAE` lie outside [0, 1] (e.g. ``torch.randn``)."""


class ConvVAE(PretrainedMixin, nn.Module):
    """Convolutional VAE from 64x64 frames to a ``latent_size``-dim Gaussian and back.

    Shapes: input ``x`` (B, C, 64, 64), float in [0, 1] (or uint8 with ``uint8_input``;
    other float values work, with one :class:`FrameRangeWarning` per model; wrong shapes,
    dtypes, NaN and Inf are a ``ValueError``);
    ``mu``, ``logvar``, ``z``: (B, latent_size); reconstruction (B, C, 64, 64) in (0, 1).

    Args:
        latent_size: dimension of z.
        input_channels: channels C of the frames.
        kl_tolerance: free bits; each sample's KL is floored at ``kl_tolerance *
            latent_size`` in :meth:`compute_loss` (0 = off).
        uint8_input: also accept uint8 frames, scaled by 1/255 on the device.
    """

    config_class = VAEConfig

    def __init__(
        self,
        latent_size: int = 32,
        input_channels: int = 3,
        kl_tolerance: float = 0.0,
        uint8_input: bool = False,
    ) -> None:
        super().__init__()
        self.config = VAEConfig(
            latent_size=latent_size,
            input_channels=input_channels,
            kl_tolerance=kl_tolerance,
            uint8_input=bool(uint8_input),
        ).validate()
        self.latent_size = latent_size = self.config.latent_size
        self.input_channels = input_channels = self.config.input_channels
        self.kl_tolerance = self.config.kl_tolerance
        self.uint8_input = self.config.uint8_input
        self.check_inputs = True
        """Validate values (finite; warn once when outside [0, 1]); costs a device sync, so
        fast loops turn it off."""
        self._warned_range = False

        def down(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        def up(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.ConvTranspose2d(cin, cout, 4, 2, 1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.encoder = nn.Sequential(
            *down(input_channels, 32), *down(32, 64), *down(64, 128), *down(128, 256)
        )
        self.fc_mu = nn.Linear(FLAT_FEATURES, latent_size)
        self.fc_logvar = nn.Linear(FLAT_FEATURES, latent_size)
        self.decoder_input = nn.Linear(latent_size, FLAT_FEATURES)
        self.decoder = nn.Sequential(
            *up(256, 128),
            *up(128, 64),
            *up(64, 32),
            nn.ConvTranspose2d(32, input_channels, 4, 2, 1),
            nn.Sigmoid(),
        )
        self._initialize_weights()

    def _initialize_weights(self) -> None:
        """Xavier-normal weights and zero biases for every conv and linear layer."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0.0)

    # ------------------------------------------------------------------ input checks
    def _prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate ``x`` (B, C, 64, 64) and return it as floats in [0, 1] on the device."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor of frames, got {type(x).__name__}")
        c = self.input_channels
        expected = f"(B, {c}, {IMAGE_SIZE}, {IMAGE_SIZE})"
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, IMAGE_SIZE, IMAGE_SIZE):
            hint = ""
            if x.dim() == 4 and tuple(x.shape[1:]) == (IMAGE_SIZE, IMAGE_SIZE, c):
                hint = "; this looks channels-last (B, H, W, C): pass x.permute(0, 3, 1, 2)"
            elif x.dim() == 3 and tuple(x.shape) == (c, IMAGE_SIZE, IMAGE_SIZE):
                hint = "; add the batch dimension with x.unsqueeze(0)"
            raise ValueError(f"expected input of shape {expected}, got {tuple(x.shape)}{hint}")
        if x.shape[0] == 0:
            raise ValueError(f"expected a non-empty batch of shape {expected}, got batch size 0")
        param = self.fc_mu.weight
        if x.dtype == torch.uint8:
            if not self.uint8_input:
                raise ValueError(
                    "expected float frames in [0, 1], got uint8; construct "
                    "ConvVAE(uint8_input=True) to pass raw uint8 frames"
                )
            # Frames travel as uint8 (4x fewer bytes) and are scaled only here, on the device.
            return x.to(param.device, non_blocking=True).to(param.dtype).div_(255.0)
        if not x.is_floating_point():
            allowed = "float or uint8" if self.uint8_input else "float"
            raise ValueError(f"expected {allowed} frames, got dtype {x.dtype}")
        if self.check_inputs and not torch.compiler.is_compiling():
            lo, hi = torch.aminmax(x.detach())
            lo, hi = float(lo), float(hi)
            if not (lo == lo and hi == hi) or abs(lo) == float("inf") or abs(hi) == float("inf"):
                raise ValueError("expected finite frames, got NaN or Inf values")
            if (lo < 0.0 or hi > 1.0) and not self._warned_range:
                # The seed's own example feeds torch.randn: run it, but say so, once.
                self._warned_range = True
                looks_0_255 = lo >= 0.0 and hi > 1.5
                hint = "; 0-255 data? divide by 255 or use uint8_input" if looks_0_255 else ""
                warnings.warn(
                    f"ConvVAE: frame values outside [0, 1] (range [{lo:.4g}, {hi:.4g}]); "
                    f"the sigmoid decoder only reconstructs values in [0, 1]{hint} "
                    f"(warned once per model)",
                    FrameRangeWarning,
                    stacklevel=_caller_level(),
                )
        if x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(param.dtype)
        return x

    # ------------------------------------------------------------------ model
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode frames to the posterior's parameters.

        Args:
            x: (B, C, 64, 64) frames in [0, 1] (uint8 in [0, 255] with ``uint8_input``).
        Returns:
            ``(mu, logvar)``, each (B, latent_size).
        """
        x = self._prepare_input(x)
        encoded = self.encoder(x)  # (B, 256, 4, 4)
        flat = encoded.reshape(encoded.size(0), -1)  # (B, 4096)
        return self.fc_mu(flat), self.fc_logvar(flat)

    @torch.no_grad()
    def encode_frames(self, frames, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The one path from stored or env frames to z: ``(mu, logvar)`` of uint8 frames.

        Args:
            frames: (B, 64, 64, C) uint8 in [0, 255], channels last as envs and datasets hold
                them (a numpy array or a tensor, on any device).
            amp: run the conv trunk in bf16 autocast; fc_mu and fc_logvar stay float32, so
                latents stored as float16 keep their precision.
        Returns:
            ``(mu, logvar)``, each (B, latent_size) float32 on the model's device.
        """
        param = self.fc_mu.weight
        x = torch.as_tensor(frames).to(param.device, non_blocking=True)  # (B, 64, 64, C) uint8
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != self.input_channels:
            raise ValueError(
                f"expected (B, {IMAGE_SIZE}, {IMAGE_SIZE}, {self.input_channels}) uint8 frames, "
                f"got {tuple(x.shape)} {x.dtype}"
            )
        # a channels-last view, scaled on the device as encode() scales uint8 input
        x = self._prepare_input(x.permute(0, 3, 1, 2).to(param.dtype).div_(255.0))
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            h = self.encoder(x)  # (B, 256, 4, 4)
        flat = h.reshape(len(h), -1).float()  # (B, 4096)
        return self.fc_mu(flat), self.fc_logvar(flat)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Sample ``z = mu + exp(logvar / 2) * eps`` in training mode; return ``mu`` in eval.

        Args:
            mu, logvar: (B, latent_size).
        Returns:
            z: (B, latent_size).
        """
        if self.training:
            std = torch.exp(0.5 * logvar)
            return mu + std * torch.randn_like(std)
        return mu

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode latents to frames.

        Args:
            z: (B, latent_size).
        Returns:
            reconstruction: (B, C, 64, 64) in (0, 1).
        """
        if z.dim() != 2 or z.shape[1] != self.latent_size:
            raise ValueError(f"expected z of shape (B, {self.latent_size}), got {tuple(z.shape)}")
        h = self.decoder_input(z).view(-1, 256, 4, 4)  # (B, 256, 4, 4)
        return self.decoder(h)  # (B, C, 64, 64)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, sample (mu in eval mode) and decode.

        Args:
            x: (B, C, 64, 64) frames in [0, 1] (uint8 with ``uint8_input``).
        Returns:
            ``(reconstruction, mu, logvar)``: (B, C, 64, 64), (B, Z), (B, Z).
        """
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar

    def compute_loss(
        self,
        x: torch.Tensor,
        reconstruction: torch.Tensor,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        beta: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The beta-VAE loss, computed in float32 even under autocast.

        ``reconstruction_loss`` is the squared error summed over each sample's pixels;
        ``kl_loss`` is the analytic ``KL(N(mu, exp(logvar)) || N(0, I))`` summed over z,
        floored per sample at ``kl_tolerance * latent_size`` when free bits are on. Both are
        averaged over the batch; ``total = reconstruction_loss + beta * kl_loss``.

        Args:
            x: (B, C, 64, 64) target frames (as given to :meth:`forward`).
            reconstruction: (B, C, 64, 64).
            mu, logvar: (B, latent_size).
            beta: weight of the KL term.
        Returns:
            ``(total, reconstruction_loss, kl_loss)``, scalar tensors.
        """
        target = self._prepare_input(x).float()
        if reconstruction.shape != target.shape:
            raise ValueError(
                f"reconstruction shape {tuple(reconstruction.shape)} does not match input "
                f"shape {tuple(target.shape)}"
            )
        batch = target.size(0)
        recon = reconstruction.float()
        mu, logvar = mu.float(), logvar.float()
        reconstruction_loss = F.mse_loss(recon, target, reduction="sum") / batch
        kl_per_sample = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)  # (B,)
        if self.kl_tolerance > 0:
            kl_per_sample = kl_per_sample.clamp(min=self.kl_tolerance * self.latent_size)
        kl_loss = kl_per_sample.sum() / batch
        total = reconstruction_loss + beta * kl_loss
        return total, reconstruction_loss, kl_loss

    @torch.no_grad()
    def sample(self, num_samples: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Decode ``num_samples`` draws of z ~ N(0, I).

        Uses the module's current mode (call ``.eval()`` for BatchNorm's running stats).

        Args:
            num_samples: how many images.
            device: where to draw z and return the images (default: the model's device);
                the model decodes on its own device (the seed's example passes a CUDA
                device to a model on the CPU).
        Returns:
            (num_samples, C, 64, 64) images in (0, 1).
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        model_device = self.fc_mu.weight.device
        device = model_device if device is None else device
        z = torch.randn(num_samples, self.latent_size, device=device)
        return self.decode(z.to(model_device)).to(z.device)

    @torch.no_grad()
    def get_latent_representation(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic latent code ``mu`` of each frame, without gradient.

        Args:
            x: (B, C, 64, 64) frames.
        Returns:
            mu: (B, latent_size).
        """
        mu, _ = self.encode(x)
        return mu


def _describe(module: nn.Module) -> str:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        k, s, p = module.kernel_size[0], module.stride[0], module.padding[0]
        kind = type(module).__name__
        return f"{kind}({module.in_channels}->{module.out_channels}, k{k} s{s} p{p})"
    if isinstance(module, nn.Linear):
        return f"Linear({module.in_features}->{module.out_features})"
    if isinstance(module, nn.BatchNorm2d):
        return f"BatchNorm2d({module.num_features})"
    return type(module).__name__


def layer_table(model: ConvVAE, batch: int = 2) -> list[tuple[str, str, tuple[int, ...], int]]:
    """Run one eval forward and list (name, layer, output shape, parameters) per layer."""
    rows: list[tuple[str, str, tuple[int, ...], int]] = []
    hooks = []
    for name, module in model.named_modules():
        if name and not list(module.children()):
            n_params = sum(p.numel() for p in module.parameters(recurse=False))

            def hook(mod, _inp, out, name=name, n_params=n_params):
                rows.append((name, _describe(mod), tuple(out.shape), n_params))

            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.rand(batch, model.input_channels, IMAGE_SIZE, IMAGE_SIZE))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return rows


def self_check() -> int:
    """Print the layer table and parameter count; return 0 if all matches the seed."""
    model = ConvVAE()
    rows = layer_table(model)
    print(f"{'layer':<14} {'module':<38} {'output shape':<18} {'params':>9}")
    for name, desc, shape, n in rows:
        print(f"{name:<14} {desc:<38} {str(shape):<18} {n:>9,}")
    total = sum(p.numel() for p in model.parameters())
    print(f"total parameters: {total:,} (spec: {SPEC_PARAMETERS_Z32:,})")
    problems = []
    if total != SPEC_PARAMETERS_Z32:
        problems.append(f"parameter count {total:,} != {SPEC_PARAMETERS_Z32:,}")
    shapes = {name: shape for name, _, shape, _ in rows}
    expected = {
        "encoder.2": (2, 32, 32, 32),
        "encoder.5": (2, 64, 16, 16),
        "encoder.8": (2, 128, 8, 8),
        "encoder.11": (2, 256, 4, 4),
        "fc_mu": (2, 32),
        "fc_logvar": (2, 32),
        "decoder_input": (2, 4096),
        "decoder.2": (2, 128, 8, 8),
        "decoder.5": (2, 64, 16, 16),
        "decoder.8": (2, 32, 32, 32),
        "decoder.10": (2, 3, 64, 64),
    }
    for name, shape in expected.items():
        if shapes.get(name) != shape:
            problems.append(f"{name}: output {shapes.get(name)} != {shape}")
    for p in problems:
        print(f"FAIL: {p}")
    print("self-check passed" if not problems else f"self-check FAILED ({len(problems)})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(self_check())
