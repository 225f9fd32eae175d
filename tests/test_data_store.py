"""The episode store: reproducible atomic files, validation, info, the split."""

from __future__ import annotations

import numpy as np
import pytest

from world_models.cli import main
from world_models.core.errors import DataError
from world_models.data import store


def make_episode(T: int = 7, seed: int = 0) -> store.Episode:
    rng = np.random.default_rng(seed)
    return store.Episode(
        obs=rng.integers(0, 256, (T, 64, 64, 3), dtype=np.uint8),
        action=rng.uniform(-1, 1, (T, 3)).astype(np.float32),
        reward=rng.normal(size=T).astype(np.float32),
        terminated=np.arange(T) == T - 1,
        truncated=np.zeros(T, bool),
    )


def write_dir(folder, n: int = 3) -> list:
    paths = []
    for i in range(n):
        p = folder / store.episode_name(i)
        store.write_episode(p, make_episode(5 + i, seed=i))
        paths.append(p)
    return paths


def test_roundtrip_is_lossless_and_bytes_are_reproducible(tmp_path):
    ep = make_episode()
    store.write_episode(tmp_path / "a.npz", ep)
    store.write_episode(tmp_path / "b.npz", ep)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    back = store.read_episode(tmp_path / "a.npz")
    for k, v in ep.arrays().items():
        np.testing.assert_array_equal(getattr(back, k), v)
        assert getattr(back, k).dtype == v.dtype
    assert np.load(tmp_path / "a.npz")["obs"].shape == (7, 64, 64, 3)  # a plain npz
    assert store.npz_header(tmp_path / "a.npz", "obs") == ((7, 64, 64, 3), np.dtype(np.uint8))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("truncated"), r"missing key\(s\) \['truncated'\]"),
        (lambda a: a.update(obs=a["obs"].astype(np.float32)), "obs must be uint8"),
        (lambda a: a.update(obs=a["obs"][:, :32]), "obs must be uint8"),
        (lambda a: a.update(action=a["action"].astype(np.float64)), "action must be float32"),
        (lambda a: a.update(reward=a["reward"][:-1]), r"reward must be float32 \(7,\)"),
        (lambda a: a.update(terminated=a["terminated"].astype(np.int8)), "terminated must be"),
    ],
)
def test_bad_keys_shapes_dtypes_are_named(tmp_path, change, message):
    arrays = make_episode().arrays()
    change(arrays)
    path = tmp_path / "ep_000004.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as err:
        store.read_episode(path)
    assert "ep_000004.npz" in str(err.value) and "\n" not in str(err.value)


def test_truncated_and_corrupt_files_are_named(tmp_path):
    path = tmp_path / "ep_000000.npz"
    store.write_episode(path, make_episode())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a torn write
    with pytest.raises(DataError, match=r"ep_000000.npz: unreadable or truncated"):
        store.read_episode(path)
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # a flipped byte inside the compressed frames
    path.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="ep_000000.npz"):
        store.read_episode(path)


def test_list_episodes_ignores_temp_and_other_files(tmp_path):
    write_dir(tmp_path, 2)
    (tmp_path / ".ep_000002.npz.tmp-123-abcdef12").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in store.list_episodes(tmp_path)] == ["ep_000000.npz", "ep_000001.npz"]
    with pytest.raises(DataError, match="no such folder"):
        store.list_episodes(tmp_path / "missing")


def test_data_info_counts_verifies_and_names_bad_files(tmp_path, capsys):
    write_dir(tmp_path, 3)
    info = store.dataset_info(tmp_path)
    assert (info.episodes, info.frames, info.bad) == (3, 5 + 6 + 7, [])
    assert info.bytes_on_disk == sum(p.stat().st_size for p in tmp_path.glob("ep_*"))
    expected = [make_episode(5 + i, seed=i).total_reward for i in range(3)]
    np.testing.assert_allclose(info.returns, expected, rtol=1e-6)
    assert main(["data", "info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "episodes     3" in out and "frames       18" in out and "return" in out
    bad = tmp_path / "ep_000001.npz"
    bad.write_bytes(bad.read_bytes()[:100])
    assert main(["data", "info", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "BAD          ep_000001.npz" in out and "episodes     2 (+1 bad)" in out
    assert main(["data", "info", str(tmp_path / "nope")]) == 2  # one-line error


def test_split_is_stable_as_the_dataset_grows():
    small = [store.episode_name(i) for i in range(200)]
    big = [store.episode_name(i) for i in range(5000)]
    held_small = {n for n in small if store.is_holdout(n, 0.1)}
    held_big = {n for n in big if store.is_holdout(n, 0.1)}
    assert held_small == held_big & set(small)  # old episodes never change sides
    assert 0.085 < len(held_big) / len(big) < 0.115
    assert store.is_holdout("/some/dir/ep_000003.npz", 0.5) == store.is_holdout(
        "ep_000003.npz", 0.5
    )  # depends on the file name only
    from pathlib import Path

    paths = [Path(n) for n in big]
    train = store.split_episodes(paths, "train", 0.1)
    hold = store.split_episodes(paths, "holdout", 0.1)
    assert sorted(train + hold) == sorted(paths) and not set(train) & set(hold)
    assert store.split_episodes(paths, "all", 0.1) == paths
    assert store.split_episodes(paths, "holdout", 0.0) == []
    with pytest.raises(DataError, match="unknown split"):
        store.split_episodes(paths, "test", 0.1)


def test_check_episode_reads_headers_only(tmp_path):
    path = tmp_path / "ep_000000.npz"
    store.write_episode(path, make_episode(T=9))
    assert store.check_episode(path) == 9
    arrays = make_episode(T=9).arrays()
    arrays["reward"] = arrays["reward"][:5]
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"ep_000000.npz: reward must be float32 \(9,\)"):
        store.check_episode(path)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="ep_000000.npz: unreadable or truncated"):
        store.check_episode(path)


@pytest.mark.parametrize("key, value", [("reward", np.nan), ("action", np.inf)])
def test_nan_and_inf_are_refused_naming_file_and_key(tmp_path, key, value):
    arrays = make_episode().arrays()
    arrays[key][3] = value
    path = tmp_path / "ep_000000.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=rf"ep_000000.npz: {key} has NaN or Inf .* step 3\)"):
        store.read_episode(path)
    with pytest.raises(DataError, match=f"{key} has NaN"):
        store.write_episode(tmp_path / "ep_000001.npz", store.Episode(**arrays))
    assert store.check_episode(path) == 7  # headers only: values are checked on decoding


def test_data_info_names_non_zip_and_empty_files_once(tmp_path, capsys):
    write_dir(tmp_path, 1)
    np.save(tmp_path / "x.npy", np.zeros(3))
    (tmp_path / "x.npy").rename(tmp_path / "ep_000001.npz")  # an .npy, not a zip
    (tmp_path / "ep_000002.npz").write_bytes(b"")
    for verify in ([], ["--no-verify"]):
        assert main(["data", "info", str(tmp_path), *verify]) == 1
        bad = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("BAD")]
        assert bad == [
            "BAD          ep_000001.npz: not an npz (zip) file",
            "BAD          ep_000002.npz: empty file",
        ]


def test_data_info_says_returns_were_read_only_when_verified(tmp_path, capsys):
    write_dir(tmp_path, 2)
    assert main(["data", "info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "return       mean" in out and "not read" not in out
    assert main(["data", "info", str(tmp_path), "--no-verify"]) == 0
    assert "return       (not read" in capsys.readouterr().out
