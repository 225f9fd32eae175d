"""Damage that used to pass silently (issue 20, point 7): a V checkpoint with 4 KiB of
0xFF inside its weights, NaN latents out of encode, a CRC-corrupt episode kept by a
re-run of collect."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from helpers import fake_dataset

from world_models.cli import main
from world_models.core.checkpoint import DIGEST_KEY
from world_models.core.errors import CheckpointError, DataError
from world_models.data import store
from world_models.data.collect import CollectConfig, collect
from world_models.data.encode import EncodeConfig, encode
from world_models.models.vae import ConvVAE

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def data(tmp_path):
    return fake_dataset(tmp_path / "data", episodes=3, max_steps=20, lengths=None)


def spoil_weights(checkpoint):
    """4 KiB of 0xFF in the middle of model.safetensors: the header stays valid, the
    float32 weights there become NaN."""
    path = checkpoint / "model.safetensors"
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("digest", [True, False])
def test_encode_refuses_a_vae_with_damaged_weights(tmp_path, data, capsys, digest):
    vae = tmp_path / "vae"
    ConvVAE(latent_size=4).save_pretrained(vae)
    spoil_weights(vae)
    if not digest:  # a checkpoint saved before meta.json recorded the weights' SHA-256
        meta = json.loads((vae / "meta.json").read_text())
        del meta[DIGEST_KEY]
        (vae / "meta.json").write_text(json.dumps(meta))
    argv = ["encode", "--data-dir", str(data), "--vae", str(vae)]
    assert main([*argv, "--out-dir", str(tmp_path / "series"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    want = "corrupt model.safetensors (its SHA-256" if digest else "holds NaN or Inf weights"
    assert want in err and str(vae) in err
    assert not list((tmp_path / "series").glob("ep_*.npz"))


def test_every_damaged_byte_is_found_not_only_nan(tmp_path):
    vae = ConvVAE(latent_size=4).save_pretrained(tmp_path / "vae")
    path = vae / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit: a finite, wrong weight
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt model.safetensors"):
        ConvVAE.from_pretrained(vae)


def test_encode_refuses_nan_latents_and_writes_no_series_with_them(tmp_path, data, monkeypatch):
    ConvVAE(latent_size=4).save_pretrained(tmp_path / "vae")
    real = ConvVAE.encode_frames

    def nan_frames(self, frames, amp=False):
        mu, logvar = real(self, frames, amp)
        return mu * float("nan"), logvar

    monkeypatch.setattr(ConvVAE, "encode_frames", nan_frames)
    config = EncodeConfig(
        data_dir=data, vae=tmp_path / "vae", out_dir=tmp_path / "series", progress=False
    )
    with pytest.raises(DataError, match=r"ep_000000.npz: V .* encodes frame 0 of 20 .*NaN or Inf"):
        encode(config)
    assert not list((tmp_path / "series").glob("ep_*.npz"))


def test_float16_overflow_in_encode_is_refused(tmp_path, data, monkeypatch):
    ConvVAE(latent_size=4).save_pretrained(tmp_path / "vae")

    def huge(self, frames, amp=False):
        n = frames.shape[0]
        return torch.full((n, 4), 1e5), torch.zeros(n, 4)  # finite float32, inf as float16

    monkeypatch.setattr(ConvVAE, "encode_frames", huge)
    with pytest.raises(DataError, match="NaN or Inf latents"):
        encode(EncodeConfig(data, tmp_path / "vae", tmp_path / "series", progress=False))


def spoil_frames(path):
    """Flip bytes in the middle of the compressed frames: the zip directory and the npy
    headers still read, so only inflating (the CRC) finds it."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("obs.npy")
    raw = bytearray(path.read_bytes())
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(fh.read(4), "<u2")
    start = info.header_offset + 30 + int(name_len) + int(extra_len)
    at = start + info.compress_size // 2
    raw[at : at + 16] = bytes(b ^ 0x5A for b in raw[at : at + 16])
    path.write_bytes(bytes(raw))


def test_a_collect_rerun_verifies_what_it_keeps(tmp_path, data):
    config = CollectConfig(
        out_dir=data, env="fake", episodes=3, max_steps=20, workers=1, progress=False
    )
    bad = data / "ep_000001.npz"
    clean = bad.read_bytes()
    spoil_frames(bad)
    assert store.check_episode(bad) == 20  # the headers alone pass it
    with pytest.raises(DataError, match="corrupt"):
        store.verify_episode(bad)
    collect(CollectConfig(**{**vars(config), "verify": False}))  # headers only: kept
    assert bad.read_bytes() != clean
    with pytest.warns(UserWarning, match="re-collecting a bad episode: .*ep_000001.npz: corrupt"):
        collect(config)
    assert bad.read_bytes() == clean  # collected again, the same bytes (seeded)
    assert store.read_manifest(data)["frames"] == 60
