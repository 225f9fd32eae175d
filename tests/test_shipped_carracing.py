"""The shipped CarRacing world model: loads offline, drives better than the random policy,
and watch / play run with it (headless)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import world_models
from world_models.cli import main
from world_models.shipped import available

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif("carracing" not in available(), reason="no shipped carracing model"),
]


@pytest.fixture(autouse=True)
def _headless(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")


def test_pretrained_carracing_is_the_papers_sizes_and_small():
    wm = world_models.pretrained("carracing")
    assert wm.env == "carracing"
    assert wm.controller.num_params == (32 + 256) * 3 + 3  # 867: [z, h] -> 3, with bias
    assert wm.vae.latent_size == wm.mdrnn.latent_size == 32 == wm.initial_mu.shape[1]
    assert wm.mdrnn.hidden_size == 256
    size = sum(f.stat().st_size for f in wm.root.rglob("*") if f.is_file())
    assert size <= 20 * 2**20
    card = (wm.root / "MODEL_CARD.md").read_text()
    assert card.startswith("# ") and "real env" in card


def test_watch_and_play_in_the_dream_run_with_it(tmp_path, capsys):
    gif = tmp_path / "dream.gif"
    args = ["play", "--pretrained", "carracing", "--in", "dream", "--agent", "--max-steps", "5"]
    assert main([*args, "--record", str(gif), "--scale", "1"]) == 0, capsys.readouterr().err
    assert gif.exists()
    out = tmp_path / "watch.gif"
    args = ["watch", "--pretrained", "carracing", "--in", "dream", "--max-steps", "5"]
    assert main([*args, "--out", str(out), "--scale", "1"]) == 0, capsys.readouterr().err
    assert out.exists()


@pytest.mark.box2d
def test_it_outdrives_the_random_policy_on_the_same_tracks(tmp_path):
    pytest.importorskip("Box2D")
    scores = {}
    for policy in ("controller", "random"):
        out = tmp_path / policy
        args = ["evaluate", "--pretrained", "carracing", "--policy", policy, "--trials", "4"]
        args += ["--seed", "5", "--max-steps", "300", "--workers", "2", "--video", "none"]
        assert main([*args, "--no-progress", "--out-dir", str(out)]) == 0
        scores[policy] = np.mean(json.loads((out / "results.json").read_text())["returns"])
    assert scores["controller"] > scores["random"] + 50
