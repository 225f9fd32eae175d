"""The dream: DreamEnv's Gymnasium contract and rules, BatchedDream against single dreams."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import world_models.envs.dream as dream_module
from world_models.data.series import load_initial_states
from world_models.envs.dream import DREAM_ID, BatchedDream, DreamEnv
from world_models.models.configs import MDNRNNConfig
from world_models.models.controller import Controller
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE

Z, H = 6, 12


# Small models: one thread avoids oversubscribing the cores shared with env workers.
pytestmark = pytest.mark.usefixtures("one_thread")


def _mdrnn(done_bias: float | None = None, reward: bool = False, action_size: int = 1):
    torch.manual_seed(0)
    sizes = MDNRNNConfig(latent_size=Z, action_size=action_size, hidden_size=H, num_gaussians=3)
    m = MDNRNN(sizes, reward_head=reward, done_head=done_bias is not None)
    if done_bias is not None:
        with torch.no_grad():  # the done logit is the head's last output
            m.head.weight[-1].zero_()
            m.head.bias[-1] = done_bias
    return m.eval()


@pytest.mark.filterwarnings("ignore:.*infinity:UserWarning")  # z and h are unbounded
def test_check_env_and_gymnasium_make():
    init = torch.randn(5, Z)
    env = gym.make(
        DREAM_ID,
        mdrnn=_mdrnn(-5.0),
        vae=ConvVAE(Z),
        initial_mu=init,
        initial_logvar=torch.zeros(5, Z),
        render_mode="rgb_array",
        max_steps=20,
    )
    check_env(env.unwrapped, skip_render_check=False)
    obs, info = env.reset(seed=3)
    assert obs.shape == (Z + H,) and obs.dtype == np.float32
    assert np.allclose(obs[Z:], 0)  # h starts at zero
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    obs2, r, term, trunc, info = env.step(1)
    assert r == 1.0 and not term and obs2.shape == (Z + H,)
    # same seed -> same dream; another seed -> another
    a = [env.reset(seed=7)[0]] + [env.step(i % 3)[0] for i in range(5)]
    b = [env.reset(seed=7)[0]] + [env.step(i % 3)[0] for i in range(5)]
    c = env.reset(seed=8)[0]
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[0], c)
    env.close()


def test_initial_z_comes_from_the_given_frames():
    mu = torch.full((1, Z), 3.0)
    env = DreamEnv(_mdrnn(), initial_mu=mu, initial_logvar=torch.full((1, Z), -20.0))
    _, info = env.reset(seed=0)
    assert np.allclose(info["z"], 3.0, atol=1e-3)


def test_done_head_ends_episode_and_step_limit_truncates():
    env = DreamEnv(_mdrnn(done_bias=5.0), max_steps=100)
    env.reset(seed=0)
    _, r, term, trunc, info = env.step(0)
    assert term and not trunc and info["done_logit"] > 0 and r == 1.0
    env = DreamEnv(_mdrnn(done_bias=-5.0), max_steps=7)
    env.reset(seed=0)
    flags = [env.step(0)[2:4] for _ in range(7)]
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])


def test_reward_head_replaces_the_survival_reward():
    m = _mdrnn(reward=True)
    with torch.no_grad():  # reward is the output right after the mixture
        m.head.weight[Z * 3 * 3].zero_()
        m.head.bias[Z * 3 * 3] = 0.25
    env = DreamEnv(m)
    env.reset(seed=0)
    assert env.step(2)[1] == pytest.approx(0.25)


def test_batched_equals_single_dreams_with_the_same_noise():
    m = _mdrnn(done_bias=None, action_size=3)
    n, steps = 4, 6
    big = BatchedDream(m, tau=1.0)
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(n, Z, generator=gen)
    actions = torch.randn(steps, n, 3, generator=gen)
    noises = [big.noise(n, gen) for _ in range(steps)]
    big.reset(n, z=z0)
    big_z = [big.step(actions[t], noises[t])[0].clone() for t in range(steps)]
    for i in range(n):
        one = BatchedDream(m, tau=1.0)
        one.reset(1, z=z0[i : i + 1])
        for t in range(steps):
            u, eps, _ = noises[t]
            z = one.step(actions[t, i : i + 1], (u[i : i + 1], eps[i : i + 1]))[0]
            assert torch.allclose(z[0], big_z[t][i], atol=1e-5)


def test_batched_matches_dream_env_at_small_tau():
    m = _mdrnn(done_bias=None)
    init = torch.randn(3, Z)
    env = DreamEnv(m, initial_mu=init, initial_logvar=torch.full((3, Z), -40.0), tau=1e-6)
    obs, info = env.reset(seed=1)
    bd = BatchedDream(m, tau=1e-6)
    bd.reset(1, z=torch.as_tensor(info["z"])[None])
    for t in range(8):
        a = t % 3
        obs, *_ = env.step(a)
        scalar = torch.tensor([[(0.0, -1.0, 1.0)[a]]])
        z, h, _, _ = bd.step(scalar, generator=torch.Generator().manual_seed(t))
        assert np.allclose(obs[:Z], z[0].numpy(), atol=1e-2)
        assert np.allclose(obs[Z:], h[0].numpy(), atol=1e-2)


def test_evaluate_equals_per_candidate_and_counts_survival():
    m = _mdrnn(done_bias=-1.0)
    with torch.no_grad():  # done when the action input is "right" (+1): policy decides
        m.head.weight[-1].zero_()
        m.head.bias[-1] = -1.0
        m.lstm.weight_ih_l0.zero_()
        m.lstm.weight_hh_l0.zero_()
        m.lstm.bias_ih_l0.zero_()
        m.lstm.bias_hh_l0.zero_()
        m.lstm.weight_ih_l0[2 * H : 3 * H, Z] = 5.0  # cell input gate follows the action
        m.lstm.bias_ih_l0[3 * H : 4 * H] = 5.0  # output gate open
        m.head.weight[-1, :] = 3.0
    c = Controller(latent_size=Z, hidden_size=H, output_size=1, action_mode="thirds")
    params = torch.zeros(3, c.num_params)
    params[0, -1] = -0.9  # bias -> always LEFT: survives to the limit
    params[1, -1] = 0.0  # STAY
    params[2, -1] = 0.9  # RIGHT: dies on the first step
    bd = BatchedDream(m, initial_mu=torch.randn(4, Z), tau=1.0, max_steps=30)
    ret = bd.evaluate(c, params, rollouts=5, seed=0, check_every=5)
    assert ret.shape == (3, 5)
    assert torch.all(ret[0] == 30) and torch.all(ret[2] == 1)
    for p in range(3):  # one candidate at a time gives the same (common random numbers)
        assert torch.equal(bd.evaluate(c, params[p : p + 1], 5, seed=0)[0], ret[p])


def test_evaluate_stops_early_when_all_done():
    bd = BatchedDream(_mdrnn(done_bias=5.0), tau=1.0, max_steps=2100)
    c = Controller(latent_size=Z, hidden_size=H, output_size=1, action_mode="thirds")
    ret = bd.evaluate(c, torch.zeros(2, c.num_params), rollouts=3, seed=0, check_every=10)
    assert torch.all(ret == 1)


def test_load_initial_states_from_series(tmp_path):
    from world_models.data.store import save_npz

    for i in range(3):
        save_npz(
            tmp_path / f"ep_{i:06d}.npz",
            {"mu": np.full((4, Z), i, np.float16), "logvar": np.zeros((4, Z), np.float16)},
        )
    mu, logvar = load_initial_states(series_dir=tmp_path, max_episodes=2)
    assert mu.shape == (2, Z) and mu[:, 0].tolist() == [0.0, 1.0] and logvar.abs().sum() == 0


def test_load_initial_states_encodes_first_frames_of_a_dataset(tmp_path):
    from world_models.core.errors import ConfigError
    from world_models.data.store import save_npz

    frames = np.random.default_rng(0).integers(0, 255, (2, 3, 64, 64, 3), dtype=np.uint8)
    for i in range(2):
        save_npz(tmp_path / f"ep_{i:06d}.npz", {"obs": frames[i]})
    vae = ConvVAE(Z, uint8_input=True).eval()
    mu, logvar = load_initial_states(data_dir=tmp_path, vae=vae)
    expected, _ = vae.encode(torch.as_tensor(frames[:, 0]).permute(0, 3, 1, 2))
    assert mu.shape == logvar.shape == (2, Z) and torch.allclose(mu, expected, atol=1e-5)
    with pytest.raises(ConfigError, match="VAE"):
        load_initial_states(data_dir=tmp_path)


@pytest.mark.filterwarnings("ignore:.*infinity:UserWarning")
def test_carracing_style_dream_and_make_by_module_path():
    m = MDNRNN(
        latent_size=Z, action_size=3, hidden_size=H, num_gaussians=2, reward_head=True
    ).eval()
    env = gym.make(
        "world_models.envs.dream:WorldModels/Dream-v0",
        mdrnn=m,
        action_mode="carracing",
        max_steps=5,
    )
    check_env(env.unwrapped)
    assert env.action_space.shape == (3,) and env.action_space.low.tolist() == [-1, 0, 0]
    env.reset(seed=0)
    obs, r, term, trunc, _ = env.step(np.array([0.5, 1.0, 0.0], np.float32))
    assert obs.shape == (Z + H,) and isinstance(r, float) and not term


def _dying_mdrnn():
    """Dreams that end at different times: the done logit follows z, which is noisy."""
    m = _mdrnn(done_bias=-4.0)
    with torch.no_grad():
        m.head.weight[-1].normal_(0.0, 3.0)
    torch.manual_seed(1)
    return m


class _EmulatedGraph(dream_module._GraphedSteps):
    """A CPU stand-in for ``_GraphedSteps``: warm-up and "capture" really step the loop
    (as a capture may touch buffers and the generator), and each replay runs ``steps``
    steps. What it checks is evaluate's side: chunking, the eager remainder, early stop,
    reuse and re-capture, and that warm-up/capture leave no trace in the results."""

    captures = 0

    def __init__(self, loop, steps):
        self.loop, self.steps = loop, steps
        self.key = self.key_of(steps, loop.dream)
        for _ in range(3 + steps):
            loop.advance()
        type(self).captures += 1

    def replay(self):
        for _ in range(self.steps):
            self.loop.advance()


@pytest.mark.parametrize("max_steps, check_every", [(37, 10), (120, 50), (7, 50), (60, 1)])
def test_graph_chunked_evaluate_equals_eager(monkeypatch, max_steps, check_every):
    m, c = (
        _dying_mdrnn(),
        Controller(latent_size=Z, hidden_size=H, output_size=1, action_mode="thirds"),
    )
    params = torch.randn(4, c.num_params) * 0.5
    eager = BatchedDream(m, initial_mu=torch.randn(3, Z), tau=1.0, max_steps=max_steps)
    want = eager.evaluate(c, params, 6, seed=3, check_every=check_every)
    want_len = eager.last_lengths.clone()
    assert 1 < len(set(want_len.flatten().tolist()))  # dreams end at different steps

    monkeypatch.setattr(dream_module, "_GraphedSteps", _EmulatedGraph)
    monkeypatch.setattr(_EmulatedGraph, "captures", 0)
    graphed = BatchedDream(m, initial_mu=eager.init_mu, tau=1.0, max_steps=max_steps)
    graphed.cuda_graph = True  # on CPU only through the stand-in
    for _ in range(2):  # the second call reuses the "graph" with new buffers loaded
        got = graphed.evaluate(c, params, 6, seed=3, check_every=check_every)
        assert torch.equal(got, want)
        assert torch.equal(graphed.last_lengths, want_len)
    assert _EmulatedGraph.captures == 1
    graphed.tau = eager.tau = 0.5  # a graph holds tau: a new one is captured
    assert torch.equal(graphed.evaluate(c, params, 6, seed=3), eager.evaluate(c, params, 6, seed=3))
    assert _EmulatedGraph.captures == 2


@pytest.mark.gpu
def test_cuda_graph_dream_equals_eager_on_cuda():
    m, c = (
        _dying_mdrnn().cuda(),
        Controller(latent_size=Z, hidden_size=H, output_size=1, action_mode="thirds").cuda(),
    )
    params = torch.randn(8, c.num_params, device="cuda") * 0.5
    init = torch.randn(3, Z, device="cuda")
    eager = BatchedDream(m, initial_mu=init, tau=1.0, max_steps=230)
    graphed = BatchedDream(m, initial_mu=init, tau=1.0, max_steps=230, cuda_graph=True)
    for seed in (0, 1):
        want = eager.evaluate(c, params, 16, seed=seed)
        got = graphed.evaluate(c, params, 16, seed=seed)
        assert all(loop.graph is not None for loop in graphed._loops.values())
        torch.testing.assert_close(got, want)
        assert torch.equal(graphed.last_lengths, eager.last_lengths)


def test_failed_capture_warns_and_dreams_eagerly(monkeypatch):
    def refuse(loop, steps):
        raise AttributeError("register_generator_state")  # e.g. an older torch

    m, c = (
        _dying_mdrnn(),
        Controller(latent_size=Z, hidden_size=H, output_size=1, action_mode="thirds"),
    )
    params = torch.randn(2, c.num_params) * 0.5
    want = BatchedDream(m, tau=1.0, max_steps=40).evaluate(c, params, 3, seed=1)
    monkeypatch.setattr(dream_module, "_GraphedSteps", refuse)
    bd = BatchedDream(m, tau=1.0, max_steps=40)
    bd.cuda_graph = True
    with pytest.warns(UserWarning, match="capture failed, dreaming eagerly"):
        got = bd.evaluate(c, params, 3, seed=1)
    assert torch.equal(got, want) and not bd.cuda_graph


def test_latent_policy_drives_dream_env_like_the_controller():
    from world_models import LatentPolicy

    c = Controller(latent_size=Z, hidden_size=H, output_size=1, action_mode="thirds")
    with torch.no_grad():
        c.fc.weight.normal_(0.0, 2.0)  # actions that vary with [z, h]
    env = gym.make(DREAM_ID, mdrnn=_mdrnn(-3.0), max_steps=15)
    policy = LatentPolicy(c)
    obs, _ = env.reset(seed=0)
    policy.reset(1, seed=0)
    seen, steps, done = set(), 0, False
    while not done:
        action = policy.act(obs[None])  # (1,) int64
        z, h = torch.as_tensor(obs[:Z])[None], torch.as_tensor(obs[Z:])[None]
        assert action.dtype == np.int64 and action[0] == int(c.act(z, h)[0])
        seen.add(int(action[0]))
        obs, _, terminated, truncated, _ = env.step(int(action[0]))
        steps, done = steps + 1, terminated or truncated
    assert steps == 15 and truncated and len(seen) > 1


def test_tau_zero_dreams_draw_no_noise_and_ignore_the_seed():
    m, c = (
        _dying_mdrnn(),
        Controller(latent_size=Z, hidden_size=H, output_size=1, action_mode="thirds"),
    )
    params = torch.randn(3, c.num_params) * 0.5
    init = torch.randn(1, Z)  # one exact start (logvar -30): nothing random remains
    bd = BatchedDream(m, initial_mu=init, tau=0.0, max_steps=40)
    a, b = bd.evaluate(c, params, 2, seed=0), bd.evaluate(c, params, 2, seed=7)
    assert torch.equal(a, b) and torch.equal(a[:, 0], a[:, 1])
