"""CMA-ES on C: the saved state rebuilds pycma exactly; dream and real runs resume."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from world_models.cli import main
from world_models.core.config import override
from world_models.core.errors import CheckpointError
from world_models.data.store import save_npz
from world_models.models.controller import Controller
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE
from world_models.training.configs import TRAIN_CONTROLLER_PRESETS as PRESETS
from world_models.training.controller import STATE_FILE, cma_state, make_es, train_controller

Z, H = 6, 10


# Small models: one thread avoids oversubscribing the cores shared with env workers.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_cma_state_round_trip_continues_identically():
    def f(x):
        return float(np.sum((x - 0.3) ** 2))

    es = make_es(40, 0.1, 8, seed=3)
    for g in range(6):
        np.random.seed(g)
        xs = es.ask()
        es.tell(xs, [f(x) for x in xs])
    state = {k: np.array(v) for k, v in cma_state(es).items()}
    es2 = make_es(40, 0.1, 8, seed=3, state=state)
    for g in range(6, 12):
        np.random.seed(g)
        xs = es.ask()
        np.random.seed(g)
        xs2 = es2.ask()
        assert np.array_equal(np.asarray(xs), np.asarray(xs2))
        es.tell(xs, [f(x) for x in xs])
        es2.tell(xs2, [f(x) for x in xs2])
    assert es.sigma == es2.sigma and np.array_equal(es.mean, es2.mean)
    with pytest.raises(CheckpointError):
        make_es(41, 0.1, 8, seed=3, state=state)


def _dream_setup(tmp_path):
    torch.manual_seed(0)
    m = MDNRNN(latent_size=Z, action_size=1, hidden_size=H, num_gaussians=2, done_head=True)
    with torch.no_grad():  # death depends on h, so the controller's choices matter
        m.head.bias[-1] = -1.0
    m.save_pretrained(tmp_path / "m")
    rng = np.random.default_rng(0)
    for i in range(4):
        save_npz(
            tmp_path / "series" / f"ep_{i:06d}.npz",
            {
                "mu": rng.normal(size=(5, Z)).astype(np.float16),
                "logvar": np.full((5, Z), -2.0, np.float16),
            },
        )
    return _dream_config(tmp_path, generations=4, dream_max_steps=40)


def _dream_config(tmp_path, **changes):
    """The debug preset in the dream of tmp_path/m, started from tmp_path/series."""
    return override(
        PRESETS["debug"],
        env="fake-discrete",  # Doom-like: one controller output split into thirds
        mdrnn=tmp_path / "m",
        series_dir=tmp_path / "series",
        run_dir=tmp_path / "run",
        **changes,
    )


def test_dream_training_checkpoints_and_resumes(tmp_path):
    config = _dream_setup(tmp_path)
    run = train_controller(dataclasses.replace(config, generations=2))
    for name in ("last", "best", "best_candidate"):
        c = Controller.from_pretrained(run / "checkpoints" / name)
        assert c.config.action_mode == "thirds" and c.num_params == Z + H + 1
    assert Controller.from_pretrained(run / "checkpoints/last").checkpoint_meta["step"] == 2
    first_rows = (run / "metrics.jsonl").read_text().splitlines()
    train_controller(config)  # re-run with more generations: resumes at 2
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[:2] == [json.loads(r) for r in first_rows]
    # every evaluated mean is kept for `select`, with its dream score
    evals = {r["step"]: r["eval_mean"] for r in rows if "eval_mean" in r}
    kept = sorted(p.name for p in (run / "checkpoints").glob("eval-gen*"))
    assert kept == [f"eval-gen{g:05d}" for g in sorted(evals)]
    meta = Controller.from_pretrained(run / "checkpoints" / kept[-1]).checkpoint_meta
    assert meta["eval_mean"] == pytest.approx(evals[max(evals)])
    # the resumed run is the uninterrupted one
    straight = train_controller(dataclasses.replace(config, run_dir=tmp_path / "straight"))
    last = Controller.from_pretrained(run / "checkpoints/last").get_flat()
    assert np.allclose(Controller.from_pretrained(straight / "checkpoints/last").get_flat(), last)
    with np.load(run / STATE_FILE) as z:
        assert json.loads(str(z["trainer"]))["generation"] == 4
    assert (run / "fitness_curve.png").exists()
    assert np.abs(last).sum() > 0  # the mean moved away from x0 = 0


def test_dream_training_improves_on_a_learnable_dream(tmp_path):
    torch.manual_seed(0)
    m = MDNRNN(latent_size=Z, action_size=1, hidden_size=H, num_gaussians=2, done_head=True)
    with torch.no_grad():  # dies soon unless the controller keeps choosing LEFT (-1)
        m.head.weight.zero_()
        m.head.bias[-1] = 0.5
        lstm = m.lstm
        for w in (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0):
            w.zero_()
        lstm.weight_ih_l0[2 * H : 3 * H, Z] = 3.0  # cell input follows the action
        lstm.bias_ih_l0[3 * H : 4 * H] = 5.0
        m.head.weight[-1] = 1.0  # done logit = 0.5 + sum(h): negative h keeps it alive
    m.save_pretrained(tmp_path / "m")
    save_npz(
        tmp_path / "series" / "ep_000000.npz",
        {"mu": np.zeros((2, Z), np.float16), "logvar": np.zeros((2, Z), np.float16)},
    )
    settings = {"popsize": 12, "rollouts": 2, "sigma0": 0.5, "eval_every": 6}
    config = _dream_config(tmp_path, generations=6, dream_max_steps=30, **settings)
    run = train_controller(config)
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["eval_mean"] == 30  # learned to survive to the step limit
    assert max(r["fitness_max"] for r in rows) == 30
    assert rows[0]["fitness_min"] < 30


def test_real_training_with_the_fake_env_via_cli(tmp_path, capsys):
    torch.manual_seed(0)
    ConvVAE(Z).save_pretrained(tmp_path / "v")
    MDNRNN(latent_size=Z, action_size=3, hidden_size=H, num_gaussians=2).save_pretrained(
        tmp_path / "m"
    )
    args = [
        "train-controller",
        "--preset",
        "debug",
        "--in",
        "real",
        "--env",
        "fake",
        "--vae",
        str(tmp_path / "v"),
        "--mdrnn",
        str(tmp_path / "m"),
        "--run-dir",
        str(tmp_path / "run"),
        "--generations",
        "2",
        "--popsize",
        "4",
        "--rollouts",
        "2",
        "--eval-rollouts",
        "2",
        "--max-steps",
        "6",
        "--workers",
        "2",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "generations done:  2 of 2" in out
    rows = [json.loads(r) for r in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["episodes"] for r in rows] == [8, 8] and "eval_mean" in rows[1]
    c = Controller.from_pretrained(tmp_path / "run/checkpoints/best")
    assert c.config.action_mode == "carracing" and c.num_params == (Z + H) * 3 + 3
    # a changed non-resumable setting is refused with a clear error
    assert main(args[:-2] + ["--workers", "2", "--popsize", "6"]) == 2
    assert "another config" in capsys.readouterr().err
