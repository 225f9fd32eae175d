"""The episode store: one compressed ``.npz`` per episode plus ``manifest.json``.

An episode file ``ep_000123.npz`` (named by its index) holds, for T steps:

==============  ===============  ==========================================================
key             dtype, shape     meaning
==============  ===============  ==========================================================
``obs``         uint8 (T,S,S,3)  the preprocessed frame (S = 64) the action was taken on
``action``      float32 (T, A)   the action taken on ``obs[t]``; discrete actions (Doom) are
                                 stored one-hot, so every store has float32 (T, A)
``reward``      float32 (T,)     the reward received for that action
``terminated``  bool (T,)        the env ended the episode after this step (death, goal)
``truncated``   bool (T,)        a time limit ended it after this step (Gymnasium >= 1.0)
==============  ===============  ==========================================================

The frame observed after the last step is not stored (nothing was done on it). Files are
written atomically (temp file + rename) with fixed zip timestamps, so the same episode
always gives the same bytes. The train / held-out split is a function of the file name
alone (:func:`is_holdout`), so it does not change as a dataset grows, and any per-episode
folder (frames, latent series) that keeps the names splits the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from world_models import __version__
from world_models.core.atomic import TMP_MARK, atomic_open, atomic_write_json
from world_models.core.errors import DataError

FORMAT = "world_models.episodes/1"
MANIFEST = "manifest.json"
EPISODE_KEYS = ("obs", "action", "reward", "terminated", "truncated")
_NAME = re.compile(r"^ep_(\d{6,})\.npz$")
Split = Literal["train", "holdout", "all"]


def episode_name(index: int) -> str:
    return f"ep_{index:06d}.npz"


def episode_index(name: str) -> int | None:
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


@dataclass
class Episode:
    """One episode's arrays; see the module docstring for dtypes and shapes."""

    obs: np.ndarray  # (T, 64, 64, 3) uint8
    action: np.ndarray  # (T, A) float32
    reward: np.ndarray  # (T,) float32
    terminated: np.ndarray  # (T,) bool
    truncated: np.ndarray  # (T,) bool

    def __len__(self) -> int:
        return len(self.obs)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in EPISODE_KEYS}

    @property
    def total_reward(self) -> float:
        return float(self.reward.astype(np.float64).sum())


# ---------------------------------------------------------------------------- npz files


def save_npz(path: str | Path, arrays: dict[str, np.ndarray], compresslevel: int = 6) -> None:
    """Write ``arrays`` as a compressed ``.npz`` atomically, with reproducible bytes.

    ``np.savez_compressed`` stamps each member with the current time; we write the same
    layout (``<key>.npy`` members, deflated) with a fixed timestamp instead.
    """
    with (
        atomic_open(path, "wb") as fh,
        zipfile.ZipFile(
            fh, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel
        ) as zf,
    ):
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            # a ZipInfo made here keeps its own level (None: zlib's 6), not the ZipFile's;
            # Python 3.13 renamed the attribute
            level = "compress_level" if hasattr(info, "compress_level") else "_compresslevel"
            setattr(info, level, compresslevel)
            with zf.open(info, "w", force_zip64=True) as member:
                _use_isal(member, compresslevel)
                np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)


def _use_isal(member: Any, level: int) -> None:
    """Deflate a zip member with ISA-L (python-isal) at levels 1-3: the same deflate format,
    any reader's, ~5x faster than zlib's level 1 for ~4% more bytes on Doom frames, where
    zlib took a sixth of a collection's time. zipfile has no public hook for its compressor,
    so the member's own is swapped before the first byte; without isal (or a zipfile that
    names it otherwise) zlib does it."""
    if not 1 <= level <= 3 or not hasattr(member, "_compressor"):
        return
    try:
        from isal import isal_zlib
    except ImportError:
        return
    member._compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)


def _check_zip(path: Path) -> None:
    """Name what a file that is not a whole zip is: ``np.load`` would call a non-zip file
    "pickled (object) data" and an empty one an EOFError."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    if size == 0:
        raise DataError(f"{path}: empty file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            if fh.read(2) == b"PK":  # starts as a zip, no directory at the end: torn
                raise DataError(f"{path}: unreadable or truncated (no zip directory)")
        raise DataError(f"{path}: not an npz (zip) file")


def load_npz(path: str | Path, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Read ``keys`` (default: all) of an ``.npz``; any failure is a one-line DataError."""
    path = Path(path)
    try:
        _check_zip(path)
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            wanted = names if keys is None else list(keys)
            missing = [k for k in wanted if k not in names]
            if missing:
                raise DataError(f"{path}: missing key(s) {missing} (has {sorted(names)})")
            return {k: z[k] for k in wanted}
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - zip, zlib, npy header errors all mean "corrupt"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(f"{path}: unreadable or truncated ({type(exc).__name__}: {msg})") from None


def npz_keys(path: str | Path) -> list[str]:
    """The array names of an ``.npz`` (reads only the zip directory)."""
    _check_zip(Path(path))
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: unreadable or truncated ({type(exc).__name__}: {exc})") from None


def npz_header(path: str | Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one member, reading only its npy header (cheap: no full inflate)."""
    path = Path(path)
    _check_zip(path)
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(fh)
            return tuple(shape), np.dtype(dtype)
    except KeyError:
        raise DataError(f"{path}: missing key {key!r}") from None
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: unreadable or truncated ({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------------------- episodes


def validate_episode(arrays: dict[str, np.ndarray], source: str | Path) -> int:
    """Check keys, dtypes and shapes of an episode, and that action and reward are finite
    (given arrays, not headers); return T or raise a one-line DataError."""
    missing = [k for k in EPISODE_KEYS if k not in arrays]
    if missing:
        raise DataError(f"{source}: missing key(s) {missing}")
    obs, action = arrays["obs"], arrays["action"]
    if obs.dtype != np.uint8 or obs.ndim != 4 or obs.shape[3] != 3 or obs.shape[1] != obs.shape[2]:
        raise DataError(f"{source}: obs must be uint8 (T, S, S, 3), got {obs.dtype} {obs.shape}")
    T = obs.shape[0]
    if T == 0:
        raise DataError(f"{source}: empty episode (T = 0)")
    if action.dtype != np.float32 or action.ndim != 2 or action.shape[0] != T:
        raise DataError(
            f"{source}: action must be float32 ({T}, A), got {action.dtype} {action.shape}"
        )
    for key, dtype in (("reward", np.float32), ("terminated", np.bool_), ("truncated", np.bool_)):
        a = arrays[key]
        if a.dtype != dtype or a.shape != (T,):
            raise DataError(
                f"{source}: {key} must be {np.dtype(dtype)} ({T},), got {a.dtype} {a.shape}"
            )
    for key in ("action", "reward"):  # values, when given arrays (not headers)
        a = arrays[key]
        if isinstance(a, np.ndarray) and not np.isfinite(a).all():
            t = int(np.flatnonzero(~np.isfinite(a.reshape(T, -1)).all(1))[0])
            raise DataError(f"{source}: {key} has NaN or Inf values (first at step {t})")
    return T


@dataclass(frozen=True)
class _Spec:
    """Shape and dtype of a stored array, read from its header without decoding it."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)


def check_episode(path: str | Path) -> int:
    """Cheap check of an episode file (the zip directory and the npy headers, no decoding):
    keys, dtypes, shapes. Catches torn and mis-shaped files; bit rot inside the compressed
    data needs :func:`read_episode` (CRC checked on decoding), as ``data info`` does."""
    keys = set(npz_keys(path))
    specs = {k: _Spec(*npz_header(path, k)) for k in EPISODE_KEYS if k in keys}
    return validate_episode(specs, path)  # type: ignore[arg-type]


def verify_episode(path: str | Path) -> int:
    """:func:`check_episode`, and every member inflated and checked against its CRC-32
    (damage inside the compressed data, which the headers do not show); streamed, so no
    array is built. Return T or raise a one-line DataError."""
    T = check_episode(path)
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                with zf.open(info) as member:
                    while member.read(1 << 20):  # the CRC is checked at the member's end
                        pass
    except Exception as exc:  # noqa: BLE001 - bad CRC, zlib, truncation: all "corrupt"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(f"{path}: corrupt ({type(exc).__name__}: {msg})") from None
    return T


def write_episode(path: str | Path, episode: Episode, compresslevel: int = 1) -> None:
    """Write one episode file; deflate level 1 is ~4x faster than 6 for ~10% more bytes
    (at 6, deflate took 40% of a Doom collection's time)."""
    arrays = episode.arrays()
    validate_episode(arrays, path)
    save_npz(path, arrays, compresslevel=compresslevel)


def read_episode(path: str | Path) -> Episode:
    arrays = load_npz(path, EPISODE_KEYS)
    validate_episode(arrays, path)
    return Episode(**arrays)


def list_episodes(data_dir: str | Path) -> list[Path]:
    """Episode files ``ep_*.npz`` of a folder, sorted by name; temp files are ignored."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such folder")
    return sorted(p for p in data_dir.iterdir() if _NAME.match(p.name) and TMP_MARK not in p.name)


# ---------------------------------------------------------------------------- split


def is_holdout(name: str, holdout_fraction: float) -> bool:
    """Whether episode file ``name`` is held out: sha1(name) as a fraction in [0, 1) < f.

    Depends on the name only, so the split is stable as a dataset grows or is re-collected,
    and the same for an episode's frames and its latent series.
    """
    h = int.from_bytes(hashlib.sha1(Path(name).name.encode()).digest()[:8], "big")
    return h / 2**64 < holdout_fraction


def split_episodes(
    paths: Sequence[Path], split: Split, holdout_fraction: float = 0.1
) -> list[Path]:
    """The episodes of ``split`` ("train", "holdout" or "all"); used by every source."""
    if split == "all":
        return list(paths)
    if split not in ("train", "holdout"):
        raise DataError(f"unknown split {split!r}; use 'train', 'holdout' or 'all'")
    want = split == "holdout"
    return [p for p in paths if is_holdout(p.name, holdout_fraction) == want]


# ---------------------------------------------------------------------------- manifest


def read_manifest(data_dir: str | Path) -> dict[str, Any] | None:
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc})") from None


def write_manifest(data_dir: str | Path, manifest: dict[str, Any]) -> None:

    atomic_write_json(
        Path(data_dir) / MANIFEST, {"format": FORMAT, "library_version": __version__, **manifest}
    )


# ---------------------------------------------------------------------------- verify / info


@dataclass
class DatasetInfo:
    """What ``world-models data info`` reports."""

    data_dir: Path
    episodes: int = 0
    frames: int = 0
    bytes_on_disk: int = 0
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    manifest: dict[str, Any] | None = None
    verified: bool = True  # False: headers only, so ``returns`` were not read
    frame_shape: tuple[int, ...] | None = None  # (S, S, 3) every good episode's frames have
    incomplete: bool = False  # the manifest says a collection did not finish


def _manifest_frame_shape(manifest: dict[str, Any] | None) -> tuple[int, ...] | None:
    size = ((manifest or {}).get("preprocess") or {}).get("size")
    return (size, size, 3) if isinstance(size, int) and size > 0 else None


def dataset_info(data_dir: str | Path, verify: bool = True) -> DatasetInfo:
    """Decode and check every episode (``verify``; else check headers only), collecting
    counts and return statistics. Every episode's frames must have the shape and dtype the
    manifest records (``preprocess.size``, uint8 RGB) or, without a manifest, the shape
    most episodes have; the others are listed in ``bad``, as unreadable files are."""
    data_dir = Path(data_dir)
    info = DatasetInfo(data_dir=data_dir, manifest=read_manifest(data_dir), verified=verify)
    info.incomplete = (info.manifest or {}).get("complete") is False
    good: list[tuple[Path, int, float, tuple[int, ...]]] = []
    for path in list_episodes(data_dir):
        info.bytes_on_disk += path.stat().st_size
        try:
            if verify:
                ep = read_episode(path)
                T, ret, frame = len(ep), ep.total_reward, tuple(ep.obs.shape[1:])
            else:
                T, ret = check_episode(path), float("nan")
                frame = tuple(npz_header(path, "obs")[0][1:])
        except DataError as exc:  # the reason without the path: the line names the file
            info.bad.append((path.name, str(exc).removeprefix(f"{path}: ")))
            continue
        good.append((path, T, ret, frame))
    expected = _manifest_frame_shape(info.manifest)
    source = "the manifest's"
    if expected is None and good:  # no manifest: the episodes must agree with each other
        shapes = [g[3] for g in good]
        expected = max(dict.fromkeys(shapes), key=shapes.count)  # the most common, first seen
        source = "most episodes'"
    info.frame_shape = expected
    for path, T, ret, frame in good:
        if frame != expected:
            info.bad.append(
                (
                    path.name,
                    f"frames are {'x'.join(map(str, frame))} but {source} are "
                    f"{'x'.join(map(str, expected))} (uint8)",
                )
            )
            continue
        info.episodes += 1
        info.frames += T
        info.lengths.append(T)
        info.returns.append(ret)
    info.bad.sort()
    return info


def format_info(info: DatasetInfo) -> str:
    def mb(n: int) -> str:
        return f"{n / 2**20:.1f} MiB"

    lines = [f"dataset      {info.data_dir}"]
    if info.manifest:
        m = info.manifest
        pre = m.get("preprocess", {})
        lines.append(
            f"env          {m.get('env')} ({m.get('env_id')}), policy "
            f"{(m.get('policy') or {}).get('name')}, seed {m.get('seed')}, "
            f"frames {pre.get('size')}px crop {pre.get('crop')} {pre.get('resample')}"
        )
    lines.append(f"episodes     {info.episodes}" + (f" (+{len(info.bad)} bad)" if info.bad else ""))
    if info.frame_shape is not None:
        lines.append(f"frame        {'x'.join(map(str, info.frame_shape))} uint8")
    if info.incomplete:
        lines.append(
            f"INCOMPLETE   the collection did not finish ({MANIFEST} says complete: false); "
            f"re-run the same collect command to complete it"
        )
    lines.append(f"frames       {info.frames}")
    size = info.bytes_on_disk
    per = f", {size / max(info.frames, 1) / 1024:.2f} KiB/frame" if info.frames else ""
    lines.append(f"size on disk {mb(size)}{per}")
    if info.lengths:
        L = np.asarray(info.lengths)
        lines.append(f"length       mean {L.mean():.1f}, min {L.min()}, max {L.max()}")
    if info.lengths and not info.verified:
        lines.append("return       (not read: run `world-models data info DIR` to verify)")
    elif info.lengths:
        R = np.asarray(info.returns)
        lines.append(
            f"return       mean {R.mean():.2f} +- {R.std():.2f}, "
            f"min {R.min():.2f}, max {R.max():.2f}"
        )
    for name, reason in info.bad:
        lines.append(f"BAD          {name}: {reason}")
    return "\n".join(lines)


def describe(data_dir: str | Path) -> str:
    """What a dataset folder holds, from its headers (``data info`` without verifying)."""
    return format_info(dataset_info(data_dir, verify=False))


def info_command(config) -> int:
    """``data info``: print the dataset's summary; exit status 1 when an episode is bad."""
    info = dataset_info(config.data_dir, verify=config.verify)
    print(format_info(info))
    return 1 if info.bad else 0
