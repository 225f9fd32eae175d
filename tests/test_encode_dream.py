"""`encode` (frames -> cached latent series) and `dream` (open-loop video)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fake_dataset

from world_models.cli import main
from world_models.core.errors import ConfigError, DataError
from world_models.data import store
from world_models.data.encode import EncodeConfig, _prefetch, encode
from world_models.evaluation.open_loop import DreamVideoConfig, dream_video, open_loop
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    data = fake_dataset(root / "data", episodes=5, max_steps=30, lengths=None)
    torch.manual_seed(0)
    vae = ConvVAE(latent_size=8)
    vae.eval()
    vae.save_pretrained(root / "vae")
    action_size = np.load(data / "ep_000000.npz")["action"].shape[1]
    MDNRNN(latent_size=8, action_size=action_size, hidden_size=16).save_pretrained(root / "m")
    return root, data


def cfg(root: Path, data: Path, out: str = "series", **kw) -> EncodeConfig:
    kw = {"batch_size": 40, "progress": False, **kw}
    return EncodeConfig(data_dir=data, vae=root / "vae", out_dir=root / out, **kw)


def test_encode_writes_one_series_per_episode(setup):
    root, data = setup
    out = encode(cfg(root, data))
    files = sorted(p.name for p in out.glob("ep_*.npz"))
    assert files == sorted(p.name for p in data.glob("ep_*.npz"))
    ep = np.load(data / "ep_000002.npz")
    s = np.load(out / "ep_000002.npz")
    assert s["mu"].dtype == np.float16 and s["mu"].shape == (len(ep["obs"]), 8)
    for k in ("action", "reward", "terminated", "truncated"):
        assert np.array_equal(s[k], ep[k])
    vae = ConvVAE.from_pretrained(root / "vae").eval()
    x = torch.from_numpy(ep["obs"]).permute(0, 3, 1, 2).float() / 255
    mu, logvar = vae.encode(x)
    np.testing.assert_allclose(s["mu"], mu.detach().numpy(), atol=2e-2, rtol=1e-2)
    np.testing.assert_allclose(s["logvar"], logvar.detach().numpy(), atol=2e-2, rtol=1e-2)


def test_encode_resumes_and_only_redoes_what_is_missing(setup):
    root, data = setup
    out = encode(cfg(root, data, "resume"))
    kept = out / "ep_000001.npz"
    before = kept.stat().st_mtime_ns
    (out / "ep_000003.npz").unlink()
    (out / "ep_000004.npz").write_bytes(b"torn")  # as if killed mid-write without atomicity
    encode(cfg(root, data, "resume"))
    assert kept.stat().st_mtime_ns == before
    assert np.load(out / "ep_000004.npz")["mu"].shape[1] == 8


def test_encode_refuses_latents_of_another_vae(setup, tmp_path):
    root, data = setup
    encode(cfg(root, data, "mix"))
    ConvVAE(latent_size=8).save_pretrained(tmp_path / "other")
    with pytest.raises(DataError, match="another VAE"):
        encode(
            EncodeConfig(
                data_dir=data, vae=tmp_path / "other", out_dir=root / "mix", progress=False
            )
        )


def test_encode_names_a_corrupt_episode_or_skips_it(setup, tmp_path):
    root, data = setup
    bad = tmp_path / "data"
    bad.mkdir()
    for p in data.glob("ep_*.npz"):
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "ep_000002.npz").write_bytes((bad / "ep_000002.npz").read_bytes()[:300])
    with pytest.raises(DataError, match="ep_000002.npz"):
        encode(
            EncodeConfig(data_dir=bad, vae=root / "vae", out_dir=tmp_path / "s1", progress=False)
        )
    with pytest.warns(UserWarning, match="ep_000002"):
        out = encode(
            EncodeConfig(
                data_dir=bad,
                vae=root / "vae",
                out_dir=tmp_path / "s2",
                progress=False,
                skip_bad=True,
            )
        )
    assert len(list(out.glob("ep_*.npz"))) == 4


def _latents(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {p.name: (np.load(p)["mu"], np.load(p)["logvar"]) for p in sorted(out.glob("ep_*.npz"))}


def test_episodes_straddling_chunks_match_each_episode_encoded_alone(setup):
    root, data = setup
    # 7 frames per forward: each 30-frame episode spans 5-6 chunks, sharing its ends with
    # its neighbours, and the last chunk is partial (150 = 21 x 7 + 3).
    out = encode(cfg(root, data, "straddle", batch_size=7))
    vae = ConvVAE.from_pretrained(root / "vae").eval().requires_grad_(False)
    vae.uint8_input = True
    for name, (mu, logvar) in _latents(out).items():
        frames = np.load(data / name)["obs"]  # (T, 64, 64, 3) uint8
        obs = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, 3, 64, 64)
        ref_mu, ref_logvar = vae.encode_frames(frames)  # the whole episode at once
        # CPU kernels may round differently for another batch size: 1 float16 ulp at most.
        np.testing.assert_array_max_ulp(mu, ref_mu.half().numpy(), maxulp=1)
        np.testing.assert_array_max_ulp(logvar, ref_logvar.half().numpy(), maxulp=1)
        # And the float32 model's own encode(), to float16 precision.
        f32_mu, f32_logvar = vae.encode(obs.float() / 255)
        np.testing.assert_allclose(mu, f32_mu.numpy(), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(logvar, f32_logvar.numpy(), rtol=1e-3, atol=1e-4)


def test_prefetch_stays_a_bounded_number_of_items_ahead():
    started: list[int] = []

    def fn(i: int) -> int:
        started.append(i)
        return i

    with ThreadPoolExecutor(2) as pool:
        it = _prefetch(pool, fn, range(100), depth=3)
        for k, i in enumerate(it):
            assert i == k
            assert len(started) <= k + 1 + 3  # consumed, plus at most depth submitted ahead
            if k == 10:
                break
    assert len(started) <= 15


@pytest.fixture(scope="module")
def many(tmp_path_factory, setup):
    root, _ = setup
    data = fake_dataset(
        tmp_path_factory.mktemp("many") / "data", episodes=20, max_steps=8, lengths=None
    )
    return root, data


def test_a_killed_run_keeps_its_written_episodes_and_resumes_to_a_clean_runs_result(
    many, tmp_path, monkeypatch
):
    root, data = many
    clean = _latents(encode(cfg(root, data, "clean-many", batch_size=5)))
    names = sorted(clean)
    load, save, lock, log = store.load_npz, store.save_npz, threading.Lock(), []

    def dying_load(path, keys=None):
        with lock:
            log.append(("read", Path(path).name))
        if Path(path).name == names[15]:
            raise RuntimeError("killed")
        return load(path, keys)

    def logged_save(path, arrays, compresslevel=6):
        save(path, arrays, compresslevel)
        with lock:
            log.append(("written", Path(path).name))

    monkeypatch.setattr(store, "load_npz", dying_load)
    monkeypatch.setattr(store, "save_npz", logged_save)
    config = EncodeConfig(
        data_dir=data,
        vae=root / "vae",
        out_dir=tmp_path / "series",
        batch_size=5,
        io_threads=1,
        progress=False,
    )
    with pytest.raises(RuntimeError, match="killed"):
        encode(config)
    monkeypatch.setattr(store, "load_npz", load)
    # With one reader, reads run at most 2 episodes ahead and at most 8 writes wait, so the
    # first episode is on disk before the 16th is read: the kill lost only the last few.
    assert log.index(("written", names[0])) < log.index(("read", names[15]))
    # The error dropped the queued reads instead of running them all (at most 2 ahead).
    assert {name for kind, name in log if kind == "read"} <= set(names[:18])
    written = sorted(p.name for p in (tmp_path / "series").glob("ep_*.npz"))
    assert names[0] in written and set(written) <= set(names[:15])
    assert not list((tmp_path / "series").glob(".*tmp-*"))
    resumed = _latents(encode(config))
    assert sorted(resumed) == names
    for name in names:
        for a, b in zip(resumed[name], clean[name], strict=True):
            np.testing.assert_array_max_ulp(a, b, maxulp=1)


BAD_ARGUMENTS = [
    (["--batch-size", "-1"], "batch_size=-1"),
    (["--io-threads", "-1"], "io_threads=-1"),
    (["--data-dir", "{tmp}/nowhere"], "no such folder"),
    (["--data-dir", "{tmp}"], "no episode files"),
    (["--vae", "{tmp}/no-vae"], "no such folder"),
]
"""encode's flags that cannot work, and what its one-line error says."""


@pytest.mark.parametrize("flags, message", BAD_ARGUMENTS)
def test_bad_arguments_are_one_line_errors_before_anything_is_written(
    setup, tmp_path, capsys, flags, message
):
    root, data = setup
    out = tmp_path / "series"
    argv = ["encode", "--data-dir", str(data), "--vae", str(root / "vae"), "--out-dir", str(out)]
    argv += [f.format(tmp=tmp_path) for f in flags] + ["--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_open_loop_starts_from_the_reconstruction_and_is_seeded(setup):
    root, data = setup
    vae = ConvVAE.from_pretrained(root / "vae").eval()
    m = MDNRNN.from_pretrained(root / "m").eval()
    ep = np.load(data / "ep_000000.npz")
    a = open_loop(vae, m, ep["obs"][0], ep["action"][:10], tau=1.0, seed=3)
    b = open_loop(vae, m, ep["obs"][0], ep["action"][:10], tau=1.0, seed=3)
    c = open_loop(vae, m, ep["obs"][0], ep["action"][:10], tau=1.0, seed=4)
    assert a.shape == (10, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    x = torch.from_numpy(ep["obs"][:1]).permute(0, 3, 1, 2).float() / 255
    recon = (vae(x)[0].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(a[0].astype(int) - recon[0].astype(int)).max() <= 1


def test_dream_video_is_written(setup, tmp_path):
    import imageio.v3 as iio

    root, data = setup
    path = dream_video(
        DreamVideoConfig(
            vae=root / "vae",
            mdrnn=root / "m",
            episode=data / "ep_000001.npz",
            out=tmp_path / "d.gif",
            steps=12,
            scale=1,
        )
    )
    frames = iio.imread(path)
    assert frames.shape[0] == 12 and frames.shape[1:3] == (64, 64 * 2 + 4)


def test_dream_refuses_models_that_do_not_fit(setup, tmp_path):
    root, data = setup
    MDNRNN(latent_size=4, action_size=3, hidden_size=8).save_pretrained(tmp_path / "m4")
    with pytest.raises(ConfigError, match="z=8 but MDNRNN"):
        episode, out = data / "ep_000001.npz", tmp_path / "d.gif"
        dream_video(
            DreamVideoConfig(vae=root / "vae", mdrnn=tmp_path / "m4", episode=episode, out=out)
        )
