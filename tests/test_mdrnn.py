"""M, the MDN-RNN: the mixture likelihood, sampling, the step cell, checkpoints and checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from world_models.core.errors import CheckpointError
from world_models.models.configs import MDNRNN_PRESETS
from world_models.models.mdrnn import MDNRNN, MDNOutput, MDNRNNCell, MDNRNNConfig


def _params(logits, mu, logsigma):
    """An MDNOutput (B=1, T, Z, K) built from plain nested lists, logits normalised over K."""
    logits = torch.tensor(logits, dtype=torch.float64)
    logpi = torch.log_softmax(logits, dim=-1)
    return MDNOutput(
        logpi,
        torch.tensor(mu, dtype=torch.float64),
        torch.tensor(logsigma, dtype=torch.float64),
        None,
        None,
        None,
    )


def _hand_nll(logits, mu, logsigma, x):
    """-log sum_k pi_k N(x | mu_k, sigma_k) with plain math, for one dimension."""
    w = [math.exp(v) for v in logits]
    pi = [v / sum(w) for v in w]
    dens = sum(
        p * math.exp(-0.5 * ((x - m) / math.exp(s)) ** 2) / (math.exp(s) * math.sqrt(2 * math.pi))
        for p, m, s in zip(pi, mu, logsigma)
    )
    return -math.log(dens)


def test_mixture_nll_matches_hand_computation_per_dimension():
    model = MDNRNN(latent_size=2, action_size=1, hidden_size=4, num_gaussians=2)
    # B=1, T=2, Z=2, K=2: every dimension has its own mixture weights.
    logits = [[[[0.3, -1.0], [2.0, 0.0]], [[0.0, 0.0], [-0.5, 1.5]]]]
    mu = [[[[0.0, 1.0], [-1.0, 2.0]], [[0.5, -0.5], [3.0, 0.0]]]]
    logsigma = [[[[0.0, -0.5], [0.2, 0.1]], [[-1.0, 0.3], [0.0, -0.2]]]]
    x = [[[0.4, 1.7], [-0.2, 0.9]]]
    out = _params(logits, mu, logsigma)
    parts = model.loss(out, torch.tensor(x, dtype=torch.float64))
    expected = [
        _hand_nll(logits[0][t][d], mu[0][t][d], logsigma[0][t][d], x[0][t][d])
        for t in range(2)
        for d in range(2)
    ]
    assert parts["nll"].item() == pytest.approx(np.mean(expected), rel=1e-6)
    assert parts["total"].item() == pytest.approx(parts["nll"].item())
    assert set(parts) == {"nll", "total"}

    # A padded step is left out of the mean, whatever its (finite) target.
    far = torch.tensor([[[0.4, 1.7], [50.0, -80.0]]], dtype=torch.float64)
    masked = model.loss(out, far, mask=torch.tensor([[True, False]]))
    assert masked["nll"].item() == pytest.approx(np.mean(expected[:2]), rel=1e-6)
    no_next = model.loss(out, far, next_mask=torch.tensor([[True, False]]))
    assert no_next["nll"].item() == pytest.approx(np.mean(expected[:2]), rel=1e-6)


def test_reward_and_done_heads_losses_by_hand():
    tiny = MDNRNNConfig(latent_size=1, action_size=1, hidden_size=4, num_gaussians=1)
    model = MDNRNN(tiny, reward_head=True, done_head=True, done_pos_weight=10.0, done_weight=0.5)
    assert model.head.out_features == 1 * 1 * 3 + 2
    z = torch.zeros(1, 2, 1)
    out = model(z, torch.zeros(1, 2, 1))
    assert out.reward.shape == (1, 2) and out.done_logit.shape == (1, 2)
    reward, done = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, 1.0]])
    parts = model.loss(out, z, reward=reward, done=done)
    r, d = out.reward.detach().double(), out.done_logit.detach().double()
    mse = float(((r - reward.double()) ** 2).mean())
    sig = torch.sigmoid(d)[0]
    bce = (-math.log(1 - float(sig[0])) - 10.0 * math.log(float(sig[1]))) / 2
    assert parts["reward"].item() == pytest.approx(mse, rel=1e-5)
    assert parts["done"].item() == pytest.approx(bce, rel=1e-5)
    total = parts["nll"].item() + mse + 0.5 * bce
    assert parts["total"].item() == pytest.approx(total, rel=1e-5)
    with pytest.raises(ValueError, match="reward head"):
        model.loss(out, z, done=done)


def test_forward_shapes_and_per_dimension_mixture():
    model = MDNRNN(latent_size=3, action_size=2, hidden_size=8, num_gaussians=4)
    assert model.head.out_features == 3 * 4 * 3
    out = model(torch.randn(5, 6, 3), torch.randn(5, 6, 2))
    for t in (out.logpi, out.mu, out.logsigma):
        assert t.shape == (5, 6, 3, 4)
    assert out.reward is None and out.done_logit is None
    assert out.state[0].shape == (1, 5, 8) and out.state[1].shape == (1, 5, 8)
    torch.testing.assert_close(out.logpi.exp().sum(-1), torch.ones(5, 6, 3))
    # Not shared across dimensions (the popular port's deviation).
    assert not torch.allclose(out.logpi[..., 0, :], out.logpi[..., 1, :])


def test_tau_zero_gives_most_likely_components_mean():
    logits = [[[[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]]]]  # (1, 1, Z=2, K=3)
    mu = [[[[-4.0, 7.0, 1.0], [5.0, -3.0, 2.0]]]]
    logsigma = [[[[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]]]
    out = _params(logits, mu, logsigma)
    z0 = MDNRNN.sample(out, tau=0.0)
    assert z0.shape == (1, 1, 2)
    assert z0.tolist() == [[[7.0, 5.0]]]
    g = torch.Generator().manual_seed(0)
    z_small = MDNRNN.sample(out, tau=1e-6, generator=g)
    torch.testing.assert_close(z_small, z0, atol=5e-3, rtol=0)
    with pytest.raises(ValueError, match="tau"):
        MDNRNN.sample(out, tau=-1.0)


def test_temperature_reweights_components_and_scales_noise():
    n = 20000
    logpi = torch.log(torch.tensor([0.8, 0.2])).expand(n, 1, 2)  # (N, Z=1, K=2)
    mu = torch.tensor([-10.0, 10.0]).expand(n, 1, 2)
    logsigma = torch.zeros(n, 1, 2)
    g = torch.Generator().manual_seed(1)
    for tau, frac in ((1.0, 0.8), (2.0, math.sqrt(0.8) / (math.sqrt(0.8) + math.sqrt(0.2)))):
        z = MDNRNN.sample((logpi, mu, logsigma), tau=tau, generator=g)[:, 0]  # (N,)
        left = z < 0
        assert left.float().mean().item() == pytest.approx(frac, abs=0.015)
        assert (z[left] + 10).std().item() == pytest.approx(math.sqrt(tau), rel=0.05)


def test_cell_matches_sequence_model_step_by_step():
    config = MDNRNNConfig(latent_size=4, action_size=2, hidden_size=16, num_gaussians=3)
    model = MDNRNN(config, reward_head=True, done_head=True)
    z, a = torch.randn(3, 7, 4), torch.randn(3, 7, 2)
    h0 = (torch.randn(1, 3, 16), torch.randn(1, 3, 16))
    cell = MDNRNNCell(model)
    for start in (None, h0):
        seq = model(z, a, start)
        state = start
        for t in range(7):
            out = cell(z[:, t], a[:, t], state)
            for name in ("logpi", "mu", "logsigma", "reward", "done_logit"):
                torch.testing.assert_close(
                    getattr(out, name), getattr(seq, name)[:, t], atol=1e-5, rtol=1e-5
                )
            state = out.state
        torch.testing.assert_close(state[0], seq.state[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state[1], seq.state[1], atol=1e-5, rtol=1e-5)
    # Same weights, not a copy: an update to the LSTM is seen by the cell at once.
    before = cell(z[:, 0], a[:, 0]).mu
    with torch.no_grad():
        model.lstm.weight_ih_l0.add_(0.5)
    after = cell(z[:, 0], a[:, 0]).mu
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, model(z[:, :1], a[:, :1]).mu[:, 0], atol=1e-5, rtol=1e-5)
    assert cell.initial_state(5)[0].shape == (1, 5, 16)


def test_lstm_stays_float32_under_autocast():
    # CUDA autocast would run the cuDNN LSTM in float16 (not bf16) with no GradScaler, where
    # M's small LSTM gradients underflow; CPU autocast would run it in bf16. Either way the
    # recurrence must stay float32 while the head may take the lower precision.
    model = MDNRNN(latent_size=4, action_size=1, hidden_size=16, num_gaussians=3)
    z, a = torch.randn(2, 5, 4), torch.randn(2, 5, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(z, a)
        loss = model.loss(out, torch.randn(2, 5, 4))["total"]
    assert out.state[0].dtype == torch.float32 and out.state[1].dtype == torch.float32
    assert loss.dtype == torch.float32
    loss.backward()
    assert model.lstm.weight_hh_l0.grad.abs().sum() > 0
    plain = model(z, a)
    torch.testing.assert_close(out.state[0], plain.state[0])


def test_save_load_round_trip(tmp_path):
    model = MDNRNN.from_config(MDNRNN_PRESETS["doom"])
    assert model.head.out_features == 64 * 5 * 3 + 1
    model.save_pretrained(tmp_path / "m", step=12, meta={"note": "x"})
    loaded = MDNRNN.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config == MDNRNN_PRESETS["doom"]
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert loaded.checkpoint_meta["step"] == 12 and loaded.checkpoint_meta["note"] == "x"
    z, a = torch.randn(2, 3, 64), torch.randn(2, 3, 3)
    assert torch.equal(model(z, a).mu, loaded(z, a).mu)
    other = MDNRNN(latent_size=8, action_size=1, hidden_size=4)
    other.save_pretrained(tmp_path / "small")
    with pytest.raises(CheckpointError):
        from world_models.models.vae import ConvVAE

        ConvVAE.from_pretrained(tmp_path / "small")


def test_bad_shapes_raise_clear_value_errors():
    model = MDNRNN(latent_size=4, action_size=2, hidden_size=8, num_gaussians=2)
    z, a = torch.randn(2, 5, 4), torch.randn(2, 5, 2)
    with pytest.raises(ValueError, match=r"expected z of shape \(B, T, 4\), got \(2, 4\).*step"):
        model(torch.randn(2, 4), a)
    with pytest.raises(ValueError, match=r"expected action of shape \(B, T, 2\), got \(2, 5, 3\)"):
        model(z, torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="disagree on the leading dimensions"):
        model(z, torch.randn(3, 5, 2))
    with pytest.raises(ValueError, match=r"expected z of shape \(N, 4\)"):
        model.step(z, a)
    with pytest.raises(ValueError, match="state"):
        model(z, a, (torch.zeros(1, 2, 9), torch.zeros(1, 2, 9)))
    with pytest.raises(ValueError, match="floating-point z"):
        model(z.long(), a)
    out = model(z, a)
    with pytest.raises(ValueError, match=r"z_next of shape \(2, 5, 4\)"):
        model.loss(out, torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 5\)"):
        model.loss(out, z, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="unsqueeze"):
        MDNRNN(latent_size=4, action_size=1, hidden_size=8)(z, torch.randn(2, 5))
    with pytest.raises(ValueError, match="num_gaussians"):
        MDNRNN(num_gaussians=0)


def test_presets_follow_the_paper():
    car, doom = MDNRNN_PRESETS["carracing"], MDNRNN_PRESETS["doom"]
    assert (car.latent_size, car.action_size, car.hidden_size, car.num_gaussians) == (32, 3, 256, 5)
    assert (doom.latent_size, doom.hidden_size, doom.done_head, doom.done_pos_weight) == (
        64,
        512,
        True,
        10.0,
    )
    assert MDNRNNConfig() == car


def test_shared_mixture_nll_by_hand_and_one_component_per_sample(tmp_path):
    torch.manual_seed(0)
    m = MDNRNN(latent_size=4, action_size=2, hidden_size=8, num_gaussians=3, shared_mixture=True)
    assert m.head.out_features == 3 + 4 * 3 * 2
    z, a = torch.randn(2, 5, 4), torch.randn(2, 5, 2)
    out = m(z, a)
    assert out.logpi.shape == (2, 5, 4, 3)
    assert torch.equal(out.logpi[..., 0, :], out.logpi[..., 3, :])  # one row for all dims
    target = torch.randn(2, 5, 4)
    # -log sum_k pi_k prod_z N(z | mu_kz, sigma_kz), in nats per dimension
    normal = torch.distributions.Normal(out.mu, out.logsigma.exp())
    joint = out.logpi[..., 0, :] + normal.log_prob(target.unsqueeze(-1)).sum(-2)  # (2, 5, 3)
    want = -torch.logsumexp(joint, -1).mean() / 4
    assert torch.allclose(m.loss(out, target)["nll"], want, atol=1e-5)
    # with tiny sigmas a draw copies one component's means into every dimension
    mu = torch.arange(12.0).view(1, 4, 3)  # component k of dim d: 3 d + k
    logpi = torch.log_softmax(torch.zeros(1, 1, 3), -1).expand(1, 4, 3)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        s = m.sample((logpi, mu, torch.full_like(mu, -20.0)), 1.0, g, shared=True)[0]
        k = int(s[0].round())
        assert torch.allclose(s, mu[0, :, k], atol=1e-4)
    m.save_pretrained(tmp_path / "m")
    again = MDNRNN.from_pretrained(tmp_path / "m")
    assert again.config.shared_mixture and torch.allclose(again(z, a).mu, out.mu)
