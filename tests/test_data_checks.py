"""``data info`` checks every episode's frames and says when a collection is incomplete;
the frame cache notices an episode rewritten at the same size."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from world_models.cli import main
from world_models.data import store
from world_models.data.sources import FrameSource


def episode(T: int = 6, size: int = 64, seed: int = 0) -> store.Episode:
    rng = np.random.default_rng(seed)
    return store.Episode(
        obs=rng.integers(0, 256, (T, size, size, 3), dtype=np.uint8),
        action=rng.uniform(-1, 1, (T, 3)).astype(np.float32),
        reward=rng.normal(size=T).astype(np.float32),
        terminated=np.arange(T) == T - 1,
        truncated=np.zeros(T, bool),
    )


def dataset(folder, sizes, manifest: dict | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        store.write_episode(folder / store.episode_name(i), episode(size=size, seed=i))
    if manifest is not None:
        store.write_manifest(folder, manifest)
    return folder


@pytest.mark.parametrize("verify", [True, False])
def test_data_info_refuses_an_episode_of_another_frame_size_than_the_manifest(
    tmp_path, capsys, verify
):
    data = dataset(tmp_path / "d", [64, 32, 64], {"preprocess": {"size": 64}, "complete": True})
    argv = ["data", "info", str(data)] + ([] if verify else ["--no-verify"])
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "BAD          ep_000001.npz: frames are 32x32x3 but the manifest's are 64x64x3" in out
    assert "episodes     2 (+1 bad)" in out


def test_without_a_manifest_the_episodes_must_agree(tmp_path, capsys):
    data = dataset(tmp_path / "d", [64, 64, 32, 64])
    assert main(["data", "info", str(data), "--no-verify"]) == 1
    out = capsys.readouterr().out
    assert "BAD          ep_000002.npz: frames are 32x32x3 but most episodes' are 64x64x3" in out
    assert main(["data", "info", str(dataset(tmp_path / "ok", [64, 64]))]) == 0
    assert "frame        64x64x3 uint8" in capsys.readouterr().out


def test_a_32px_dataset_is_fine_when_its_manifest_says_32(tmp_path, capsys):
    data = dataset(tmp_path / "d", [32, 32], {"preprocess": {"size": 32}, "complete": True})
    assert main(["data", "info", str(data)]) == 0
    assert "BAD" not in capsys.readouterr().out


def test_data_info_says_when_a_collection_did_not_finish(tmp_path, capsys):
    data = dataset(tmp_path / "d", [64], {"preprocess": {"size": 64}, "complete": False})
    main(["data", "info", str(data)])
    assert "INCOMPLETE" in capsys.readouterr().out
    manifest = json.loads((data / store.MANIFEST).read_text())
    store.write_manifest(data, {**manifest, "complete": True})
    main(["data", "info", str(data)])
    assert "INCOMPLETE" not in capsys.readouterr().out


def _write_uncompressed(path, ep: store.Episode) -> None:
    """An episode whose file size depends only on its shapes (stored, not deflated),
    rewritten as collect does: a temp file renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-x")
    with open(tmp, "wb") as fh:
        np.savez(fh, **ep.arrays())
    os.replace(tmp, path)


def test_the_frame_cache_notices_an_episode_rewritten_at_the_same_size(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    for i in range(3):
        _write_uncompressed(folder / store.episode_name(i), episode(seed=i))
    first = FrameSource(folder, "all")
    before = np.asarray(first._frames).copy()
    path = folder / store.episode_name(1)
    size = path.stat().st_size
    new = episode(seed=99)
    _write_uncompressed(path, new)
    assert path.stat().st_size == size
    again = FrameSource(folder, "all")
    frames = np.asarray(again._frames)
    assert not np.array_equal(frames, before)
    np.testing.assert_array_equal(frames[6:12], new.obs)  # episode 1's frames, fresh
    assert len(list((folder / ".cache").glob("frames-all-*.npy"))) == 1  # the stale one went
    same = FrameSource(folder, "all")  # nothing changed: the cache is reused
    assert same.episodes == again.episodes
