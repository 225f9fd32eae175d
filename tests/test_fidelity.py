"""The dream's options (sampled deaths, dropout masks, any policy) and the fidelity check."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import world_flags

from world_models.cli import main
from world_models.envs.dream import BatchedDream, DreamEnv, dream_done
from world_models.models.configs import CONTROLLER_PRESETS, MDNRNNConfig
from world_models.models.controller import Controller
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE
from world_models.policies import ConstantPolicy
from world_models.policies.controller import LatentPolicy

pytestmark = pytest.mark.usefixtures("one_thread")


ZCH = replace(CONTROLLER_PRESETS["doom"], latent_size=8, hidden_size=16)
"""Doom's C as the original code ([z, c, h], no bias), tiny."""


def _mdrnn(done_bias: float, pos_weight: float = 10.0, dropout: float = 0.0, action_gain=1.0):
    torch.manual_seed(0)
    tiny = MDNRNNConfig(latent_size=8, action_size=3, hidden_size=16, num_gaussians=2)
    m = MDNRNN(tiny, done_head=True, done_pos_weight=pos_weight, dropout=dropout)
    with torch.no_grad():
        m.head.weight[-1].zero_()
        m.head.bias[-1] = done_bias
        m.lstm.weight_ih_l0[:, 8:] *= action_gain  # how much the action moves h
    return m.eval()


def test_sampled_deaths_follow_the_calibrated_probability():
    # a constant done logit L trained at pos_weight w means a per-step hazard sigmoid(L - ln w)
    logit, w = 0.5, 10.0
    dream = BatchedDream(_mdrnn(logit, w), tau=1.0, max_steps=40, done_mode="sample")
    _, lengths = dream.play(ConstantPolicy(0), 4000, seed=1)
    deaths = (lengths < 40).sum()
    hazard = deaths / lengths.sum()
    expected = 1 / (1 + math.exp(-(logit - math.log(w))))
    assert abs(hazard - expected) < 0.15 * expected
    # the original's rule: logit 0.5 > 0 kills every dream at the first step
    _, first = BatchedDream(_mdrnn(logit, w), max_steps=40).play(ConstantPolicy(0), 50)
    assert np.all(first == 1)
    # and a negative logit never kills under the threshold, but does when sampled
    m = _mdrnn(-1.0, 1.0)
    _, never = BatchedDream(m, max_steps=40).play(ConstantPolicy(0), 50)
    assert np.all(never == 40)
    _, some = BatchedDream(m, max_steps=40, done_mode="sample").play(ConstantPolicy(0), 50)
    assert some.mean() < 10
    u = torch.tensor([0.1, 0.9])
    assert dream_done(torch.zeros(2), "sample", 1.0, u).tolist() == [True, False]


def test_dream_options_are_checked():
    with pytest.raises(ValueError, match="dropout"):
        BatchedDream(_mdrnn(0.0), dropout=True)
    with pytest.raises(ValueError, match="done_mode"):
        BatchedDream(_mdrnn(0.0), done_mode="coin")


def test_dropout_masks_one_per_rollout_shared_by_candidates():
    m = _mdrnn(-0.5, 1.0, dropout=0.5)
    c = Controller(ZCH)
    params = torch.as_tensor(np.random.default_rng(0).normal(0, 1, (1, c.num_params)))
    params = params.float().repeat(2, 1)  # two identical candidates
    dream = BatchedDream(m, tau=1.0, max_steps=30, done_mode="sample", dropout=True)
    ret = dream.evaluate(c, params, rollouts=16, seed=3)
    assert torch.equal(ret[0], ret[1])  # the same masks and noise for every candidate
    again = dream.evaluate(c, params, rollouts=16, seed=3)
    assert torch.equal(ret, again)  # reproducible from the seed
    plain = BatchedDream(m, tau=1.0, max_steps=30, done_mode="sample")
    assert not torch.equal(plain.evaluate(c, params, rollouts=16, seed=3), ret)
    # masks differ between rollouts
    dream.reset(4, torch.Generator().manual_seed(0))
    assert dream.mask.shape == (4, 16) and not torch.equal(dream.mask[0], dream.mask[1])


def test_play_meets_the_same_noise_under_every_action():
    m = _mdrnn(-3.0, 1.0, action_gain=0.0)  # M ignores the action
    dream = BatchedDream(m, tau=1.0, max_steps=20)
    dream.play(ConstantPolicy(1), 5, seed=2, record=True)
    left = dream.last_recording
    dream.play(ConstantPolicy(2), 5, seed=2, record=True)
    assert torch.equal(left, dream.last_recording)
    m2 = _mdrnn(-3.0, 1.0, action_gain=5.0)
    d2 = BatchedDream(m2, tau=1.0, max_steps=20)
    d2.play(ConstantPolicy(1), 5, seed=2, record=True)
    left = d2.last_recording
    d2.play(ConstantPolicy(2), 5, seed=2, record=True)
    assert not torch.allclose(left, d2.last_recording)


def test_latent_policy_drives_a_zch_controller_in_dream_env():
    m = _mdrnn(-5.0, 1.0)
    c = Controller(ZCH)
    env = DreamEnv(m, max_steps=5, observe_cell=True, done_mode="sample")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (8 + 16 + 16,)
    policy = LatentPolicy(c)
    a = policy.act(obs)
    assert a.shape == (1,) and a.dtype == np.int64
    obs, *_ = env.step(int(a[0]))
    assert obs.shape == (40,)


def _world(tmp_path, dream_kills: bool):
    """Tiny V and M checkpoints, a 3-episode dataset and its series (fake-discrete env)."""
    from world_models.data.store import save_npz

    torch.manual_seed(0)
    vae = ConvVAE(8)
    m = _mdrnn(0.0 if dream_kills else -20.0, 10.0, action_gain=3.0)
    vae.save_pretrained(tmp_path / "v")
    m.save_pretrained(tmp_path / "m")
    rng = np.random.default_rng(0)
    for i in range(3):
        t = 30
        save_npz(
            tmp_path / "d" / f"ep_{i:06d}.npz",
            {
                "obs": rng.integers(0, 255, (t, 64, 64, 3), dtype=np.uint8),
                "action": np.eye(3, dtype=np.float32)[rng.integers(0, 3, t)],
                "reward": np.ones(t, np.float32),
                "terminated": np.arange(t) == t - 1,
                "truncated": np.zeros(t, bool),
            },
        )
        mu = rng.normal(size=(t, 8)).astype(np.float16)
        save_npz(tmp_path / "s" / f"ep_{i:06d}.npz", {"mu": mu, "logvar": 0 * mu - 3})
    return tmp_path


def _args(tmp_path, *extra):
    flags = ["fidelity", "--env", "fake-discrete", *world_flags(tmp_path)]
    flags += ["--data-dir", str(tmp_path / "d"), "--trials", "6", "--dream-max-steps", "100"]
    return [*flags, "--workers", "1", "--out-dir", str(tmp_path / "out"), "--no-progress", *extra]


def test_fidelity_says_too_easy_when_the_dream_never_kills(tmp_path, capsys):
    import imageio.v3 as iio

    _world(tmp_path, dream_kills=False)
    assert main(_args(tmp_path)) == 0
    out = capsys.readouterr().out
    r = json.loads((tmp_path / "out/fidelity.json").read_text())
    assert set(r["dream"]) == {"random", "stay", "left", "right"} == set(r["real"])
    assert r["dream"]["random"]["mean_length"] == 100  # the cap: M never kills
    # the fake env ends episodes after 20-60 steps whatever is done
    assert 20 <= r["real"]["random"]["mean_length"] <= 60
    assert r["real"]["random"]["deaths_per_step"] > 0 == r["dream"]["random"]["deaths"]
    assert r["verdict"].startswith("dream too easy: random survives 100 steps in the dream")
    assert "verdict: dream too easy" in out
    assert r["response"]["z_distance"] > 0  # M's h (and so z) moves with the action
    strip = iio.imread(tmp_path / "out/strip.png")
    assert strip.shape[0] == 2 * (3 * 64 + 4)  # real, reconstruction, dream rows


def test_fidelity_dream_only_with_sampled_deaths(tmp_path):
    _world(tmp_path, dream_kills=True)
    assert main(_args(tmp_path, "--no-real", "--done-mode", "sample")) == 0
    r = json.loads((tmp_path / "out/fidelity.json").read_text())
    assert "real" not in r and r["dream"]["random"]["deaths"] > 0
    assert "game not played" in r["verdict"]


def test_evaluate_random_policy_in_the_dream(tmp_path, capsys):
    _world(tmp_path, dream_kills=True)
    args = ["evaluate", "--in", "dream", "--policy", "random", "--env", "fake-discrete"]
    args += [*world_flags(tmp_path), "--controller", "none", "--trials", "8"]
    args += ["--done-mode", "sample", "--dream-max-steps", "40"]
    args += ["--out-dir", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 0
    assert "(random)" in capsys.readouterr().out
    r = json.loads((tmp_path / "out/results.json").read_text())
    assert r["policy"] == "random" and r["done_mode"] == "sample" and len(r["returns"]) == 8
    assert (tmp_path / "out/best.gif").exists()


def _export_tiny(tmp_path, monkeypatch):
    import world_models.shipped as shipped

    _world(tmp_path, dream_kills=True)
    c = Controller(ZCH)
    c.set_flat(np.random.default_rng(0).normal(0, 0.1, c.num_params))
    c.save_pretrained(tmp_path / "c")
    monkeypatch.setattr(shipped, "ASSETS", tmp_path / "assets")
    settings = {
        "env": "fake-discrete",
        "tau": 1.0,
        "done_mode": "sample",
        "dream_dropout": False,
        "max_steps": 40,
    }
    shipped.export_pretrained(
        tmp_path / "v",
        tmp_path / "m",
        tmp_path / "c",
        tmp_path / "s",
        tmp_path / "assets" / "tiny",
        settings,
        "# tiny\n",
    )
    return shipped, c


def test_shipped_world_model_round_trips_in_float16(tmp_path, monkeypatch):
    import world_models

    shipped, c = _export_tiny(tmp_path, monkeypatch)
    assert shipped.available() == ["tiny"]
    wm = world_models.pretrained("tiny")
    assert wm.env == "fake-discrete" and wm.settings["done_mode"] == "sample"
    assert wm.initial_mu.shape == (3, 8) and wm.initial_mu.dtype == torch.float32
    assert wm.controller.cell_input and wm.controller.num_params == 40
    assert np.allclose(wm.controller.get_flat(), c.get_flat(), atol=1e-3)  # float16 rounding
    m = MDNRNN.from_pretrained(tmp_path / "m")
    for a, b in zip(wm.mdrnn.parameters(), m.parameters()):
        assert a.dtype == torch.float32 and torch.allclose(a, b, atol=1e-2)
    on_disk = sum(f.stat().st_size for f in (tmp_path / "assets/tiny").rglob("*.safetensors"))
    full = sum(f.stat().st_size for f in tmp_path.glob("[vmc]/model.safetensors"))
    assert on_disk < 0.6 * full
    with pytest.raises(Exception, match="no pretrained world model named 'nope'"):
        world_models.pretrained("nope")


def test_evaluate_pretrained_in_the_dream_and_the_game(tmp_path, monkeypatch, capsys):
    _export_tiny(tmp_path, monkeypatch)
    out = tmp_path / "ev"
    base = ["evaluate", "--pretrained", "tiny", "--trials", "4", "--no-progress"]
    assert main([*base, "--in", "dream", "--out-dir", str(out / "d"), "--video", "none"]) == 0
    r = json.loads((out / "d/results.json").read_text())
    assert r["done_mode"] == "sample" and r["tau"] == 1.0 and max(r["returns"]) <= 40
    args = [*base, "--workers", "1", "--max-steps", "30", "--out-dir", str(out / "r")]
    assert main([*args, "--video", "none"]) == 0
    r = json.loads((out / "r/results.json").read_text())
    assert r["env"] == "fake-discrete" and len(r["returns"]) == 4
    assert main(["evaluate", "--pretrained", "nope"]) == 2
    assert "no pretrained world model named 'nope'" in capsys.readouterr().err


def test_calibrated_offset_matches_the_target_survival():
    from world_models.envs.dream import calibrate_done_offset

    m = _mdrnn(-8.0, 10.0)  # a dream that almost never kills
    dream = BatchedDream(m, tau=1.0, max_steps=200, done_mode="sample")
    offset, length = calibrate_done_offset(dream, ConstantPolicy(0), 20.0, n=400, seed=0)
    assert dream.done_offset == 0.0  # the dream keeps its own
    assert abs(length - 20.0) < 3.0 and offset > 3.0  # hazard ~1/20: logit -8 + 10 ~ -2.9
    dream.done_offset = offset
    _, lengths = dream.play(ConstantPolicy(0), 400, seed=9)
    assert 15 < lengths.mean() < 25  # holds on other starts and noise


def test_fidelity_calibrate_reports_and_uses_the_offset(tmp_path):
    _world(tmp_path, dream_kills=True)  # dies after ~11 steps, the data's episodes last 30
    assert main(_args(tmp_path, "--no-real", "--done-mode", "sample", "--calibrate")) == 0
    r = json.loads((tmp_path / "out/fidelity.json").read_text())
    cal = r["calibration"]
    assert cal["data_length"] == 30 and r["done_offset"] == cal["done_offset"] < 0
    assert abs(r["dream"]["random"]["mean_length"] - 30) < 12


def test_fidelity_reports_the_diagnostics_on_held_out_and_controller_episodes(tmp_path):
    from world_models.data.store import save_npz

    _world(tmp_path, dream_kills=True)
    rng = np.random.default_rng(1)
    for i in range(3):  # whole series episodes, as encode writes them
        mu = rng.normal(size=(30, 8)).astype(np.float16)
        save_npz(
            tmp_path / "s" / f"ep_{i:06d}.npz",
            {
                "mu": mu,
                "logvar": 0 * mu - 3,
                "action": np.eye(3, dtype=np.float32)[rng.integers(0, 3, 30)],
                "reward": np.ones(30, np.float32),
                "terminated": np.arange(30) == 29,
                "truncated": np.zeros(30, bool),
            },
        )
    args = _args(tmp_path, "--no-real", "--holdout-fraction", "0.9")
    args += ["--controller-series-dir", str(tmp_path / "s")]
    assert main(args) == 0
    res = json.loads((tmp_path / "out" / "fidelity.json").read_text())
    for name in ("held_out", "controller_episodes"):
        done = res["diagnostics"][name]["done"]
        assert done["deaths"] >= 1 and 0.0 <= done["recall"] <= 1.0
        assert 0.0 <= done["false_alarm"] <= 1.0
    assert res["diagnostics"]["controller_episodes"]["done"]["episodes"] == 3
    text = (tmp_path / "out" / "fidelity.txt").read_text()
    assert "controller_episodes: done head" in text
