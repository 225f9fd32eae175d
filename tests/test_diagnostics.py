"""The dream's diagnostics: M's done head at the dream's rule, and its open-loop drift."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from world_models.evaluation.diagnostics import (
    done_detection,
    fire_probability,
    load_episodes,
    open_loop_errors,
)
from world_models.models.configs import MDNRNNConfig
from world_models.models.mdrnn import MDNRNN


def _episodes(n: int, t: int, died: bool, z: int = 4, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n):
        term = np.zeros(t, bool)
        term[-1] = died
        eps.append(
            {
                "mu": rng.normal(size=(t, z)).astype(np.float32),
                "logvar": np.full((t, z), -4.0, np.float32),
                "action": np.eye(3, dtype=np.float32)[rng.integers(0, 3, t)],
                "terminated": term,
            }
        )
    return eps


def _model() -> MDNRNN:
    torch.manual_seed(0)
    tiny = MDNRNNConfig(latent_size=4, action_size=3, hidden_size=8, num_gaussians=2)
    return MDNRNN(tiny, done_head=True, done_pos_weight=10.0).eval()


def test_fire_probability_follows_the_dream_rules():
    logit = torch.tensor([-3.0, 0.0, 3.0])
    assert fire_probability(logit, "threshold", 0.0, 10.0).tolist() == [0.0, 0.0, 1.0]
    assert fire_probability(logit, "threshold", 3.5, 10.0).tolist() == [1.0, 1.0, 1.0]
    want = torch.sigmoid(logit + 1.0 - math.log(10.0))
    assert torch.allclose(fire_probability(logit, "sample", 1.0, 10.0), want)


def test_done_detection_counts_fatal_steps_and_false_alarms():
    m, eps = _model(), _episodes(5, 40, died=True) + _episodes(3, 40, died=False, seed=1)
    always = done_detection(m, eps, "threshold", done_offset=100.0)
    never = done_detection(m, eps, "threshold", done_offset=-100.0)
    assert always["deaths"] == 5 and always["episodes"] == 8
    assert always["recall"] == always["recall_window"] == always["false_alarm"] == 1.0
    assert never["recall"] == never["recall_window"] == never["false_alarm"] == 0.0
    mid = done_detection(m, eps, "sample", done_offset=0.0)
    assert 0.0 < mid["false_alarm"] < 1.0 and mid["recall"] <= mid["recall_window"]


def test_open_loop_errors_against_holding_the_last_frame():
    m = _model()
    still = _episodes(4, 100, died=False)
    for ep in still:  # a game that never changes: holding the last z is exact
        ep["mu"][:] = ep["mu"][0]
    res = open_loop_errors(m, still, context=10, horizons=(1, 5, 20), max_windows=8)
    assert res["windows"] >= 4 and set(res["k"]) == {"1", "5", "20"}
    for v in res["k"].values():
        assert v["hold_mse"] == 0.0 and v["real_motion"] == 0.0 and v["mse"] > 0.0
    assert open_loop_errors(m, _episodes(2, 20, False), context=10)["windows"] == 0


def test_load_episodes_takes_the_held_out_split(tmp_path):
    from world_models.data.series import is_held_out
    from world_models.data.store import save_npz

    names = [f"ep_{i:06d}.npz" for i in range(30)]
    for name, ep in zip(names, _episodes(30, 5, died=True)):
        save_npz(tmp_path / name, ep)
    held = load_episodes(tmp_path, 100, 0.3)
    assert len(held) == sum(is_held_out(n, 0.3) for n in names) > 0
    assert len(load_episodes(tmp_path, 7, None)) == 7
    assert held[0]["action"].shape == (5, 3)
    assert load_episodes(tmp_path, 7, 0.0) == []  # nothing held out: nothing to diagnose
    with pytest.raises(Exception, match="no series episodes"):
        load_episodes(tmp_path / "none", 5, None)
