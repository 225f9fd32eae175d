"""`encode` (frames -> cached latent series) and `dream` (open-loop video)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from world_models.data.collect import CollectConfig, collect
from world_models.data.encode import EncodeConfig, encode
from world_models.errors import ConfigError, DataError
from world_models.evaluation.open_loop import DreamVideoConfig, dream_video, open_loop
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    data = collect(
        CollectConfig(
            out_dir=root / "data", env="fake", episodes=5, max_steps=30, workers=1, progress=False
        )
    )
    torch.manual_seed(0)
    vae = ConvVAE(latent_size=8)
    vae.eval()
    vae.save_pretrained(root / "vae")
    action_size = np.load(data / "ep_000000.npz")["action"].shape[1]
    MDNRNN(latent_size=8, action_size=action_size, hidden_size=16).save_pretrained(root / "m")
    return root, data


def cfg(root: Path, data: Path, out: str = "series", **kw) -> EncodeConfig:
    return EncodeConfig(
        data_dir=data, vae=root / "vae", out_dir=root / out, batch_size=40, progress=False, **kw
    )


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
        dream_video(
            DreamVideoConfig(
                vae=root / "vae",
                mdrnn=tmp_path / "m4",
                episode=data / "ep_000001.npz",
                out=tmp_path / "d.gif",
            )
        )
