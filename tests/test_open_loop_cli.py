"""`world-models dream` through the CLI: bad settings fail in one line, before any work;
random actions keep the recorded actions' kind (one-hot stays one-hot)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from world_models import cli
from world_models.core import media
from world_models.core.errors import ConfigError, MissingDependencyError
from world_models.evaluation import open_loop
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE

T = 20


def _episode(path: Path, action: np.ndarray, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 256, size=(len(action), 64, 64, 3), dtype=np.uint8)
    np.savez(path, obs=obs, action=action.astype(np.float32))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny V (z=8), two tiny Ms (3-dim and 1-dim actions) and three episodes."""
    root = tmp_path_factory.mktemp("dream_cli")
    torch.manual_seed(0)
    ConvVAE(latent_size=8).eval().save_pretrained(root / "vae")
    MDNRNN(latent_size=8, action_size=3, hidden_size=16).save_pretrained(root / "m3")
    MDNRNN(latent_size=8, action_size=1, hidden_size=16).save_pretrained(root / "m1")
    rng = np.random.default_rng(0)
    cont = rng.uniform(-1, 1, size=(T, 3))
    onehot = np.eye(3)[np.repeat([0, 2], T // 2)]  # only classes 0 and 2 recorded
    scalar = np.zeros((T, 1))  # Doom scalar encoding: the episode only ever stayed
    eps = {
        "cont": _episode(root / "ep_cont.npz", cont),
        "onehot": _episode(root / "ep_onehot.npz", onehot),
        "scalar": _episode(root / "ep_scalar.npz", scalar),
    }
    return root, eps


def _argv(root: Path, episode: Path, out: Path, *extra: str, m: str = "m3") -> list[str]:
    return [
        "dream",
        "--vae",
        str(root / "vae"),
        "--mdrnn",
        str(root / m),
        "--episode",
        str(episode),
        "--out",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]


@pytest.fixture
def no_model_loading(monkeypatch):
    """Loading a model fails the test: validation must come first."""

    def boom(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(ConvVAE, "from_pretrained", boom)
    monkeypatch.setattr(MDNRNN, "from_pretrained", boom)


def _one_line_error(capsys, rc: int) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--scale", "0"], "--scale must be"),
        (["--fps", "0"], "--fps must be"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--start", "-5"], "--start must be >= 0"),
        (["--tau", "-1"], "--tau must be"),
        (["--tau", "nan"], "--tau must be"),
    ],
)
def test_bad_numbers_fail_in_one_line_before_loading(
    setup, tmp_path, capsys, no_model_loading, flags, match
):
    root, eps = setup
    out = tmp_path / "d.gif"
    rc = cli.main(_argv(root, eps["cont"], out, *flags))
    assert match in _one_line_error(capsys, rc)
    assert list(tmp_path.iterdir()) == []


def test_start_past_the_episode_fails_before_loading(setup, tmp_path, capsys, no_model_loading):
    root, eps = setup
    out = tmp_path / "d.gif"
    rc = cli.main(_argv(root, eps["cont"], out, "--start", str(T)))
    line = _one_line_error(capsys, rc)
    assert f"--start {T}" in line and f"{T} frames" in line
    assert list(tmp_path.iterdir()) == []


def test_unknown_suffix_fails_in_one_line(setup, tmp_path, capsys, no_model_loading):
    root, eps = setup
    out = tmp_path / "d.avi"
    rc = cli.main(_argv(root, eps["cont"], out))
    line = _one_line_error(capsys, rc)
    assert ".gif" in line and ".mp4" in line and ".avi" in line
    assert list(tmp_path.iterdir()) == []


def test_mp4_without_ffmpeg_names_the_extra(setup, tmp_path, capsys, monkeypatch, no_model_loading):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "imageio_ffmpeg" else real_find_spec(name, *a),
    )
    root, eps = setup
    out = tmp_path / "d.mp4"
    rc = cli.main(_argv(root, eps["cont"], out))
    line = _one_line_error(capsys, rc)
    assert 'pip install "world_models[video]"' in line
    assert list(tmp_path.iterdir()) == []


def test_good_input_writes_a_gif(setup, tmp_path, capsys):
    import imageio.v3 as iio

    root, eps = setup
    out = tmp_path / "sub" / "d.gif"
    rc = cli.main(_argv(root, eps["cont"], out, "--steps", "7", "--scale", "1", "--start", "3"))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"video: {out}" in captured.out
    frames = iio.imread(out)
    assert frames.shape[0] == 7 and frames.shape[1:3] == (64, 64 * 2 + 4)
    assert sorted(p.name for p in out.parent.iterdir()) == ["d.gif"]  # no temp file left


def test_save_animation_refuses_bad_paths_and_fps(tmp_path, monkeypatch):
    frames = [np.zeros((8, 8, 3), np.uint8)] * 3
    with pytest.raises(ConfigError, match=r"\.avi"):
        media.save_animation(frames, tmp_path / "a.avi")
    with pytest.raises(ConfigError, match="fps"):
        media.save_animation(frames, tmp_path / "a.gif", fps=0)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingDependencyError, match=r"world_models\[video\]"):
        media.save_animation(frames, tmp_path / "a.mp4")
    assert list(tmp_path.iterdir()) == []


def test_save_animation_temp_file_keeps_the_suffix(tmp_path, monkeypatch):
    import imageio.v3 as iio

    seen = []

    def fake_imwrite(uri, image, **kwargs):
        seen.append((Path(uri), kwargs))
        Path(uri).write_bytes(b"video")

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "imageio_ffmpeg" else real_find_spec(name, *a),
    )
    monkeypatch.setattr(iio, "imwrite", fake_imwrite)
    frames = [np.zeros((8, 8, 3), np.uint8)] * 3
    out = media.save_animation(frames, tmp_path / "clip.mp4", fps=10)
    ((tmp, kwargs),) = seen
    assert tmp.suffix == ".mp4" and tmp.parent == tmp_path and tmp.name.startswith(".")
    assert kwargs["fps"] == 10
    assert out.read_bytes() == b"video" and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def _runs(classes: np.ndarray) -> list[int]:
    edges = np.flatnonzero(np.diff(classes)) + 1
    return np.diff(np.concatenate([[0], edges, [len(classes)]])).tolist()


def test_random_actions_keep_one_hot_rows():
    recorded = np.eye(3, dtype=np.float32)[np.repeat([0, 2], 10)]
    a = open_loop.random_actions(recorded, 500, np.random.default_rng(0))
    assert a.shape == (500, 3) and a.dtype == np.float32
    assert np.all((a == 0) | (a == 1)) and np.all(a.sum(1) == 1)
    classes = a.argmax(1)
    assert set(classes.tolist()) == {0, 1, 2}  # every class, not only the recorded ones
    # a class held for 1-10 steps (back-to-back holds may draw the same class), not
    # redrawn every step: runs average 5.5 * 3/2 steps
    assert 5 < np.mean(_runs(classes)) < 12


def test_random_actions_of_the_doom_scalar_encoding():
    recorded = np.array([[0.0], [1.0], [1.0], [0.0]], np.float32)
    a = open_loop.random_actions(recorded, 300, np.random.default_rng(1))
    assert a.shape == (300, 1)
    assert set(np.unique(a).tolist()) == {-1.0, 0.0, 1.0}


def test_random_actions_of_an_index_column():
    recorded = np.array([[0.0], [3.0], [1.0]], np.float32)
    a = open_loop.random_actions(recorded, 300, np.random.default_rng(2))
    assert set(np.unique(a).tolist()) == {0.0, 1.0, 2.0, 3.0}


def test_random_actions_stay_continuous_for_continuous_ones():
    rng = np.random.default_rng(3)
    recorded = rng.uniform([-1, 0, 0], [1, 1, 0.5], size=(30, 3)).astype(np.float32)
    a = open_loop.random_actions(recorded, 200, np.random.default_rng(4))
    assert a.shape == (200, 3)
    assert np.all(a >= recorded.min(0)) and np.all(a <= recorded.max(0))
    assert len(np.unique(a[:, 0])) > 100  # not snapped to a few values


@pytest.mark.parametrize(("ep", "m"), [("onehot", "m3"), ("scalar", "m1")])
def test_dream_with_random_actions_feeds_m_discrete_ones(
    setup, tmp_path, capsys, monkeypatch, ep, m
):
    root, eps = setup
    fed = []
    real_open_loop = open_loop.open_loop

    def spy(vae, mdrnn, first_frame, actions, tau, seed=0):
        fed.append(actions)
        return real_open_loop(vae, mdrnn, first_frame, actions, tau, seed)

    monkeypatch.setattr(open_loop, "open_loop", spy)
    out = tmp_path / "r.gif"
    argv = _argv(root, eps[ep], out, "--actions", "random", "--steps", "40", "--scale", "1", m=m)
    rc = cli.main(argv)
    assert rc == 0, capsys.readouterr().err
    (a,) = fed
    assert a.shape[0] == 40 and out.exists()
    if ep == "onehot":
        assert np.all((a == 0) | (a == 1)) and np.all(a.sum(1) == 1)
    else:
        assert set(np.unique(a).tolist()) <= {-1.0, 0.0, 1.0}
