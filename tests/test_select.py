"""``select``: dream-evolved candidates chosen on a few real games, apart from the test seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from world_models.cli import main
from world_models.core.errors import ConfigError
from world_models.envs.pool import EnvFactory, run_sequential
from world_models.evaluation.select import candidates
from world_models.models.controller import Controller
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE
from world_models.policies.controller import ControllerPolicy

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(tmp_path, n_means: int = 5):
    torch.manual_seed(0)
    vae, m = ConvVAE(8), MDNRNN(latent_size=8, action_size=3, hidden_size=16, num_gaussians=2)
    vae.save_pretrained(tmp_path / "v")
    m.save_pretrained(tmp_path / "m")
    ckpts = tmp_path / "run" / "checkpoints"
    cs = {}
    for i, name in enumerate(
        ["best", "best_candidate"] + [f"eval-gen{g:05d}" for g in range(n_means)]
    ):
        c = Controller(latent_size=8, hidden_size=16, output_size=3, action_mode="carracing")
        with torch.no_grad():
            c.fc.weight.mul_(5 * (i + 1))
        c.save_pretrained(ckpts / name)
        cs[name] = c
    return vae, m, cs


def test_candidates_keep_best_and_spread_the_means(tmp_path):
    _run(tmp_path, n_means=9)
    names = [p.name for p in candidates(tmp_path / "run", 5)]
    assert names[:2] == ["best", "best_candidate"]
    assert names[2:] == ["eval-gen00000", "eval-gen00004", "eval-gen00008"]  # last kept
    with pytest.raises(ConfigError, match="no controller checkpoints"):
        candidates(tmp_path / "nothing", 3)


def test_select_picks_the_best_validation_mean_and_copies_it(tmp_path, capsys):
    vae, m, cs = _run(tmp_path, n_means=2)
    args = ["select", "--run-dir", str(tmp_path / "run"), "--vae", str(tmp_path / "v")]
    args += ["--mdrnn", str(tmp_path / "m"), "--env", "fake", "--games", "3", "--seed", "7"]
    args += ["--max-steps", "12", "--workers", "1", "--no-progress"]
    assert main(args) == 0
    sel = json.loads((tmp_path / "run" / "selection.json").read_text())
    means = {r["candidate"]: r["mean"] for r in sel["candidates"]}
    assert len(means) == 4 and sel["chosen"] == max(means, key=means.get)
    # the validation games are seeds 7, 8, 9: the same numbers as playing them here
    chosen = cs[sel["chosen"]]
    seq = run_sequential(EnvFactory("fake", 12), ControllerPolicy(vae, m, chosen), range(7, 10))
    assert np.isclose(means[sel["chosen"]], seq.returns.mean(), rtol=1e-4)
    copied = Controller.from_pretrained(tmp_path / "run" / "checkpoints" / "selected")
    assert torch.equal(copied.fc.weight, chosen.fc.weight)
    assert "chosen:" in capsys.readouterr().out
