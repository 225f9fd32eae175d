"""FrameSource (V's batches) and the split it shares with the latent series."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from world_models.core.errors import DataError
from world_models.data import store
from world_models.data.sources import FrameSource, _epoch_order, _fits_on_gpu


def frames_dir(folder: Path, lengths=(9, 14, 5, 11, 7, 13, 8, 10)) -> list[np.ndarray]:
    """Episodes whose every frame is unique: frame value encodes (episode, step)."""
    obs_all = []
    for i, T in enumerate(lengths):
        obs = np.zeros((T, 64, 64, 3), np.uint8)
        obs[:, 0, 0, 0] = i
        obs[:, 0, 0, 1] = np.arange(T)
        obs[:, 1:, :, 2] = (i * 31 + np.arange(T)[:, None, None]) % 256
        store.write_episode(
            folder / store.episode_name(i),
            store.Episode(
                obs=obs,
                action=np.zeros((T, 3), np.float32),
                reward=np.zeros(T, np.float32),
                terminated=np.arange(T) == T - 1,
                truncated=np.zeros(T, bool),
            ),
        )
        obs_all.append(obs)
    return obs_all


def keys_of(batch: torch.Tensor) -> list[tuple[int, int]]:
    """(episode, step) of each frame of a (B, 3, 64, 64) batch."""
    return [(int(e), int(t)) for e, t in zip(batch[:, 0, 0, 0], batch[:, 1, 0, 0])]


@pytest.fixture
def data(tmp_path):
    return tmp_path, frames_dir(tmp_path)


def test_batches_shape_dtype_layout_and_full_coverage(data):
    folder, obs = data
    src = FrameSource(folder, split="all")
    assert src.num_frames == sum(map(len, obs)) == 77 and len(src.episodes) == 8
    batches = list(src.batches(16, drop_last=False, seed=3))
    b = batches[0]
    assert b.shape == (16, 3, 64, 64) and b.dtype == torch.uint8 and b.device.type == "cpu"
    assert b.is_contiguous(memory_format=torch.channels_last)
    seen = Counter(k for batch in batches for k in keys_of(batch))
    assert len(seen) == 77 and set(seen.values()) == {1}  # every frame exactly once
    e, t = keys_of(b)[0]
    np.testing.assert_array_equal(b[0].permute(1, 2, 0).numpy(), obs[e][t])  # exact pixels
    assert len(list(src.batches(16))) == src.num_batches(16) == 4  # drop_last drops 13
    assert src.num_batches(16, drop_last=False) == 5


def test_order_is_fixed_by_seed(data):
    src = FrameSource(data[0], split="all")
    order = [keys_of(b) for b in src.batches(8, seed=1)]
    assert order == [keys_of(b) for b in src.batches(8, seed=1)]
    assert order != [keys_of(b) for b in src.batches(8, seed=2)]
    plain = [k for b in src.batches(8, shuffle=False) for k in keys_of(b)]
    assert plain == sorted(plain)
    resumed = [keys_of(b) for b in src.batches(8, seed=1, start=3)]  # a mid-epoch resume
    assert resumed == order[3:]


def test_sharding_gives_equal_disjoint_shares():
    for n, bs, ws, drop in [(77, 8, 2, True), (77, 8, 3, False), (10, 4, 4, False)]:
        shares = [_epoch_order(n, bs, True, 5, drop, r, ws) for r in range(ws)]
        assert len({len(s) for s in shares}) == 1  # same number of items, so of batches
        flat = np.concatenate(shares)
        if drop:
            assert len(set(flat)) == len(flat) and len(flat) == n // (bs * ws) * bs * ws
        else:
            assert set(flat) == set(range(n))  # everything, padded by wrapping around
    with pytest.raises(DataError, match="fewer than one batch"):
        _epoch_order(5, 8, True, 0, True, 0, 1)


def test_frame_source_sharded_batches(data):
    src = FrameSource(data[0], split="all")
    per_rank = [
        [k for b in src.batches(8, seed=4, rank=r, world_size=2) for k in keys_of(b)]
        for r in range(2)
    ]
    assert len(per_rank[0]) == len(per_rank[1]) == 32  # 77 // (8 * 2) * 8
    assert not set(per_rank[0]) & set(per_rank[1])


def test_split_cache_and_growth(data):
    folder, _ = data
    train = FrameSource(folder, "train", holdout_fraction=0.3)
    hold = FrameSource(folder, "holdout", holdout_fraction=0.3)
    assert sorted(train.episodes + hold.episodes) == [p.name for p in store.list_episodes(folder)]
    assert train.episodes == sorted(train.episodes) and hold.episodes
    assert hold.episodes == [n for n in hold.episodes if store.is_holdout(n, 0.3)]
    caches = sorted((folder / ".cache").glob("frames-train-*.npy"))
    assert len(caches) == 1
    stamp = caches[0].stat().st_mtime_ns
    FrameSource(folder, "train", holdout_fraction=0.3)  # reuses the cache
    assert caches[0].stat().st_mtime_ns == stamp
    frames_dir(folder, lengths=(9, 14, 5, 11, 7, 13, 8, 10, 6, 6, 6, 6))  # the dataset grows
    grown = FrameSource(folder, "train", holdout_fraction=0.3)
    assert set(train.episodes) <= set(grown.episodes)  # old episodes keep their side
    assert not caches[0].exists()  # the stale cache is replaced
    assert len(list((folder / ".cache").glob("frames-train-*.npy"))) == 1
    with pytest.raises(DataError, match="'holdout' split is empty"):
        FrameSource(folder, "holdout", holdout_fraction=0.0)


def test_max_frames_sample_and_errors(data, tmp_path_factory):
    folder, obs = data
    small = FrameSource(folder, "all", max_frames=20)
    assert small.num_frames == 20 and small.episodes == ["ep_000000.npz", "ep_000001.npz"]
    keys = {k for b in small.batches(4, shuffle=False) for k in keys_of(b)}
    assert keys == {(0, t) for t in range(9)} | {(1, t) for t in range(11)}
    s1, s2 = small.sample(6, seed=1), small.sample(6, seed=1)
    assert s1.shape == (6, 3, 64, 64) and s1.dtype == torch.uint8 and torch.equal(s1, s2)
    assert small.sample(50).shape[0] == 50  # more than it has: drawn with replacement
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(DataError, match="no episode files"):
        FrameSource(empty)
    bad = tmp_path_factory.mktemp("bad")
    np.savez(bad / "ep_000000.npz", obs=np.zeros((3, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"ep_000000.npz: obs must be uint8 \(T, 64, 64, 3\)"):
        FrameSource(bad, "all")
    frames_dir(bad, lengths=(1, 4, 6))
    np.savez(bad / "ep_000000.npz", obs=np.zeros((3, 32, 32, 3), np.uint8))  # wrong size
    (bad / "ep_000002.npz").write_bytes((bad / "ep_000002.npz").read_bytes()[:-40])  # torn
    with pytest.warns(UserWarning) as warned:
        ok = FrameSource(bad, "all", skip_bad=True)
    assert ok.episodes == ["ep_000001.npz"] and ok.num_frames == 4
    text = " ".join(str(w.message) for w in warned)
    assert "ep_000000.npz" in text and "ep_000002.npz" in text


@pytest.mark.gpu
@pytest.mark.parametrize("resident", [True, False])
def test_frame_source_on_cuda_resident_and_pinned(data, resident):
    """All GPU batches are gathered before any is read back: a .cpu() per step would sync and
    hide a pinned buffer refilled while its copy is in flight. The last GPU, so that with
    two or more the source's device is not the current one."""
    folder, _ = data
    device = f"cuda:{torch.cuda.device_count() - 1}"
    gpu = FrameSource(folder, "all", device=device, resident=resident)
    assert (gpu._gpu is not None) == resident
    cpu = FrameSource(folder, "all")
    for epoch in range(3):
        on_gpu = list(gpu.batches(4, seed=epoch, drop_last=False))  # 20 batches, 2 buffers
        assert all(x.device == torch.device(device) for x in on_gpu)
        assert on_gpu[0].is_contiguous(memory_format=torch.channels_last)
        want = list(cpu.batches(4, seed=epoch, drop_last=False))
        assert all(torch.equal(x.cpu(), y) for x, y in zip(on_gpu, want, strict=True))
    assert torch.equal(gpu.sample(6, seed=1).cpu(), cpu.sample(6, seed=1))
    idx = np.arange(40)[1::3]  # a strided shard, as the trainer's resume path gathers
    got = [gpu._gather(idx[s : s + 4]) for s in range(0, len(idx), 4)]
    want = [cpu._gather(idx[s : s + 4]) for s in range(0, len(idx), 4)]
    assert all(torch.equal(x.cpu(), y) for x, y in zip(got, want, strict=True))
    resumed = list(gpu.batches(4, seed=5, start=2, rank=1, world_size=2))
    want = list(cpu.batches(4, seed=5, start=2, rank=1, world_size=2))
    assert all(torch.equal(x.cpu(), y) for x, y in zip(resumed, want, strict=True))


@pytest.mark.gpu
def test_frame_source_cuda_auto_residency(data, monkeypatch):
    folder, _ = data
    assert FrameSource(folder, "all", device="cuda")._gpu is not None  # 77 frames fit
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (0, 1))  # "does not fit"
    assert FrameSource(folder, "all", device="cuda")._gpu is None
    with pytest.raises(DataError, match="GiB free; pass resident=None or False"):
        FrameSource(folder, "all", device="cuda", resident=True)


def test_residency_rule_and_other_devices(data):
    assert _fits_on_gpu(39, free=100, total=100) and not _fits_on_gpu(41, free=100, total=100)
    assert not _fits_on_gpu(30, free=50, total=100)  # 60% of the free memory at most
    with pytest.raises(ValueError, match="resident=True needs a CUDA device"):
        FrameSource(data[0], "all", resident=True)
    # any other accelerator (mps, xpu) gets a plain .to(device); "meta" stands in for one
    meta = FrameSource(data[0], "all", device="meta")
    b = next(meta.batches(8))
    assert b.device.type == "meta" and b.shape == (8, 3, 64, 64)
    assert meta.sample(3).device.type == "meta"


def test_existing_cache_is_used_without_reading_episodes(data, monkeypatch):
    folder, _ = data
    (folder / "ep_000003.npz").write_bytes(b"PK\x03\x04 torn")
    with pytest.warns(UserWarning, match="ep_000003.npz"):
        first = FrameSource(folder, "all", skip_bad=True)

    def no_reading(*args, **kwargs):
        raise AssertionError("an episode was read although its cache exists")

    monkeypatch.setattr(store, "load_npz", no_reading)
    monkeypatch.setattr(store, "npz_header", no_reading)
    with pytest.warns(UserWarning, match="ep_000003.npz"):  # still said at each start
        again = FrameSource(folder, "all", skip_bad=True)
    assert again.episodes == first.episodes and "ep_000003.npz" not in again.episodes
    assert torch.equal(next(again.batches(8, seed=1)), next(first.batches(8, seed=1)))
    with pytest.raises(DataError, match="ep_000003.npz"):  # as building it would have
        FrameSource(folder, "all")


def test_cache_needs_free_space(data, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1000))
    with pytest.raises(DataError, match=r"\.cache/frames-all-\w+\.npy: .* needs 0\.00 GiB"):
        FrameSource(data[0], "all")
    assert not list((data[0] / ".cache").glob("frames-*"))


def test_other_local_ranks_wait_for_rank_0(data, monkeypatch):
    import threading

    from world_models.data import sources

    folder, _ = data
    FrameSource(folder, "all")
    aside = folder / "aside"
    (folder / ".cache").rename(aside)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(sources, "CACHE_WAIT_S", 0.3)
    with pytest.raises(DataError, match=r"frames-all-\w+\.npy: local rank 1 waited"):
        FrameSource(folder, "all")
    assert not (folder / ".cache").exists()  # rank 1 built nothing

    def rank_0_finishes():  # the .json first, then the .npy, as _build_cache writes them
        (folder / ".cache").mkdir()
        for p in sorted(aside.iterdir(), key=lambda p: p.suffix != ".json"):
            p.rename(folder / ".cache" / p.name)

    monkeypatch.setattr(sources, "CACHE_WAIT_S", 30.0)
    threading.Timer(0.3, rank_0_finishes).start()
    assert FrameSource(folder, "all").num_frames == 77


# ---------------------------------------------------------------------------- sequences


def series_dir(folder: Path, lengths=(5, 12, 20), Z=4) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for i, T in enumerate(lengths):
        rng = np.random.default_rng(i)
        arrays = dict(
            mu=rng.normal(size=(T, Z)).astype(np.float16),
            logvar=rng.normal(size=(T, Z)).astype(np.float16),
            action=rng.uniform(size=(T, 3)).astype(np.float32),
            reward=np.arange(1, T + 1, dtype=np.float32) + 100 * i,
            terminated=np.arange(T) == T - 1,
            truncated=np.zeros(T, bool),
        )
        name = store.episode_name(i)
        store.save_npz(folder / name, arrays)
        out[name] = arrays
    return out


def test_series_loader_splits_like_the_frame_store():
    """Frames and their latent series must fall on the same side of the split."""
    series = pytest.importorskip("world_models.data.series")
    names = [store.episode_name(i) for i in range(500)]
    for f in (0.1, 0.5):
        assert [series.is_held_out(n, f) for n in names] == [store.is_holdout(n, f) for n in names]


def test_cache_build_keeps_live_writers_temp_files(data):
    """DDP ranks build the same cache at once: one must not delete another's temp file."""
    import os
    import subprocess
    import sys

    folder, _ = data
    cache = folder / ".cache"
    cache.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    live_tmp = cache / f".frames-all-x.npy.tmp-{os.getpid()}-abcd1234"
    dead_tmp = cache / f".frames-all-y.npy.tmp-{dead}-abcd1234"
    live_tmp.write_bytes(b"being written")
    dead_tmp.write_bytes(b"left by a killed run")
    FrameSource(folder, "all")
    assert live_tmp.exists() and not dead_tmp.exists()


def test_waiting_ranks_stop_when_rank_0_fails_to_build(data, monkeypatch):
    from world_models.data import sources

    folder, _ = data
    cache_dir = folder / ".cache"
    monkeypatch.setattr(sources, "CACHE_WAIT_S", 30.0)
    monkeypatch.setenv("LOCAL_RANK", "0")

    def broken_build(self, cache, *args):
        cache.parent.mkdir(exist_ok=True)
        raise DataError("disk full")

    with monkeypatch.context() as m:
        m.setattr(FrameSource, "_build_cache", broken_build)
        with pytest.raises(DataError, match="disk full"):
            FrameSource(folder, "train")
    assert list(cache_dir.glob(".*.failed"))  # rank 0 left word for the others
    monkeypatch.setenv("LOCAL_RANK", "1")
    t0 = time.monotonic()
    with pytest.raises(DataError, match="local rank 0 failed.*disk full"):
        FrameSource(folder, "train")
    assert time.monotonic() - t0 < 5  # not CACHE_WAIT_S
    monkeypatch.setenv("LOCAL_RANK", "0")  # a healthy re-run clears the word and builds
    assert FrameSource(folder, "train").num_frames > 0
    assert not list(cache_dir.glob(".*.failed"))
