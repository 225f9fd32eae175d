"""The seed's usage examples run verbatim; out-of-range floats warn once, bad inputs raise."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from world_models import ConvVAE
from world_models.models.vae import FrameRangeWarning

SEED_DIR = Path("/work/shared/seed")
SEED = next(SEED_DIR.glob("*.readable.md"), None) if SEED_DIR.is_dir() else None

# The seed's "Usage Examples", copied verbatim from its specification (they feed
# torch.randn noise as images, and sample on `device` without moving the model).
SEED_EXAMPLES = [
    """\
# Create model
vae = ConvVAE(latent_size=32)

# Forward pass
x = torch.randn(4, 3, 64, 64)  # Batch of 4 images
reconstruction, mu, logvar = vae(x)

# Compute loss
total_loss, recon_loss, kl_loss = vae.compute_loss(x, reconstruction, mu, logvar)
""",
    """\
# Sample from learned distribution
device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
generated_images = vae.sample(num_samples=16, device=device)
""",
    """\
# Get deterministic latent representations
latent_codes = vae.get_latent_representation(x)  # Shape: (batch_size, 32)
""",
]


def _run_examples(namespace: dict) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for block in SEED_EXAMPLES:
            exec(compile(block, "seed-example", "exec"), namespace)  # noqa: S102
    return list(caught)


def test_the_seeds_examples_run_verbatim_with_one_warning():
    ns: dict = {"torch": torch, "ConvVAE": ConvVAE}
    caught = _run_examples(ns)
    range_warnings = [w for w in caught if issubclass(w.category, FrameRangeWarning)]
    assert len(range_warnings) == 1, [str(w.message) for w in caught]
    assert "outside [0, 1]" in str(range_warnings[0].message)
    assert range_warnings[0].filename == "seed-example"  # points at the caller's line
    assert ns["reconstruction"].shape == (4, 3, 64, 64)
    assert ns["mu"].shape == ns["logvar"].shape == (4, 32)
    assert torch.isfinite(ns["total_loss"]) and ns["total_loss"].ndim == 0
    assert ns["generated_images"].shape == (16, 3, 64, 64)
    assert ns["latent_codes"].shape == (4, 32)


def test_the_examples_here_are_the_seeds_verbatim():
    if SEED is None:
        pytest.skip("the seed's specification is not on this machine")
    text = SEED.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    for example in SEED_EXAMPLES:
        assert example in blocks, example


def test_out_of_range_floats_warn_once_per_model():
    vae = ConvVAE()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vae(torch.rand(2, 3, 64, 64) * 255)
        vae(torch.rand(2, 3, 64, 64) - 0.5)
        vae.encode(torch.randn(2, 3, 64, 64))
        ConvVAE()(torch.randn(2, 3, 64, 64))  # another model warns once of its own
        vae(torch.rand(2, 3, 64, 64))  # in range: nothing
    msgs = [str(w.message) for w in caught if issubclass(w.category, FrameRangeWarning)]
    assert len(msgs) == 2, msgs
    assert "divide by 255" in msgs[0]


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.randn(2, 3, 32, 32), r"shape"),
        (torch.randn(2, 1, 64, 64), r"shape"),
        (torch.zeros(2, 3, 64, 64, dtype=torch.int64), r"dtype"),
        (torch.full((2, 3, 64, 64), float("nan")), r"NaN"),
        (torch.full((2, 3, 64, 64), -float("inf")), r"Inf"),
    ],
)
def test_shape_channels_dtype_nan_and_inf_stay_errors(x, match):
    with pytest.raises(ValueError, match=match):
        ConvVAE()(x)


def test_the_readme_quickstart_shows_the_seeds_examples_verbatim():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    quickstart = readme.split("## Quickstart (Python)", 1)[1].split("\n## ", 1)[0]
    for example in SEED_EXAMPLES:
        for block in example.strip().split("\n\n"):  # each commented step, as the seed has it
            assert block in quickstart, block
    assert "torch.randn(4, 3, 64, 64)" in quickstart and "warns" in quickstart
