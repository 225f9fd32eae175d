"""Resume is exact (issue 20, point 11): V, M and C killed at several points and re-run
with the same command end with the weights (and optimizer or CMA-ES state, and metrics)
of an uninterrupted run of the same seed.

A kill is simulated in the process, deterministically: the trainer dies (an exception no
handler catches) just before its k-th checkpoint, so the folder holds exactly what a
SIGKILL at that moment leaves (checkpoints are written atomically; what ran after the last
one is lost and done again). tests/test_train_vae.py kills a real process with SIGKILL.
Bit-exact on the CPU; on a GPU, cuDNN's kernels (benchmark mode) are not deterministic
even for one uninterrupted run, so there only the resume bookkeeping is the same.
"""

from __future__ import annotations

import dataclasses
import json

import helpers
import numpy as np
import pytest
import torch
from helpers import dream_controller_config, fake_dataset

from world_models.core.checkpoint import read_checkpoint, read_optimizer_state
from world_models.core.config import override

pytestmark = pytest.mark.usefixtures("one_thread")
TIMING = {"img_per_s", "seconds", "seq_steps_per_s", "episodes_per_s"}


class Killed(BaseException):
    """Stands for SIGKILL: nothing catches it, nothing after it is written."""


def run_killed(train, config, kills: list[int], patch) -> None:
    """Run ``train(config)``, dying before the k-th checkpoint of each invocation for each
    k in ``kills`` (``patch(hook)`` routes every checkpoint through ``hook``), then once
    more to the end."""
    for k in kills:
        count = [0]

        def hook(k=k, count=count):
            count[0] += 1
            if count[0] == k:
                raise Killed

        patch(hook)
        with pytest.raises(Killed):
            train(config)
    patch(lambda: None)
    train(config)


def same_checkpoint(a, b) -> None:
    ca, cb = read_checkpoint(a), read_checkpoint(b)
    assert ca.meta["step"] == cb.meta["step"]
    assert ca.tensors.keys() == cb.tensors.keys()
    for k in ca.tensors:
        assert torch.equal(ca.tensors[k], cb.tensors[k]), k
    oa, ob = read_optimizer_state(a), read_optimizer_state(b)
    assert (oa is None) == (ob is None)
    if oa is not None:
        for i, moments in oa["state"].items():
            for name, value in moments.items():
                assert torch.equal(value, ob["state"][i][name]), (i, name)


def rows(run) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


# ---------------------------------------------------------------------------- V


def _vae_config(tmp_path, **changes):
    """The debug train-vae preset, tiny (z = 4, batches of 8), on a fake-env dataset."""
    from world_models.training.configs import TRAIN_VAE_PRESETS

    data = fake_dataset(tmp_path / "data")
    return override(
        TRAIN_VAE_PRESETS["debug"],
        data_dir=data,
        latent_size=4,
        holdout_fraction=0.3,
        batch_size=8,
        **changes,
    )


# 5 steps an epoch, a checkpoint after each and one at the epoch's end: [6] dies after the
# epoch's held-out row was logged, before its checkpoint (the row must not come twice)
@pytest.mark.parametrize("kills", [[1], [3, 5], [2, 2, 2], [6]])
def test_train_vae_killed_and_rerun_ends_as_an_uninterrupted_run(tmp_path, monkeypatch, kills):
    from world_models.training import vae as trainer

    # a checkpoint every step: a kill point every step
    config = _vae_config(tmp_path, epochs=3, log_every=1, checkpoint_every_s=0.0)
    once = trainer.train_vae(dataclasses.replace(config, run_dir=tmp_path / "once"))
    real_save = trainer.VAETrainer.save_state

    def patch(hook):
        def save(self, where):
            if where == self.run.last:
                hook()
            real_save(self, where)

        monkeypatch.setattr(trainer.VAETrainer, "save_state", save)

    killed = dataclasses.replace(config, run_dir=tmp_path / "killed")
    run_killed(trainer.train_vae, killed, kills, patch)
    same_checkpoint(once / "checkpoints/last", killed.run_dir / "checkpoints/last")
    same_checkpoint(once / "checkpoints/best", killed.run_dir / "checkpoints/best")
    assert rows(killed.run_dir) == rows(once)


def test_without_the_saved_rng_state_v_would_not_resume_exactly(tmp_path, monkeypatch):
    """The property above rests on the RNG state in optimizer.pt (z's noise): dropped, the
    resumed run draws other noise and ends elsewhere (so the test above can fail)."""
    from world_models.training import runs
    from world_models.training import vae as trainer

    config = _vae_config(tmp_path, epochs=2, run_dir=tmp_path / "once")
    once = trainer.train_vae(config)
    split = dataclasses.replace(config, run_dir=tmp_path / "split", epochs=1)
    trainer.train_vae(split)
    monkeypatch.setattr(trainer, "set_rng_state", lambda state, device: None)
    assert runs.RNG_KEY in read_optimizer_state(split.run_dir / "checkpoints/last")
    trainer.train_vae(dataclasses.replace(split, epochs=2))
    a = read_checkpoint(once / "checkpoints/last").tensors
    b = read_checkpoint(split.run_dir / "checkpoints/last").tensors
    assert not all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------- M


def write_series(folder, episodes: int = 8, length: int = 60):
    """Random series, random rewards."""
    return helpers.write_series(folder, episodes, length, logvar=-3.0, random_reward=True)


@pytest.mark.parametrize(
    "kills, carry_state", [([2], False), ([4, 2], False), ([3, 3], True), ([6], True)]
)
def test_train_mdrnn_killed_and_rerun_ends_as_an_uninterrupted_run(
    tmp_path, monkeypatch, kills, carry_state
):
    from world_models.models.mdrnn import MDNRNN
    from world_models.training.configs import TRAIN_MDNRNN_PRESETS
    from world_models.training.mdrnn import train_mdrnn

    config = override(
        TRAIN_MDNRNN_PRESETS["debug"],
        series_dir=write_series(tmp_path / "series"),
        hidden_size=8,
        dropout=0.25,  # draws from torch's global RNG: restored from the checkpoint
        carry_state=carry_state,
        batch_size=3 if carry_state else 8,
        epochs=2,
        save_every=1,
        holdout_fraction=0.25,
        progress=False,
        tensorboard=False,
    )
    once = train_mdrnn(dataclasses.replace(config, run_dir=tmp_path / "once"))
    real_save = MDNRNN.save_pretrained

    def patch(hook):
        def save(self, path, **kwargs):
            if path.name == "last":
                hook()
            return real_save(self, path, **kwargs)

        monkeypatch.setattr(MDNRNN, "save_pretrained", save)

    killed = dataclasses.replace(config, run_dir=tmp_path / "killed")
    run_killed(train_mdrnn, killed, kills, patch)
    same_checkpoint(once / "checkpoints/last", killed.run_dir / "checkpoints/last")
    assert rows(killed.run_dir) == rows(once)


# ---------------------------------------------------------------------------- C


def _controller_config(tmp_path, **changes):
    """A tiny dream run (in tmp_path/run) of a fresh M's dream (seed 0), on a series."""
    from world_models.models.mdrnn import MDNRNN

    torch.manual_seed(0)
    MDNRNN(latent_size=4, action_size=1, hidden_size=8, num_gaussians=2).save_pretrained(
        tmp_path / "m"
    )
    series = write_series(tmp_path / "series", episodes=4, length=20)
    return dream_controller_config(tmp_path / "m", series, tmp_path / "run", **changes)


@pytest.mark.parametrize("kills", [[2], [1, 3], [4]])
def test_train_controller_killed_and_rerun_ends_as_an_uninterrupted_run(
    tmp_path, monkeypatch, kills
):
    from world_models.training import controller as trainer

    config = _controller_config(tmp_path, generations=4, rollouts=2, eval_every=2)
    once = trainer.train_controller(dataclasses.replace(config, run_dir=tmp_path / "once"))
    real_save = trainer.write_cma_state

    def patch(hook):
        def save(*args, **kwargs):
            hook()
            real_save(*args, **kwargs)

        monkeypatch.setattr(trainer, "write_cma_state", save)

    killed = dataclasses.replace(config, run_dir=tmp_path / "killed")
    run_killed(trainer.train_controller, killed, kills, patch)
    for name in ("last", "best", "best_candidate"):
        same_checkpoint(once / "checkpoints" / name, killed.run_dir / "checkpoints" / name)
    a, _ = trainer.read_cma_state(once / trainer.STATE_FILE)
    b, _ = trainer.read_cma_state(killed.run_dir / trainer.STATE_FILE)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert rows(killed.run_dir) == rows(once)


def test_train_controller_killed_between_its_state_and_last_repairs_last(tmp_path, monkeypatch):
    """The CMA-ES state is saved before checkpoints/last: a kill in between, at the last
    generation, left a finished run whose `last` was a generation behind."""
    from world_models.training import controller as trainer

    config = _controller_config(tmp_path, generations=2)
    real_last = trainer._save_last

    def last(controller, es, run, state, cfg):
        if state["generation"] == 2:
            raise Killed
        real_last(controller, es, run, state, cfg)

    monkeypatch.setattr(trainer, "_save_last", last)
    with pytest.raises(Killed):
        trainer.train_controller(config)
    assert read_checkpoint(tmp_path / "run/checkpoints/last").meta["generation"] == 1
    monkeypatch.setattr(trainer, "_save_last", real_last)
    trainer.train_controller(config)  # finished: says so, and repairs `last`
    assert read_checkpoint(tmp_path / "run/checkpoints/last").meta["generation"] == 2
    assert [r["step"] for r in rows(tmp_path / "run")] == [1, 2]
