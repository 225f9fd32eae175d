"""`world-models watch`: C plays; the real frame, V's reconstruction and M's next frame side
by side, headless into a video (no pygame needed) or in a window (SDL_VIDEODRIVER=dummy)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import save_play_models

from world_models import cli
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE
from world_models.play import draw
from world_models.play.sessions import Decoder, MTap, WatchConfig, mixture_mean, watch
from world_models.policies.controller import ControllerPolicy

Z, H = 8, 16


pytestmark = pytest.mark.usefixtures("headless")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = save_play_models(tmp_path_factory.mktemp("watch_models"), Z, H, done_head=True)
    return root


def _frames(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(path, index=None)


def _config(models: Path, tmp_path: Path, **kw) -> WatchConfig:
    base = dict(
        env="fake",
        vae=models / "vae",
        mdrnn=models / "mdrnn",
        controller=models / "c_box",
        max_steps=3,
        out=tmp_path / "watch.gif",
        scale=1,
        device="cpu",
    )
    return WatchConfig(**{**base, **kw})


def test_mixture_mean_and_the_tap():
    m = MDNRNN(latent_size=Z, action_size=3, hidden_size=H, num_gaussians=3)
    tap = MTap(m)
    assert tap.latent_size == Z and tap.initial_state(2)[0].shape == (1, 2, H)
    out = tap.step(torch.randn(2, Z), torch.zeros(2, 3))
    assert tap.take() is out
    with pytest.raises(RuntimeError, match="no prediction"):
        tap.take()
    mean = mixture_mean(out)
    pi = torch.softmax(out.logpi, -1)
    torch.testing.assert_close(mean, (pi * out.mu).sum(-1))
    assert mean.shape == (2, Z)
    one = MDNRNN(latent_size=Z, action_size=3, hidden_size=H, num_gaussians=1)
    o1 = one.step(torch.randn(1, Z), torch.zeros(1, 3))
    torch.testing.assert_close(mixture_mean(o1), o1.mu[..., 0])  # K = 1: the one mean


@pytest.fixture
def shown(monkeypatch) -> list:
    """The panels of every picture composed, in order."""
    seen: list = []
    real_compose = draw.compose

    def spy(panels, *args, **kwargs):
        seen.append([p.copy() for p in panels])
        return real_compose(panels, *args, **kwargs)

    monkeypatch.setattr(draw, "compose", spy)
    return seen


def test_watch_real_writes_three_panels_headless_without_pygame(
    models, tmp_path, monkeypatch, shown
):
    monkeypatch.setitem(sys.modules, "pygame", None)  # --out: no window, no pygame
    config = _config(models, tmp_path, strip=tmp_path / "watch.png", strip_frames=2)
    res = watch(config)
    assert res.total_steps == 3 and set(res.files) == {"video", "strip"}
    assert len(_frames(tmp_path / "watch.gif")) == len(shown) == 3  # one per step
    # panel 1 is the real frame C acted on, panel 2 V's reconstruction of it
    from world_models.envs.make import make_env
    from world_models.envs.presets import get_preset

    env = make_env(get_preset("fake"))
    obs, _ = env.reset(seed=0)
    dec = Decoder(ConvVAE.from_pretrained(models / "vae").eval(), torch.device("cpu"))
    assert all(len(panels) == 3 for panels in shown)
    np.testing.assert_array_equal(shown[0][0], obs)
    np.testing.assert_array_equal(shown[0][1], dec.reconstruct(obs))
    assert not np.array_equal(shown[1][0], shown[0][0])


def test_watch_prediction_is_ms_mixture_mean_decoded(models, tmp_path, monkeypatch, shown):
    """The third panel is V's decoding of the mean of what M predicted for the next z."""
    from world_models.play import sessions

    taps = []
    real_take = sessions.MTap.take

    def take(self):
        out = real_take(self)
        taps.append(out)
        return out

    monkeypatch.setattr(sessions.MTap, "take", take)
    watch(_config(models, tmp_path, max_steps=2))
    vae = ConvVAE.from_pretrained(models / "vae").eval()
    dec = Decoder(vae, torch.device("cpu"))
    for panels, out in zip(shown, taps):
        np.testing.assert_array_equal(panels[2], dec.decode(mixture_mean(out)[0]))
    assert len(shown) == len(taps) == 2


def test_watch_uses_the_policy_evaluate_uses(models, tmp_path, monkeypatch):
    """C's actions come from ControllerPolicy (the tap only listens to M)."""
    calls = []
    act = ControllerPolicy.act

    def spy(self, obs, active=None):
        calls.append(obs.shape)
        return act(self, obs, active)

    monkeypatch.setattr(ControllerPolicy, "act", spy)
    watch(_config(models, tmp_path, max_steps=3, predict="sample", tau=0.5))
    assert calls == [(1, 64, 64, 3)] * 3


def test_watch_in_the_dream_shows_two_panels(models, tmp_path, capsys):
    argv = ["watch", "--in", "dream", "--env", "fake-discrete", "--vae", str(models / "vae")]
    argv += ["--mdrnn", str(models / "mdrnn_done"), "--controller", str(models / "c_thirds")]
    out, png = tmp_path / "dream.gif", tmp_path / "dream.png"
    argv += ["--max-steps", "3", "--out", str(out), "--strip", str(png), "--scale", "1"]
    assert cli.main([*argv, "--device", "cpu"]) == 0, capsys.readouterr().err
    frames = _frames(out)
    assert 1 <= len(frames) <= 4  # M's done head may end the dream early (then its last frame)
    two = draw.compose([np.zeros((64, 64, 3), np.uint8)] * 2, ["a", "b"], ["s", "k"], 1)
    assert frames.shape[1] == two.shape[0]
    assert "video:" in capsys.readouterr().out and png.exists()


def test_watch_in_a_window_quits_on_escape(models, tmp_path):
    from world_models.play.window import require_pygame

    pg = require_pygame()

    def hook(loop):
        if loop.total_steps == 2:
            pg.event.post(pg.event.Event(pg.KEYDOWN, key=pg.K_ESCAPE))

    res = watch(_config(models, tmp_path, out=None, max_steps=10), hook=hook)
    assert res.quit and res.total_steps == 2 and res.files == {}


def test_watch_needs_c_and_fails_in_one_line(models, capsys):
    rc = cli.main(["watch", "--env", "fake", "--vae", str(models / "vae"), "--out", "x.gif"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs --mdrnn, --controller" in err and len(err.splitlines()) == 1


def test_watch_checks_c_against_the_env(models, capsys, tmp_path):
    argv = ["watch", "--env", "fake-discrete", "--vae", str(models / "vae")]
    argv += ["--mdrnn", str(models / "mdrnn"), "--controller", str(models / "c_box")]
    rc = cli.main([*argv, "--out", str(tmp_path / "x.gif"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs 'thirds'" in err and len(err.splitlines()) == 1
