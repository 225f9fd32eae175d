"""Settings that cannot work fail at once as one line with exit 2 (or, for a window longer
than every episode, are cut with a one-line warning)."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import write_series

from world_models.cli import main
from world_models.core.checkpoint import read_optimizer_state
from world_models.core.config import from_dict
from world_models.core.errors import CheckpointError, ConfigError
from world_models.data import store
from world_models.models.vae import ConvVAE, VAEConfig


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


COLLECT = ["collect", "--env", "fake", "--workers", "1", "--no-progress"]


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--episodes", "0"], "episodes must be >= 1, got 0"),
        (["--workers", "-1"], "workers must be >= 0"),
        (["--max-steps", "0"], "max_steps must be >= 1"),
    ],
)
def test_collect_refuses_settings_that_cannot_work(tmp_path, capsys, flags, match):
    out = tmp_path / "data"
    assert main([*COLLECT, "--episodes", "2", "--out-dir", str(out), *flags]) == 2
    assert match in one_line_error(capsys)
    assert not out.exists()


def _commands(tmp_path: Path, target: Path) -> dict[str, list[str]]:
    return {
        "collect": [*COLLECT, "--episodes", "1", "--out-dir", str(target)],
        "train-vae": ["train-vae", "--preset", "debug", "--run-dir", str(target)],
        "train-mdrnn": [
            "train-mdrnn",
            "--preset",
            "debug",
            "--series-dir",
            str(write_series(tmp_path / "series", length=50)),
            "--run-dir",
            str(target),
        ],
        "train-controller": ["train-controller", "--preset", "debug", "--run-dir", str(target)],
        "evaluate": ["evaluate", "--preset", "debug", "--out-dir", str(target)],
        "dream": ["dream", "--out", str(target / "dream.gif")],
    }


@pytest.mark.parametrize(
    "command", ["collect", "train-vae", "train-mdrnn", "train-controller", "evaluate", "dream"]
)
def test_an_output_folder_under_a_regular_file_is_named(tmp_path, capsys, command):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "sub"
    assert main(_commands(tmp_path, target)[command]) == 2
    err = one_line_error(capsys)
    assert str(target) in err and f"lies under {tmp_path / 'afile'}, which is a file" in err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("command", ["collect", "train-controller", "evaluate"])
def test_an_impossible_output_folder_is_named(tmp_path, capsys, command):
    assert main(_commands(tmp_path, Path("/proc/x"))[command]) == 2
    assert "/proc/x: cannot create it" in one_line_error(capsys)


def test_encode_names_an_impossible_output_folder(tmp_path, capsys):
    data = tmp_path / "data"
    store.write_episode(
        data / store.episode_name(0),
        store.Episode(
            obs=np.zeros((3, 64, 64, 3), np.uint8),
            action=np.zeros((3, 3), np.float32),
            reward=np.zeros(3, np.float32),
            terminated=np.array([0, 0, 1], bool),
            truncated=np.zeros(3, bool),
        ),
    )
    ConvVAE(latent_size=4).save_pretrained(tmp_path / "vae")
    (tmp_path / "afile").write_text("x")
    argv = ["encode", "--data-dir", str(data), "--vae", str(tmp_path / "vae"), "--no-progress"]
    assert main([*argv, "--out-dir", str(tmp_path / "afile" / "s")]) == 2
    assert "series folder" in one_line_error(capsys)


def test_a_window_longer_than_every_episode_is_cut_with_a_warning(tmp_path, capsys):
    from world_models.core.checkpoint import read_checkpoint

    series = write_series(tmp_path / "series", length=50)
    argv = ["train-mdrnn", "--preset", "debug", "--series-dir", str(series)]
    argv += ["--run-dir", str(tmp_path / "run"), "--epochs", "1", "--no-progress"]
    argv += ["--no-tensorboard", "--seq-len", "100000"]
    argv += ["--batch-size", "4"]  # the 4 episodes' one window each (more are refused)
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    warning = [line for line in err if line.startswith("warning:")]
    assert warning == [
        f"warning: train-mdrnn: seq_len 100000 is longer than the longest episode in {series} "
        "(50 steps); windows are cut to 50 steps (the rest would be padding)"
    ]
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last").meta["step"] == 1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seq_len"] == 100000


def test_a_string_where_config_json_expects_a_number_names_the_field(tmp_path, capsys):
    path = ConvVAE(latent_size=8).save_pretrained(tmp_path / "vae")
    head = json.loads((path / "config.json").read_text())
    head["config"]["latent_size"] = "8"
    (path / "config.json").write_text(json.dumps(head))
    with pytest.raises(CheckpointError, match=r"field 'latent_size' must be an integer, got '8'"):
        ConvVAE.from_pretrained(path)
    assert main(["validate", "--checkpoint", str(path)]) == 2
    assert "config.json: field 'latent_size'" in one_line_error(capsys)


@pytest.mark.parametrize(
    "data, match",
    [
        ({"kl_tolerance": "0.5"}, "'kl_tolerance' must be a number"),
        ({"uint8_input": 1}, "'uint8_input' must be true or false"),
        ({"latent_size": 8.5}, "'latent_size' must be an integer"),
        ({"latent_size": True}, "'latent_size' must be an integer"),
        ({"input_channels": None}, "'input_channels' must be an integer, got None"),
    ],
)
def test_config_fields_are_type_checked_when_built_from_json(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(VAEConfig, data)


def test_config_types_that_are_right_still_load():
    from world_models.data.collect import CollectConfig

    assert from_dict(VAEConfig, {"kl_tolerance": 1}).kl_tolerance == 1.0  # an int is a number
    c = from_dict(
        CollectConfig,
        {"out_dir": "x", "env": "fake", "crop": [0, 84, 0, 96], "max_steps": None},
    )
    assert c.out_dir == Path("x") and c.crop == (0, 84, 0, 96) and c.max_steps is None
    with pytest.raises(ConfigError, match="'env' must be one of"):
        from_dict(CollectConfig, {"env": "pong"})


def test_an_unsafe_optimizer_file_is_refused_in_one_line_naming_it(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code ran')",))

    path = ConvVAE().save_pretrained(tmp_path / "vae")
    (path / "optimizer.pt").write_bytes(pickle.dumps(Boom(), protocol=2))
    with pytest.raises(CheckpointError) as info:
        read_optimizer_state(path)
    text = str(info.value)
    assert "\n" not in text and str(path / "optimizer.pt") in text
    assert "weights_only" not in text and "refused" in text
    (path / "optimizer.pt").write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError) as info:
        read_optimizer_state(path)
    assert "\n" not in str(info.value) and "corrupt optimizer.pt" in str(info.value)


def test_the_cli_prints_an_unsafe_optimizer_refusal_as_one_line(tmp_path, capsys):
    """Resuming a run whose optimizer.pt was replaced by a pickle: one line, exit 2."""
    series = write_series(tmp_path / "series", length=20)
    argv = ["train-mdrnn", "--preset", "debug", "--series-dir", str(series), "--no-progress"]
    argv += ["--run-dir", str(tmp_path / "run"), "--epochs", "1", "--no-tensorboard"]
    assert main(argv) == 0
    capsys.readouterr()
    (tmp_path / "run" / "checkpoints" / "last" / "optimizer.pt").write_bytes(
        pickle.dumps(sys.modules[__name__].Pickled())
    )
    assert main([*argv[:-3], "--epochs", "2", "--no-tensorboard"]) == 2
    err = one_line_error(capsys)
    assert "optimizer.pt" in err and "weights_only" not in err


class Pickled:
    def __reduce__(self):
        return (print, ("code ran",))
