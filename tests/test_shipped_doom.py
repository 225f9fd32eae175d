"""The shipped Doom world model: loads offline, and beats the random policy in the real game."""

from __future__ import annotations

import json

import numpy as np
import pytest

import world_models
from world_models.cli import main
from world_models.shipped import available

pytestmark = pytest.mark.usefixtures("one_thread")
shipped = pytest.mark.skipif("doom" not in available(), reason="no shipped doom model")


@shipped
def test_pretrained_doom_loads_offline_and_is_small():
    wm = world_models.pretrained("doom")
    assert wm.env == "doom" and wm.controller.num_params == 64 + 512 + 512
    assert wm.vae.latent_size == wm.mdrnn.latent_size == 64 == wm.initial_mu.shape[1]
    size = sum(f.stat().st_size for f in wm.root.rglob("*") if f.is_file())
    assert size <= 20 * 2**20
    assert (wm.root / "MODEL_CARD.md").read_text().startswith("# ")


dream_shipped = pytest.mark.skipif("doom-dream" not in available(), reason="no doom-dream")


@dream_shipped
def test_doom_dream_is_a_dream_evolved_c_with_its_v_and_m(tmp_path):
    wm = world_models.pretrained("doom-dream")
    assert wm.env == "doom" and wm.controller.num_params == 64 + 512 + 512
    assert wm.settings["done_mode"] == "sample" and wm.settings["tau"] > 0
    card = (wm.root / "MODEL_CARD.md").read_text()
    assert "evolved only in the dream" in card and "validation games" in card
    size = sum(f.stat().st_size for f in wm.root.rglob("*") if f.is_file())
    assert size <= 20 * 2**20
    # it plays in its own dream from the command line, with the settings it was evolved in
    out = tmp_path / "dream"
    args = ["evaluate", "--pretrained", "doom-dream", "--in", "dream", "--trials", "8"]
    assert main([*args, "--video", "none", "--no-progress", "--out-dir", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["trials"] == 8 and min(res["returns"]) > 0


@pytest.mark.doom
@pytest.mark.parametrize(
    "name",
    [pytest.param("doom", marks=shipped), pytest.param("doom-dream", marks=dream_shipped)],
)
def test_a_shipped_doom_model_beats_the_random_policy_in_the_real_game(tmp_path, name):
    pytest.importorskip("vizdoom")
    scores = {}
    for policy in ("controller", "random"):
        out = tmp_path / policy
        args = ["evaluate", "--pretrained", name, "--policy", policy, "--trials", "6"]
        args += ["--seed", "5", "--workers", "2", "--video", "none", "--no-progress"]
        assert main([*args, "--out-dir", str(out)]) == 0
        scores[policy] = np.mean(json.loads((out / "results.json").read_text())["returns"])
    assert scores["controller"] > scores["random"]
