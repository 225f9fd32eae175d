"""The seed's validation, as a library function: architecture, signatures, documentation.

Each check is a small function returning ``None`` (pass) or a message (fail); the list is
the contract of ``world-models validate``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import world_models.models.vae as vae_module
from world_models.models.configs import VAEConfig, ValidateConfig
from world_models.models.vae import FLAT_FEATURES, SPEC_PARAMETERS_Z32, ConvVAE


@dataclass
class CheckResult:
    group: str
    name: str
    error: str | None

    @property
    def passed(self) -> bool:
        return self.error is None


def _layers(seq: nn.Sequential, kind: type) -> list[nn.Module]:
    return [m for m in seq if isinstance(m, kind)]


def _geometry(convs: list[nn.Module]) -> str | None:
    bad = [c for c in convs if (c.kernel_size, c.stride, c.padding) != ((4, 4), (2, 2), (1, 1))]
    return f"{len(bad)} layer(s) not k4 s2 p1" if bad else None


def _channels(convs: list[nn.Module], want: list[int]) -> str | None:
    got = [convs[0].in_channels] + [c.out_channels for c in convs] if convs else []
    return None if got == want else f"channels {got}, expected {want}"


def _follows(seq: nn.Sequential, kind: type, after: type, n: int) -> str | None:
    mods = list(seq)
    idx = [i for i, m in enumerate(mods) if isinstance(m, kind)][:n]
    ok = all(i + 1 < len(mods) and isinstance(mods[i + 1], after) for i in idx)
    return None if ok else f"not every {kind.__name__} is followed by {after.__name__}"


def _linear(layer: nn.Linear, sizes: tuple[int, int]) -> str | None:
    return None if (layer.in_features, layer.out_features) == sizes else str(layer)


def _ends_with(seq: nn.Sequential, kind: type) -> str | None:
    mods = list(seq)
    return None if mods and isinstance(mods[-1], kind) else f"last layer is not {kind.__name__}"


def _count(got: int, want: int) -> str | None:
    return None if got == want else f"{got}"


def _fresh(vae: ConvVAE) -> ConvVAE:
    """A new ConvVAE of ``vae``'s sizes (its own weights may have been trained)."""
    return ConvVAE.from_config(
        VAEConfig(latent_size=vae.latent_size, input_channels=vae.input_channels)
    )


def _shapes(vae: ConvVAE) -> str | None:
    z, c = vae.latent_size, vae.input_channels
    model = _fresh(vae).eval()
    with torch.no_grad():
        x = torch.rand(2, c, 64, 64)
        feats = model.encoder(x)  # (2, 256, 4, 4)
        recon, mu, logvar = model(x)
    want = [(2, 256, 4, 4), (2, c, 64, 64), (2, z), (2, z)]
    got = [tuple(t.shape) for t in (feats, recon, mu, logvar)]
    return None if got == want else f"shapes {got}, expected {want}"


def _init(vae: ConvVAE) -> str | None:
    for m in _fresh(vae).modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if m.bias is not None and m.bias.abs().max() != 0:
                return f"{m} has a non-zero initial bias"
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
            want = math.sqrt(2.0 / (fan_in + fan_out))
            got = m.weight.std().item()
            if m.weight.numel() > 1000 and not 0.8 * want < got < 1.2 * want:
                return f"{m}: weight std {got:.4f}, Xavier-normal expects {want:.4f}"
    return None


def architecture_checks(vae: ConvVAE) -> list[tuple[str, Callable[[], str | None]]]:
    z, c = vae.latent_size, vae.input_channels
    enc, dec = vae.encoder, vae.decoder
    enc_convs, dec_convs = _layers(enc, nn.Conv2d), _layers(dec, nn.ConvTranspose2d)
    n_params = sum(p.numel() for p in vae.parameters())
    return [
        ("4 encoder Conv2d layers", lambda: _count(len(enc_convs), 4)),
        ("encoder convs are k4 s2 p1", lambda: _geometry(enc_convs)),
        ("encoder channels 3-32-64-128-256", lambda: _channels(enc_convs, [c, 32, 64, 128, 256])),
        ("encoder BatchNorm after each conv", lambda: _follows(enc, nn.Conv2d, nn.BatchNorm2d, 4)),
        ("encoder ReLU after each BatchNorm", lambda: _follows(enc, nn.BatchNorm2d, nn.ReLU, 4)),
        ("flattened features 4096", lambda: None if FLAT_FEATURES == 4096 else "not 4096"),
        ("fc_mu is Linear(4096 -> z)", lambda: _linear(vae.fc_mu, (4096, z))),
        ("fc_logvar is Linear(4096 -> z)", lambda: _linear(vae.fc_logvar, (4096, z))),
        ("decoder input Linear(z -> 4096)", lambda: _linear(vae.decoder_input, (z, 4096))),
        ("4 decoder ConvTranspose2d layers", lambda: _count(len(dec_convs), 4)),
        ("decoder convs are k4 s2 p1", lambda: _geometry(dec_convs)),
        ("decoder channels 256-128-64-32-3", lambda: _channels(dec_convs, [256, 128, 64, 32, c])),
        (
            "decoder BatchNorm after the first 3",
            lambda: _follows(dec, nn.ConvTranspose2d, nn.BatchNorm2d, 3),
        ),
        ("decoder ReLU after each BatchNorm", lambda: _follows(dec, nn.BatchNorm2d, nn.ReLU, 3)),
        ("decoder ends with Sigmoid", lambda: _ends_with(dec, nn.Sigmoid)),
        ("tensor shapes through the network", lambda: _shapes(vae)),
        (
            "parameter count 1,778,819 at z=32",
            lambda: None if z != 32 or n_params == SPEC_PARAMETERS_Z32 else f"{n_params:,}",
        ),
        ("Xavier-normal weights, zero biases", lambda: _init(vae)),
    ]


def signature_checks() -> list[tuple[str, Callable[[], str | None]]]:
    want = {
        "__init__": ["self", "latent_size", "input_channels"],
        "forward": ["self", "x"],
        "encode": ["self", "x"],
        "decode": ["self", "z"],
        "reparameterize": ["self", "mu", "logvar"],
        "compute_loss": ["self", "x", "reconstruction", "mu", "logvar", "beta"],
        "sample": ["self", "num_samples", "device"],
        "get_latent_representation": ["self", "x"],
    }

    def check(name, params):
        sig = inspect.signature(getattr(ConvVAE, name))
        got = list(sig.parameters)[: len(params)]
        if got != params:
            return f"{name}{sig}: expected parameters {params}"
        defaults = {"latent_size": 32, "input_channels": 3, "beta": 1.0}
        for p in params:
            if p in defaults and sig.parameters[p].default != defaults[p]:
                return f"{name}: default {p}={sig.parameters[p].default}, expected {defaults[p]}"
        return None

    def behaviour():
        vae = ConvVAE()
        x = torch.rand(3, 3, 64, 64)
        out = vae(x)
        if not (isinstance(out, tuple) and len(out) == 3):
            return "forward must return (reconstruction, mu, logvar)"
        loss = vae.compute_loss(x, *out)
        if not (isinstance(loss, tuple) and len(loss) == 3):
            return "compute_loss must return (total, reconstruction_loss, kl_loss)"
        vae.eval()
        mu, logvar = vae.encode(x)
        if not torch.equal(vae.reparameterize(mu, logvar), mu):
            return "reparameterize must return mu in eval mode"
        s = vae.sample(4, "cpu")
        if s.shape != (4, 3, 64, 64) or s.min() < 0 or s.max() > 1:
            return "sample must return (N, 3, 64, 64) images in [0, 1]"
        return None

    checks = [(f"signature of {n}", lambda n=n, p=p: check(n, p)) for n, p in want.items()]
    checks.append(("return values and eval-mode behaviour", behaviour))
    return checks


def documentation_checks() -> list[tuple[str, Callable[[], str | None]]]:

    public = [
        "forward",
        "encode",
        "decode",
        "reparameterize",
        "compute_loss",
        "sample",
        "get_latent_representation",
    ]

    def doc_of(obj, needle=None):
        doc = inspect.getdoc(obj) or ""
        if len(doc) < 20:
            return "missing or too short"
        if needle and needle not in doc:
            return f"does not mention {needle!r}"
        return None

    def methods_have_docs():
        bad = [m for m in public if doc_of(getattr(ConvVAE, m))]
        return f"undocumented: {bad}" if bad else None

    def methods_have_shapes():
        bad = [
            m
            for m in public
            if "(B" not in (inspect.getdoc(getattr(ConvVAE, m)) or "") and m != "sample"
        ]
        return f"no tensor shapes in: {bad}" if bad else None

    return [
        ("module docstring with the layer table", lambda: doc_of(vae_module, "ConvTranspose2d")),
        ("class docstring with tensor shapes", lambda: doc_of(ConvVAE, "(B, C, 64, 64)")),
        ("every public method documented", methods_have_docs),
        ("method docstrings give tensor shapes", methods_have_shapes),
        ("loss documents its parts", lambda: doc_of(ConvVAE.compute_loss, "kl_loss")),
    ]


def run_checks(vae: ConvVAE | None = None) -> list[CheckResult]:
    """Run every check against ``vae`` (a fresh default ``ConvVAE`` if ``None``)."""
    vae = vae if vae is not None else ConvVAE()
    groups = [
        ("architecture", architecture_checks(vae)),
        ("signatures", signature_checks()),
        ("documentation", documentation_checks()),
    ]
    results = []
    for group, checks in groups:
        for name, fn in checks:
            try:
                error = fn()
            except Exception as exc:  # noqa: BLE001 - a crashing check is a failed check
                error = f"raised {type(exc).__name__}: {exc}"
            results.append(CheckResult(group, name, error))
    return results


def validate(config: ValidateConfig) -> int:
    """Run the checks, print them by group; exit status 0 when all pass, else 1."""
    vae = ConvVAE.from_pretrained(config.checkpoint) if config.checkpoint else None
    results = run_checks(vae)
    group = None
    for r in results:
        if config.quiet and r.passed:
            continue
        if r.group != group:
            group = r.group
            print(f"[{group}]")
        mark = "PASS" if r.passed else "FAIL"
        print(f"  {mark}  {r.name}" + ("" if r.passed else f": {r.error}"))
    passed = sum(r.passed for r in results)
    print(f"{passed}/{len(results)} checks passed")
    return 0 if passed == len(results) else 1
