"""C: parameter count, action mappings, flat parameters, batched candidates, the policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from world_models.envs.presets import get_preset
from world_models.models.configs import CONTROLLER_PRESETS
from world_models.models.controller import (
    Controller,
    actions_for_model,
    batched_actions,
    map_actions,
)
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE
from world_models.policies.controller import ControllerPolicy

# Tiny models: one thread avoids spin-waits on a busy 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_parameter_counts_match_the_paper():
    assert Controller().num_params == 867  # (32 + 256) * 3 + 3
    # the original doomrnn: [z, c, h], no bias (its config's input_size=576+512)
    assert Controller.from_config(CONTROLLER_PRESETS["doom"]).num_params == 64 + 512 + 512
    assert Controller.from_config(CONTROLLER_PRESETS["doom-zh"]).num_params == 577


def test_zch_controller_reads_cell_and_round_trips(tmp_path):
    c = Controller(CONTROLLER_PRESETS["doom"], latent_size=4, hidden_size=5)  # [z, c, h]
    assert c.num_params == 4 + 5 + 5 and c.fc.bias is None
    v = np.linspace(-1, 1, c.num_params)
    assert np.allclose(c.set_flat(v).get_flat(), v)
    w, b = c.unflatten(torch.as_tensor(v, dtype=torch.float32)[None])
    assert w.shape == (1, 1, 14) and torch.all(b == 0)
    z, h, cell = torch.randn(3, 4), torch.randn(3, 5), torch.randn(3, 5)
    # the layout is [z, c, h]: the weight's columns 4..8 multiply c
    expected = torch.tanh(torch.cat([z, cell, h], -1) @ torch.as_tensor(v, dtype=torch.float32))
    assert torch.allclose(c(z, h, cell)[:, 0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="cell state"):
        c(z, h)
    # batched candidates agree with the module
    got = batched_actions(
        c, torch.as_tensor(v, dtype=torch.float32)[None], z[None], h[None], cell[None]
    )
    assert torch.equal(got[0], c.act(z, h, cell))
    c.save_pretrained(tmp_path / "c")
    back = Controller.from_pretrained(tmp_path / "c")
    assert back.cell_input and not back.has_bias and np.allclose(back.get_flat(), v)


def test_carracing_mapping_ranges():
    raw = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [0.3, 0.0, 0.5], [-0.2, 0.5, -0.4]])
    a = map_actions(raw, "carracing")
    assert torch.allclose(a[:, 0], raw[:, 0])  # steer passes through
    assert torch.allclose(a[:, 1], torch.tensor([0.0, 1.0, 0.5, 0.75]))  # gas (a+1)/2
    assert torch.allclose(a[:, 2], torch.tensor([0.0, 1.0, 0.5, 0.0]))  # brake clipped
    c = Controller()
    with torch.no_grad():
        c.fc.weight.normal_(0, 5.0)
    acts = c.act(torch.randn(256, 32), torch.randn(256, 256))
    assert acts[:, 0].min() >= -1 and acts[:, 0].max() <= 1
    assert acts[:, 1:].min() >= 0 and acts[:, 1:].max() <= 1
    assert acts[:, 0].min() < -0.5 and acts[:, 0].max() > 0.5  # really spans the range


def test_doom_thirds_map_to_the_preset_indices():
    raw = torch.tensor([[-0.9], [-0.34], [-0.33], [0.0], [0.33], [0.34], [0.9]])
    # Doom preset: 0 stay, 1 MOVE_LEFT, 2 MOVE_RIGHT
    assert map_actions(raw, "thirds").tolist() == [1, 1, 0, 0, 0, 2, 2]
    doom, carracing = get_preset("doom"), get_preset("carracing")
    assert (doom.controller_outputs, doom.action_mode) == (1, "thirds")
    assert (carracing.controller_outputs, carracing.action_mode) == (3, "carracing")
    idx = torch.tensor([0, 1, 2])
    assert actions_for_model(idx, "thirds", 1).squeeze(-1).tolist() == [0.0, -1.0, 1.0]
    assert actions_for_model(idx, "thirds", 3).tolist() == torch.eye(3).tolist()
    with pytest.raises(ValueError):
        actions_for_model(idx, "thirds", 2)


def test_flat_round_trip_and_layout():
    c = Controller(latent_size=4, hidden_size=5, output_size=3)
    v = np.arange(c.num_params, dtype=np.float64) / 100
    c.set_flat(v)
    assert np.allclose(c.get_flat(), v)
    assert torch.allclose(c.fc.weight, torch.tensor(v[:27], dtype=torch.float32).view(3, 9))
    assert torch.allclose(c.fc.bias, torch.tensor(v[27:], dtype=torch.float32))
    with pytest.raises(ValueError):
        c.set_flat(v[:-1])


def test_batched_candidates_equal_a_loop():
    c = Controller(latent_size=6, hidden_size=10, output_size=3)
    params = torch.randn(5, c.num_params)
    z, h = torch.randn(5, 7, 6), torch.randn(5, 7, 10)
    batched = batched_actions(c, params, z, h)  # (5, 7, 3)
    for p in range(5):
        c.set_flat(params[p].double().numpy())
        assert torch.allclose(batched[p], c.act(z[p], h[p]), atol=1e-5)


def test_checkpoint_round_trip(tmp_path):
    c = Controller.from_config(CONTROLLER_PRESETS["doom"])
    c.set_flat(np.random.default_rng(0).normal(size=c.num_params))
    c.save_pretrained(tmp_path / "c")
    d = Controller.from_pretrained(tmp_path / "c")
    assert d.config == c.config and np.allclose(d.get_flat(), c.get_flat())


def _models(action_size=3, mode="carracing", outputs=3):
    torch.manual_seed(1)
    vae, m = (
        ConvVAE(8, uint8_input=True),
        MDNRNN(latent_size=8, action_size=action_size, hidden_size=16, num_gaussians=2),
    )
    c = Controller(latent_size=8, hidden_size=16, output_size=outputs, action_mode=mode)
    with torch.no_grad():
        c.fc.weight.mul_(10)
    return vae, m, c


def test_policy_keeps_state_per_env_and_is_batch_independent():
    vae, m, c = _models()
    obs = np.random.default_rng(0).integers(0, 255, (3, 4, 64, 64, 3), dtype=np.uint8)
    pol = ControllerPolicy(vae, m, c, "cpu", z_mode="sample")
    pol.reset(4, seed=[10, 11, 12, 13])
    batched = [pol.act(obs[t]) for t in range(3)]  # (4, 3) each
    assert batched[0].dtype == np.float32 and batched[0].shape == (4, 3)
    for i, seed in enumerate([10, 11, 12, 13]):
        pol.reset(1, seed=[seed])
        for t in range(3):
            assert np.allclose(pol.act(obs[t, i : i + 1])[0], batched[t][i], atol=1e-5)
    # the hidden state matters: the same frame at step 0 and step 2 gives other actions
    pol.reset(1, seed=[0])
    first = pol.act(obs[0, :1])
    pol.act(obs[0, :1])
    assert not np.allclose(pol.act(obs[0, :1]), first)


def test_policy_population_and_active_mask():
    vae, m, c = _models(action_size=1, mode="thirds", outputs=1)
    params = np.random.default_rng(0).normal(0, 1, (3, c.num_params))
    obs = np.random.default_rng(1).integers(0, 255, (6, 64, 64, 3), dtype=np.uint8)
    pol = ControllerPolicy(vae, m, c, z_mode="mu")
    pol.set_population(params)
    pol.reset(6, seed=0, candidates=[0, 1, 2, 0, 1, 2])
    acts = pol.act(obs)
    assert acts.dtype == np.int64 and set(acts.tolist()) <= {0, 1, 2}
    single = ControllerPolicy(
        vae,
        m,
        Controller(latent_size=8, hidden_size=16, output_size=1, action_mode="thirds"),
        z_mode="mu",
    )
    for i in range(6):
        single.controller.set_flat(params[i % 3])
        single.reset(1)
        assert single.act(obs[i : i + 1])[0] == acts[i]
    # inactive envs keep their state and get a zero action
    pol.reset(6, seed=0, candidates=[0, 1, 2, 0, 1, 2])
    h0 = pol._state[0].clone()
    out = pol.act(obs, active=np.array([True, False, True, False, False, False]))
    h1 = pol._state[0]
    assert torch.equal(h1[0, 1], h0[0, 1]) and not torch.equal(h1[0, 0], h0[0, 0])
    assert out[1] == 0


def test_a_z_only_controller_reads_z_alone():
    """The paper's "V model only" row: C on z, 32 x 3 + 3 = 99 weights."""
    c = Controller(
        latent_size=32, hidden_size=256, output_size=3, action_mode="carracing", hidden_input=False
    )
    assert c.num_params == 99 and c.input_size == 32
    z, h = torch.randn(5, 32), torch.randn(5, 256)
    torch.testing.assert_close(c(z, h), c(z, torch.zeros_like(h)))  # h is not read
    params = torch.randn(4, c.num_params)
    zs, hs = torch.randn(4, 5, 32), torch.randn(4, 5, 256)
    got = batched_actions(c, params, zs, hs)  # (P, N, A)
    for p in range(4):
        torch.testing.assert_close(got[p], c.set_flat(params[p]).act(zs[p], hs[p]))
    assert Controller.from_config(c.config).input_size == 32  # the config keeps the choice
