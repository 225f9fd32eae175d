"""Mismatches are named, and sizes beyond the data are refused, in one line (exit 2) before
anything is written: V and M record the env their episodes came from, and the commands
that use them refuse another ``--env`` (checkpoints without the record pass); ``evaluate
--pretrained NAME`` refuses an ``--env`` other than the shipped model's; train-mdrnn
refuses a batch of more windows than its series hold; evaluate refuses more trials than
its results can list, and dreams its trials batch after batch."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
from helpers import dying_world_model, fake_dataset

from world_models.cli import COMMANDS, _parse, main
from world_models.core.checkpoint import read_meta
from world_models.core.config import override
from world_models.data.configs import EncodeConfig
from world_models.data.encode import encode
from world_models.data.series import load_series
from world_models.training.configs import TRAIN_MDNRNN_PRESETS, TRAIN_VAE_PRESETS
from world_models.training.mdrnn import train_mdrnn
from world_models.training.vae import train_vae

# Tiny models: one thread avoids spin-waits on a busy 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def one_line_error(capsys, rc: int) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """The pipeline on the fake env, tiny: collect -> train-vae -> encode -> train-mdrnn."""
    root = tmp_path_factory.mktemp("fake")
    data = fake_dataset(root / "data", episodes=6, max_steps=30, lengths=None)
    tiny = {"latent_size": 4, "holdout_fraction": 0.3, "max_steps": 2}
    vae_config = override(TRAIN_VAE_PRESETS["debug"], data_dir=data, run_dir=root / "vae", **tiny)
    vae = train_vae(vae_config) / "checkpoints" / "last"
    series = encode(
        EncodeConfig(data_dir=data, vae=vae, out_dir=root / "series", batch_size=64, progress=False)
    )
    tiny = {"hidden_size": 8, "num_gaussians": 2, "epochs": 1, "holdout_fraction": 0.3}
    quiet = {"progress": False, "tensorboard": False}
    m_config = override(TRAIN_MDNRNN_PRESETS["debug"], series_dir=series, **tiny, **quiet)
    m_run = train_mdrnn(dataclasses.replace(m_config, run_dir=root / "mdrnn"))
    return SimpleNamespace(
        root=root, data=data, vae=vae, series=series, mdrnn=m_run / "checkpoints/last"
    )


# ---------------------------------------------------------------------- the env of the data
def test_v_m_and_the_series_record_the_env_of_their_data(fake_run):
    assert read_meta(fake_run.vae)["env"] == "fake"
    assert json.loads((fake_run.series / "series.json").read_text())["env"] == "fake"
    assert read_meta(fake_run.mdrnn)["env"] == "fake"


def _env_commands(r, out: Path) -> dict[str, list[str]]:
    """Each command given the fake env's V and M with --env doom (or fake-discrete)."""
    models = ["--vae", str(r.vae), "--mdrnn", str(r.mdrnn)]
    return {
        # the example: the debug preset's M is the fake env's
        "train-controller": [
            *["train-controller", "--preset", "debug", "--env", "doom", "--mdrnn", str(r.mdrnn)],
            *["--series-dir", str(r.series), "--run-dir", str(out)],
        ],
        "evaluate-dream": [
            *["evaluate", "--in", "dream", "--env", "doom", "--policy", "random", *models],
            *["--series-dir", str(r.series), "--video", "none", "--out-dir", str(out)],
        ],
        "evaluate-real": [
            *["evaluate", "--env", "fake-discrete", *models, "--controller", str(r.root / "c")],
            *["--out-dir", str(out)],
        ],
        "fidelity": [
            *["fidelity", "--env", "doom", *models, "--series-dir", str(r.series)],
            *["--data-dir", str(r.data), "--no-real", "--out-dir", str(out)],
        ],
        "select": ["select", "--env", "doom", *models, "--run-dir", str(out)],
    }


@pytest.mark.parametrize(
    "command", ["train-controller", "evaluate-dream", "evaluate-real", "fidelity", "select"]
)
def test_commands_refuse_an_env_other_than_that_of_m(fake_run, tmp_path, capsys, command):
    out = tmp_path / "out"
    err = one_line_error(capsys, main(_env_commands(fake_run, out)[command]))
    env = "fake-discrete" if command == "evaluate-real" else "doom"
    assert f"M ({fake_run.mdrnn}) was trained on fake data, not {env}" in err
    assert "--env fake" in err
    assert not out.exists()


def test_the_same_env_and_checkpoints_without_the_record_pass(fake_run, tmp_path, capsys):
    args = ["evaluate", "--in", "dream", "--policy", "random", "--mdrnn", str(fake_run.mdrnn)]
    args += ["--series-dir", str(fake_run.series), "--trials", "3", "--dream-max-steps", "5"]
    args += ["--video", "none", "--no-progress"]
    assert main([*args, "--env", "fake", "--out-dir", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a/results.json").read_text())["env"] == "fake"
    old = tmp_path / "old-m"  # as an M saved before M recorded its env
    shutil.copytree(fake_run.mdrnn, old)
    meta = json.loads((old / "meta.json").read_text())
    del meta["env"]
    (old / "meta.json").write_text(json.dumps(meta))
    args[args.index(str(fake_run.mdrnn))] = str(old)
    assert main([*args, "--env", "doom", "--out-dir", str(tmp_path / "b")]) == 0, (
        capsys.readouterr()
    )
    assert (tmp_path / "b/results.json").is_file()


def test_encode_refuses_a_v_of_another_env_than_the_dataset(fake_run, tmp_path, capsys):
    data = tmp_path / "doom-data"  # the fake episodes, as a dataset that says it is Doom's
    shutil.copytree(fake_run.data, data, ignore=shutil.ignore_patterns(".cache"))
    manifest = json.loads((data / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps({**manifest, "env": "doom"}))
    out = tmp_path / "series"
    args = ["encode", "--data-dir", str(data), "--vae", str(fake_run.vae), "--out-dir", str(out)]
    err = one_line_error(capsys, main(args))
    assert f"V ({fake_run.vae}) was trained on fake data, not doom" in err
    assert not out.exists()


def test_evaluate_pretrained_refuses_another_env_given_beside_it(tmp_path, capsys):
    out = tmp_path / "ev"
    args = ["evaluate", "--pretrained", "doom", "--trials", "2", "--out-dir", str(out)]
    err = one_line_error(capsys, main([*args, "--env", "carracing"]))
    assert "--pretrained doom is a world model of doom, not --env carracing" in err
    assert not out.exists()
    err = one_line_error(capsys, main([*args, "--env=fake"]))
    assert "not --env fake" in err
    for ok in ([], ["--env", "doom"]):  # the shipped model's env, or none: parsed as before
        config = _parse("evaluate", COMMANDS["evaluate"], [*args[1:], *ok])
        assert config.pretrained == "doom" and config.trials == 2


# ---------------------------------------------------------------------- sizes
def test_train_mdrnn_refuses_a_batch_of_more_windows_than_the_series_hold(
    fake_run, tmp_path, capsys
):
    train, _ = load_series(fake_run.series, 0.1)
    windows = train.num_windows(16)  # the debug preset's seq_len
    base = ["train-mdrnn", "--preset", "debug", "--series-dir", str(fake_run.series)]
    base += ["--hidden-size", "8", "--no-progress", "--no-tensorboard"]
    for extra in (["--batch-size", "1000000"], ["--batch-size", "1000000", "--carry-state"]):
        out = tmp_path / "big"
        err = one_line_error(capsys, main([*base, "--run-dir", str(out), *extra]))
        assert f"--batch-size 1000000 is more than the {windows} distinct windows" in err
        assert not out.exists()
    out = tmp_path / "edge"
    err = one_line_error(
        capsys, main([*base, "--run-dir", str(out), "--batch-size", str(windows + 1)])
    )
    assert "lower --batch-size" in err and not out.exists()
    args = [*base, "--run-dir", str(out), "--batch-size", str(windows), "--epochs", "1"]
    assert main(args) == 0, capsys.readouterr().err  # every window in one batch: fine


def test_evaluate_refuses_more_trials_than_its_results_can_list(tmp_path, capsys):
    out = tmp_path / "ev"
    args = ["evaluate", "--preset", "debug", "--policy", "random", "--out-dir", str(out)]
    err = one_line_error(capsys, main([*args, "--trials", "1000000000"]))
    assert "trials=1000000000 is over the limit of 1,000,000" in err and not out.exists()
    assert _parse("evaluate", COMMANDS["evaluate"], [*args[1:], "--trials", "1000000"]).trials


@pytest.mark.parametrize("policy", ["random", "controller"])
def test_dream_trials_run_batch_after_batch(tmp_path, monkeypatch, capsys, policy):
    """Batches of 4 dreams (instead of 1,024 / 16,384): no batch is larger; the first batch
    is the one batch that 4 trials are; the videos are the best and the worst dream."""
    import world_models.evaluation.evaluate as ev
    from world_models.envs.dream import BatchedDream

    dying_world_model(tmp_path)
    sizes = []
    real_play, real_evaluate = BatchedDream.play, BatchedDream.evaluate

    def play(self, policy, n, *a, **kw):
        sizes.append(n)
        return real_play(self, policy, n, *a, **kw)

    def evaluate(self, controller, params, rollouts, *a, **kw):
        sizes.append(rollouts)
        return real_evaluate(self, controller, params, rollouts, *a, **kw)

    monkeypatch.setattr(BatchedDream, "play", play)
    monkeypatch.setattr(BatchedDream, "evaluate", evaluate)
    monkeypatch.setattr(ev, "DREAMS_PER_BATCH", 4)
    monkeypatch.setattr(ev, "BASELINE_DREAMS_PER_BATCH", 4)
    args = ["evaluate", "--in", "dream", "--env", "fake-discrete", "--policy", policy]
    for flag, name in (
        ("--vae", "v"),
        ("--mdrnn", "m"),
        ("--controller", "c"),
        ("--series-dir", "s"),
    ):
        args += [flag, str(tmp_path / name)]
    args += ["--tau", "1.0", "--dream-max-steps", "25", "--no-progress"]
    rc = main([*args, "--trials", "10", "--out-dir", str(tmp_path / "ten")])
    assert rc == 0, capsys.readouterr().err
    assert max(sizes) == 4 and sizes[:3] == [4, 4, 2]  # then the videos' replays, if any
    ten = json.loads((tmp_path / "ten/results.json").read_text())
    assert len(ten["returns"]) == 10 and ten["dreams_per_batch"] == 4
    assert len(set(ten["returns"])) > 1 and ten["returns"][:4] != ten["returns"][4:8]
    rows = (tmp_path / "ten/returns.csv").read_text().splitlines()[1:]
    lengths = [int(row.split(",")[2]) for row in rows]
    for name, key in (("best", "best_trial"), ("worst", "worst_trial")):
        assert iio.imread(tmp_path / f"ten/{name}.gif").shape[0] == lengths[ten[key]] + 1
    assert ten["returns"][ten["best_trial"]] == max(ten["returns"])
    assert ten["returns"][ten["worst_trial"]] == min(ten["returns"])
    rc = main([*args, "--video", "none", "--trials", "4", "--out-dir", str(tmp_path / "four")])
    assert rc == 0
    four = json.loads((tmp_path / "four/results.json").read_text())
    assert np.allclose(four["returns"], ten["returns"][:4])
