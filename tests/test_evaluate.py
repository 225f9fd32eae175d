"""``evaluate``: N trials in the (fake) real env, histogram, best/worst animations."""

from __future__ import annotations

import dataclasses
import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from helpers import dying_world_model, world_flags

from world_models.cli import main
from world_models.core.config import override
from world_models.core.errors import ConfigError, MissingDependencyError
from world_models.envs.pool import EnvFactory, run_sequential
from world_models.evaluation.evaluate import EvaluateConfig, evaluate
from world_models.models.controller import Controller
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE
from world_models.policies.controller import ControllerPolicy

# Small models: one thread avoids oversubscribing the cores shared with env workers.
pytestmark = pytest.mark.usefixtures("one_thread")


def _checkpoints(tmp_path, mode="carracing", outputs=3, action_size=3):
    torch.manual_seed(0)
    vae, m, c = (
        ConvVAE(8),
        MDNRNN(latent_size=8, action_size=action_size, hidden_size=16, num_gaussians=2),
        Controller(latent_size=8, hidden_size=16, output_size=outputs, action_mode=mode),
    )
    with torch.no_grad():
        c.fc.weight.mul_(20)
    vae.save_pretrained(tmp_path / "v")
    m.save_pretrained(tmp_path / "m")
    c.save_pretrained(tmp_path / "c")
    return vae, m, c


def test_evaluate_writes_results_histogram_and_animations(tmp_path):
    vae, m, c = _checkpoints(tmp_path)
    config = override(
        EvaluateConfig(),
        controller=tmp_path / "c",
        vae=tmp_path / "v",
        mdrnn=tmp_path / "m",
        env="fake",
        trials=6,
        max_steps=15,
        workers=2,
        out_dir=tmp_path / "eval",
        progress=False,
    )
    out = evaluate(config)
    r = json.loads((out / "results.json").read_text())
    assert r["trials"] == 6 and len(r["returns"]) == 6
    assert r["mean"] == pytest.approx(np.mean(r["returns"]))
    assert r["std"] == pytest.approx(np.std(r["returns"]))
    assert r["replay_matches"] is True
    # the same numbers as playing each seed alone in this process
    seq = run_sequential(EnvFactory("fake", 15), ControllerPolicy(vae, m, c), range(6))
    assert np.allclose(r["returns"], seq.returns, rtol=1e-4)
    assert (out / "histogram.png").stat().st_size > 1000
    best = iio.imread(out / "best.gif")
    worst = iio.imread(out / "worst.gif")
    # raw 96x96 env frames, as many as the episode's steps + 1
    lengths = {
        int(s): int(n)
        for s, _, n in (
            line.split(",") for line in (out / "returns.csv").read_text().splitlines()[1:]
        )
    }
    assert best.shape[1:3] == (96, 96) and best.shape[0] == lengths[r["best_seed"]] + 1
    assert worst.shape[0] == lengths[r["worst_seed"]] + 1
    assert r["returns"][r["best_seed"]] >= r["returns"][r["worst_seed"]]


def test_evaluate_cli_random_baseline_and_mode_mismatch(tmp_path, capsys):
    assert (
        main(
            [
                "evaluate",
                "--policy",
                "random",
                "--env",
                "fake-discrete",
                "--trials",
                "3",
                "--max-steps",
                "5",
                "--workers",
                "1",
                "--video",
                "none",
                "--no-progress",
                "--out-dir",
                str(tmp_path / "rnd"),
            ]
        )
        == 0
    )
    assert "over 3 trials" in capsys.readouterr().out
    assert not list((tmp_path / "rnd").glob("*.gif"))
    _checkpoints(tmp_path)  # a CarRacing-style controller on a discrete env: refused
    with pytest.raises(ConfigError, match="thirds"):
        evaluate(
            EvaluateConfig(
                controller=tmp_path / "c",
                vae=tmp_path / "v",
                mdrnn=tmp_path / "m",
                env="fake-discrete",
                trials=2,
                out_dir=tmp_path / "x",
                progress=False,
            )
        )


def test_evaluate_in_the_dream_scores_and_decodes_best_and_worst(tmp_path, capsys):
    from world_models.envs.dream import BatchedDream

    m, c, mu = dying_world_model(tmp_path)
    args = ["evaluate", "--in", "dream", "--env", "fake-discrete", "--trials", "12"]
    args += ["--controller", str(tmp_path / "c"), *world_flags(tmp_path), "--tau", "1.0"]
    args += ["--dream-max-steps", "25", "--out-dir", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 0
    assert "dream (tau 1)" in capsys.readouterr().out
    r = json.loads((tmp_path / "out/results.json").read_text())
    dream = BatchedDream(m, torch.tensor(mu[:, 0]).float(), torch.full((3, 8), -3.0), 1.0, 25)
    direct = dream.evaluate(c, torch.tensor(c.get_flat()[None]), 12, seed=0)[0]
    assert np.allclose(r["returns"], direct.numpy()) and len(set(r["returns"])) > 1
    best = iio.imread(tmp_path / "out/best.gif")
    assert best.shape[1:] == (64, 64, 3) and best.shape[0] == max(r["returns"]) + 1
    assert r["returns"][r["best_trial"]] == max(r["returns"]) and "best_seed" not in r
    assert (tmp_path / "out/returns.csv").read_text().startswith("trial,return,length\n")


def test_unwritable_video_settings_fail_before_any_trial(tmp_path, monkeypatch):
    import importlib.util

    import world_models.evaluation.evaluate as ev

    def no_trials(*args, **kwargs):
        raise AssertionError("trials ran before the video settings were checked")

    monkeypatch.setattr(ev, "_real_trials", no_trials)
    base = ev.EvaluateConfig(env="fake", policy="random", out_dir=tmp_path / "e", trials=2)
    with pytest.raises(ConfigError, match="fps"):
        ev.evaluate(dataclasses.replace(base, fps=0))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "imageio_ffmpeg" else real_find_spec(name, *a),
    )
    with pytest.raises(MissingDependencyError, match="video"):
        ev.evaluate(dataclasses.replace(base, video="mp4"))
