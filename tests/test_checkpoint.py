"""The checkpoint folder: exact round trips, clear errors, atomic replacement."""

from __future__ import annotations

import json

import pytest
import torch

from world_models import __version__
from world_models.core.checkpoint import read_optimizer_state, save_checkpoint
from world_models.core.errors import CheckpointError
from world_models.models.vae import ConvVAE


def trained_vae() -> ConvVAE:
    vae = ConvVAE(latent_size=16, kl_tolerance=0.5, uint8_input=True)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    x = torch.rand(8, 3, 64, 64)
    total, _, _ = vae.compute_loss(x, *vae(x))
    total.backward()
    opt.step()  # weights and BatchNorm running stats now differ from a fresh model
    return vae


def test_round_trip_is_exact(tmp_path):
    vae = trained_vae()
    path = vae.save_pretrained(tmp_path / "vae", step=123)
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "meta.json",
        "model.safetensors",
    ]
    loaded = ConvVAE.from_pretrained(path)
    assert loaded.config == vae.config
    a, b = vae.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    meta = json.loads((path / "meta.json").read_text())
    assert meta["step"] == 123 and meta["library_version"] == __version__
    assert meta["class"] == "ConvVAE" and "created_utc" in meta


def test_optimizer_state_round_trip(tmp_path):
    vae = ConvVAE()
    opt = torch.optim.Adam(vae.parameters())
    x = torch.rand(2, 3, 64, 64)
    vae.compute_loss(x, *vae(x))[0].backward()
    opt.step()
    vae.save_pretrained(tmp_path / "c", optimizer_state=opt.state_dict())
    state = read_optimizer_state(tmp_path / "c")
    opt2 = torch.optim.Adam(vae.parameters())
    opt2.load_state_dict(state)
    assert torch.equal(
        opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )


def test_config_weights_mismatch_names_both(tmp_path):
    path = ConvVAE(latent_size=32).save_pretrained(tmp_path / "vae")
    cfg = json.loads((path / "config.json").read_text())
    cfg["config"]["latent_size"] = 64
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config.json and model.safetensors.*fc_mu"):
        ConvVAE.from_pretrained(path)


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda p: (p / "model.safetensors").write_bytes(b"\x00" * 10), "corrupt model"),
        (
            lambda p: (p / "model.safetensors").write_bytes(
                (p / "model.safetensors").read_bytes()[:5000]
            ),
            "corrupt model",
        ),
        (lambda p: (p / "config.json").write_text("{not json"), "unreadable config.json"),
        (lambda p: (p / "config.json").unlink(), "missing config.json"),
        (
            lambda p: (p / "config.json").write_text(
                json.dumps({"class": "ConvVAE", "config": {"latent_size": 32, "bogus": 1}})
            ),
            "unknown field",
        ),
        (
            lambda p: (p / "config.json").write_text(json.dumps({"class": "MDNRNN", "config": {}})),
            "holds a MDNRNN, not a ConvVAE",
        ),
    ],
)
def test_damaged_checkpoints_give_clear_errors(tmp_path, damage, match):
    path = ConvVAE().save_pretrained(tmp_path / "vae")
    damage(path)
    with pytest.raises(CheckpointError, match=match):
        ConvVAE.from_pretrained(path)


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        ConvVAE.from_pretrained(tmp_path / "nope")


def test_saving_over_a_checkpoint_replaces_it_whole(tmp_path):
    path = tmp_path / "vae"
    ConvVAE(latent_size=8).save_pretrained(path, step=1)
    ConvVAE(latent_size=16).save_pretrained(path, step=2)
    loaded = ConvVAE.from_pretrained(path)
    assert loaded.latent_size == 16 and loaded.checkpoint_meta["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["vae"]  # no temp or old folders left


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "vae"
    ConvVAE(latent_size=8).save_pretrained(path, step=1)
    with pytest.raises(TypeError):
        # Fails half-way: inside the temp folder, after the weights are converted.
        save_checkpoint(
            path, kind="ConvVAE", config={"x": object()}, state_dict={"w": torch.zeros(2)}
        )
    assert ConvVAE.from_pretrained(path).latent_size == 8
    assert [p.name for p in tmp_path.iterdir()] == ["vae"]


def test_loading_never_unpickles(tmp_path):
    """A pickle planted as optimizer.pt is refused by weights_only loading."""
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code ran')",))

    path = ConvVAE().save_pretrained(tmp_path / "vae")
    (path / "optimizer.pt").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="corrupt optimizer.pt"):
        read_optimizer_state(path)
