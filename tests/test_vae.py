"""ConvVAE: shapes, the loss formula, gradients, modes, options and input errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from world_models.models.vae import SPEC_PARAMETERS_Z32, ConvVAE, layer_table


def frames(b: int = 4) -> torch.Tensor:
    return torch.rand(b, 3, 64, 64)


def test_parameter_count_matches_the_table_not_the_prose():
    assert sum(p.numel() for p in ConvVAE().parameters()) == SPEC_PARAMETERS_Z32 == 1_778_819


@pytest.mark.parametrize(
    "name, shape",
    [
        ("encoder.0", (2, 32, 32, 32)),
        ("encoder.3", (2, 64, 16, 16)),
        ("encoder.6", (2, 128, 8, 8)),
        ("encoder.9", (2, 256, 4, 4)),
        ("fc_mu", (2, 32)),
        ("fc_logvar", (2, 32)),
        ("decoder_input", (2, 4096)),
        ("decoder.0", (2, 128, 8, 8)),
        ("decoder.3", (2, 64, 16, 16)),
        ("decoder.6", (2, 32, 32, 32)),
        ("decoder.9", (2, 3, 64, 64)),
    ],
)
def test_per_layer_output_shapes(name, shape):
    shapes = {n: s for n, _, s, _ in layer_table(ConvVAE(), batch=2)}
    assert shapes[name] == shape


@pytest.mark.parametrize("latent_size, channels", [(32, 3), (64, 3), (8, 1)])
def test_forward_shapes_for_other_configs(latent_size, channels):
    vae = ConvVAE(latent_size=latent_size, input_channels=channels)
    recon, mu, logvar = vae(torch.rand(5, channels, 64, 64))
    assert recon.shape == (5, channels, 64, 64)
    assert mu.shape == logvar.shape == (5, latent_size)


def test_loss_matches_its_formula():
    vae = ConvVAE()
    x = frames(3)
    recon, mu, logvar = vae(x)
    total, rec, kl = vae.compute_loss(x, recon, mu, logvar, beta=0.7)
    # Written out element by element, independently of the implementation.
    want_rec = sum(((recon[i] - x[i]) ** 2).sum() for i in range(3)) / 3
    want_kl = (
        sum(-0.5 * (1 + logvar[i] - mu[i] ** 2 - torch.exp(logvar[i])).sum() for i in range(3)) / 3
    )
    torch.testing.assert_close(rec, want_rec)
    torch.testing.assert_close(kl, want_kl)
    torch.testing.assert_close(total, want_rec + 0.7 * want_kl)


def test_kl_is_zero_for_the_prior_and_positive_otherwise():
    vae = ConvVAE()
    x = frames(2)
    z = torch.zeros(2, 32)
    _, _, kl0 = vae.compute_loss(x, x, z, z)
    assert kl0.item() == pytest.approx(0.0, abs=1e-6)
    _, _, kl1 = vae.compute_loss(x, x, z + 1.0, z)
    assert kl1.item() == pytest.approx(0.5 * 32, rel=1e-5)  # 0.5 * mu^2 summed over 32 dims


def test_free_bits_floor_each_samples_total_kl():
    vae = ConvVAE(kl_tolerance=0.5)
    x = frames(2)
    mu = torch.zeros(2, 32)
    mu[1] = 2.0  # sample 1: KL = 0.5 * 4 * 32 = 64 > floor 16; sample 0: KL 0 -> 16
    total, rec, kl = vae.compute_loss(x, x, mu, torch.zeros(2, 32))
    assert kl.item() == pytest.approx((16.0 + 64.0) / 2)
    mu.requires_grad_(True)
    _, _, kl = vae.compute_loss(x, x, mu, torch.zeros(2, 32))
    kl.backward()
    assert torch.all(mu.grad[0] == 0)  # below the floor: no gradient
    assert torch.all(mu.grad[1] != 0)


def test_gradients_reach_every_parameter():
    vae = ConvVAE()
    x = frames(4)
    total, _, _ = vae.compute_loss(x, *vae(x))
    total.backward()
    missing = [n for n, p in vae.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_training_step_changes_weights_and_lowers_loss():
    vae = ConvVAE()
    x = frames(16)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    before = vae.fc_mu.weight.detach().clone()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        total, _, _ = vae.compute_loss(x, *vae(x))
        total.backward()
        opt.step()
        losses.append(total.item())
    assert not torch.equal(before, vae.fc_mu.weight)
    assert losses[-1] < losses[0]


def test_reparameterize_samples_in_training_and_returns_mu_in_eval():
    vae = ConvVAE()
    mu, logvar = torch.zeros(1000, 32), torch.zeros(1000, 32)
    z = vae.reparameterize(mu, logvar)
    assert abs(z.std().item() - 1.0) < 0.05
    vae.eval()
    assert torch.equal(vae.reparameterize(mu, logvar), mu)


def test_eval_mode_is_deterministic():
    vae = ConvVAE().eval()
    x = frames(3)
    a, b = vae(x), vae(x)
    for t, u in zip(a, b):
        assert torch.equal(t, u)
    torch.testing.assert_close(vae.get_latent_representation(x), a[1])


def test_latent_representation_has_no_gradient():
    vae = ConvVAE()
    mu = vae.get_latent_representation(frames(2))
    assert mu.shape == (2, 32) and not mu.requires_grad


def test_sample_range_and_shape():
    vae = ConvVAE().eval()
    s = vae.sample(6, "cpu")
    assert s.shape == (6, 3, 64, 64)
    assert s.min() >= 0 and s.max() <= 1
    assert not s.requires_grad


def test_uint8_input_is_scaled_on_the_device():
    vae = ConvVAE(uint8_input=True).eval()
    x8 = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    xf = x8.float() / 255
    for t, u in zip(vae(x8), vae(xf)):
        torch.testing.assert_close(t, u)
    recon, mu, logvar = vae(x8)
    torch.testing.assert_close(
        vae.compute_loss(x8, recon, mu, logvar)[0], vae.compute_loss(xf, recon, mu, logvar)[0]
    )


def test_uint8_needs_the_option():
    with pytest.raises(ValueError, match="uint8_input=True"):
        ConvVAE()(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.rand(2, 64, 64, 3), r"channels-last"),
        (torch.rand(3, 64, 64), r"unsqueeze"),
        (
            torch.rand(2, 3, 32, 32),
            r"expected input of shape \(B, 3, 64, 64\), got \(2, 3, 32, 32\)",
        ),
        (torch.rand(2, 1, 64, 64), r"got \(2, 1, 64, 64\)"),
        (torch.zeros(2, 3, 64, 64, dtype=torch.int32), r"dtype torch.int32"),
        (torch.full((2, 3, 64, 64), float("inf")), r"Inf"),
        (torch.full((2, 3, 64, 64), float("nan")), r"NaN"),
        (torch.zeros(0, 3, 64, 64), r"non-empty"),
    ],
)
def test_bad_input_raises_value_error_naming_expected_and_got(x, match):
    with pytest.raises(ValueError, match=match):
        ConvVAE()(x)


def test_bad_latent_shape_for_decode():
    with pytest.raises(ValueError, match=r"\(B, 32\)"):
        ConvVAE().decode(torch.zeros(2, 16))


def test_xavier_normal_init_and_zero_biases():
    vae = ConvVAE()
    for m in vae.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            assert torch.all(m.bias == 0)
    w = vae.encoder[9].weight  # Conv2d(128 -> 256): fan_in 2048, fan_out 4096
    assert w.std().item() == pytest.approx(math.sqrt(2 / (2048 + 4096)), rel=0.05)


def test_channels_last_input_gives_the_same_result():
    vae = ConvVAE().eval()
    x = frames(2)
    ref = vae(x)[0]
    vae_cl = vae.to(memory_format=torch.channels_last)
    out = vae_cl(x.contiguous(memory_format=torch.channels_last))[0]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_on_cpu_keeps_the_loss_in_float32(dtype):
    vae = ConvVAE()
    x = frames(4)
    with torch.autocast("cpu", dtype=dtype):
        recon, mu, logvar = vae(x)
        total, rec, kl = vae.compute_loss(x, recon, mu, logvar)
    assert recon.dtype == dtype
    assert total.dtype == rec.dtype == kl.dtype == torch.float32
    total.backward()
    assert vae.fc_mu.weight.grad is not None and torch.isfinite(vae.fc_mu.weight.grad).all()
    ref_total = vae.compute_loss(x, *vae(x))[0]
    assert total.item() == pytest.approx(ref_total.item(), rel=0.05)


@pytest.mark.slow
def test_torch_compile_smoke():
    vae = ConvVAE().eval()
    x = frames(2)
    compiled = torch.compile(vae)
    out = compiled(x)
    torch.testing.assert_close(out[0], vae(x)[0], atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
def test_cuda_bf16_channels_last_training_step():
    vae = ConvVAE(uint8_input=True).cuda().to(memory_format=torch.channels_last)
    x = torch.randint(0, 256, (64, 64, 64, 3), dtype=torch.uint8, device="cuda").permute(0, 3, 1, 2)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        total, _, _ = vae.compute_loss(x, *vae(x))
    total.backward()
    assert total.dtype == torch.float32 and torch.isfinite(total)
