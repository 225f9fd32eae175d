"""Cached latent series, all in memory, cut into windows with tensor indexing.

A series folder holds one ``.npz`` per episode (written by ``encode``) with::

    mu, logvar   (T, Z) float16   the VAE posterior of every frame
    action       (T, A) float32   the action taken at that frame
    reward       (T,)   float32   the reward received after that action
    terminated   (T,)   bool      the episode ended (died) after that action
    truncated    (T,)   bool      the episode was cut by a time limit after that action

Transition t is (z_t, a_t) -> (z_{t+1}, reward_t, terminated_t). The last step of an
episode has no z_{t+1} on file, but its reward and termination still train the heads, so
it is kept with ``next_mask`` false. Only ``terminated`` is a "done" target: a truncation
is not a death.

The whole set (small: 10,000 CarRacing episodes at z=32 are ~1.3 GB in float16) is
concatenated into flat tensors once; a batch of windows is one gather, with no per-sample
Python and no worker processes. The train / held-out split is decided per file by a hash
of its *name*, so it never changes between runs and adding episodes does not move old ones.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from world_models.core.errors import ConfigError, DataError
from world_models.data import store
from world_models.data.encode import SERIES_MANIFEST
from world_models.data.store import is_holdout

SERIES_KEYS = ("mu", "logvar", "action", "reward", "terminated", "truncated")


def is_held_out(name: str, fraction: float) -> bool:
    """True if episode file ``name`` is held out; the one split rule, shared with the frames."""
    return is_holdout(name, fraction)


def split_files(
    folder: str | os.PathLike, holdout_fraction: float
) -> tuple[list[Path], list[Path]]:
    """The ``.npz`` files of ``folder``, sorted by name, as ``(train, held_out)``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"series folder {folder} does not exist")
    if not 0.0 <= holdout_fraction < 1.0:
        raise DataError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    files = sorted(p for p in folder.glob("*.npz") if not p.name.startswith("."))
    if not files:
        raise DataError(f"series folder {folder} holds no .npz files (run `encode` first)")
    held = [p for p in files if is_held_out(p.name, holdout_fraction)]
    train = [p for p in files if not is_held_out(p.name, holdout_fraction)]
    return train, held


def _read_episode(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in SERIES_KEYS if k not in data.files]
            if missing:
                raise DataError(f"{path}: missing key(s) {missing} (expected {list(SERIES_KEYS)})")
            ep = {k: data[k] for k in SERIES_KEYS}
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip / pickle / IO errors all mean a bad file
        raise DataError(f"{path}: unreadable series file ({type(exc).__name__}: {exc})") from None
    t = ep["mu"].shape[0] if ep["mu"].ndim == 2 else -1
    if t < 1 or ep["logvar"].shape != ep["mu"].shape:
        raise DataError(
            f"{path}: expected mu and logvar of one shape (T, Z) with T >= 1, got "
            f"{ep['mu'].shape} and {ep['logvar'].shape}"
        )
    if ep["action"].ndim == 1:  # a scalar action per step (Doom) is (T, 1)
        ep["action"] = ep["action"][:, None]
    if ep["action"].ndim != 2 or ep["action"].shape[0] != t:
        raise DataError(f"{path}: expected action of shape ({t}, A), got {ep['action'].shape}")
    for k in ("reward", "terminated", "truncated"):
        if ep[k].shape != (t,):
            raise DataError(f"{path}: expected {k} of shape ({t},), got {ep[k].shape}")
    for k in ("mu", "logvar", "action", "reward"):
        # One NaN here would silently turn every loss into NaN much later.
        if not np.issubdtype(ep[k].dtype, np.number) or not np.isfinite(ep[k]).all():
            raise DataError(f"{path}: {k} holds non-numeric, NaN or Inf values")
    return ep


@dataclass
class SeriesBatch:
    """A batch of B windows of L transitions (frames are L + 1: inputs and targets).

    ``mu``, ``logvar`` (B, L+1, Z) float16; ``action`` (B, L, A); ``reward`` (B, L);
    ``done`` (B, L) float 0/1; ``mask`` (B, L) bool, false on padding past an episode's
    end; ``next_mask`` (B, L) bool, also false where z_{t+1} is not on file;
    ``first`` (B,) bool, true where the window starts its episode (reset carried state).
    """

    mu: torch.Tensor
    logvar: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    done: torch.Tensor
    mask: torch.Tensor
    next_mask: torch.Tensor
    first: torch.Tensor

    def to(self, device: torch.device | str) -> SeriesBatch:
        return SeriesBatch(**{k: v.to(device, non_blocking=True) for k, v in vars(self).items()})

    def latents(self, sample: bool = True, generator: torch.Generator | None = None):
        """z (B, L+1, Z) float32: ``mu + exp(logvar / 2) * eps`` if ``sample``, else ``mu``."""
        mu = self.mu.float()
        if not sample:
            return mu
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        return mu + torch.exp(0.5 * self.logvar.float()) * eps


class SeriesSet:
    """Episodes of latent series concatenated into flat in-memory tensors.

    Attributes: ``files`` (names), ``starts`` / ``lengths`` (E,) int64 per episode, and the
    flat ``mu``, ``logvar`` (N, Z) float16, ``action`` (N, A), ``reward`` (N,), ``done`` (N,).
    """

    def __init__(self, episodes: list[dict[str, np.ndarray]], names: list[str]) -> None:
        if not episodes:
            raise DataError("no episodes to build a series set from")
        z, a = episodes[0]["mu"].shape[1], episodes[0]["action"].shape[1]
        for ep, name in zip(episodes, names):
            if ep["mu"].shape[1] != z or ep["action"].shape[1] != a:
                raise DataError(
                    f"{name}: latent/action sizes ({ep['mu'].shape[1]}, {ep['action'].shape[1]})"
                    f" differ from the first episode's ({z}, {a})"
                )
        self.files = list(names)
        self.lengths = torch.tensor([ep["mu"].shape[0] for ep in episodes], dtype=torch.long)
        self.starts = torch.cumsum(self.lengths, 0) - self.lengths  # (E,)

        def cat(key: str, dtype: torch.dtype) -> torch.Tensor:
            return torch.from_numpy(np.concatenate([ep[key] for ep in episodes])).to(dtype)

        self.mu = cat("mu", torch.float16)  # (N, Z)
        self.logvar = cat("logvar", torch.float16)  # (N, Z)
        self.action = cat("action", torch.float32)  # (N, A)
        self.reward = cat("reward", torch.float32)  # (N,)
        self.done = cat("terminated", torch.bool)  # (N,)
        self.latent_size, self.action_size = int(z), int(a)

    @classmethod
    def load(cls, files: list[Path]) -> SeriesSet:
        return cls([_read_episode(Path(f)) for f in files], [Path(f).name for f in files])

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    @property
    def num_episodes(self) -> int:
        return len(self.files)

    def to(self, device: torch.device | str) -> SeriesSet:
        """Move the flat tensors (e.g. to the GPU, so windows never cross the bus)."""
        # lengths / starts stay on the CPU: window starts are drawn there (no device sync).
        for k in ("mu", "logvar", "action", "reward", "done"):
            setattr(self, k, getattr(self, k).to(device))
        return self

    # ------------------------------------------------------------------ windows
    def gather(
        self,
        start: torch.Tensor,
        end: torch.Tensor,
        seq_len: int,
        active: torch.Tensor | None = None,
    ) -> SeriesBatch:
        """Windows beginning at flat index ``start`` (B,) inside episodes ending at ``end`` (B,).

        Frames past ``end`` repeat the episode's last frame (finite, masked out; done 0).
        ``active`` (B,) false makes a whole window padding (TBPTT lanes that ran dry).
        Indices may be on the CPU; the batch comes out on the data's device.
        """
        start, end = start.cpu(), end.cpu()
        first = torch.isin(start, self.starts)  # (B,)
        on = torch.ones_like(first) if active is None else active.cpu().bool()
        device = self.mu.device
        # one pinned, asynchronous copy: a pageable one would stall the stream every batch
        index = torch.stack([start, end, first.long(), on.long()])  # (4, B)
        if device.type == "cuda":
            index = index.pin_memory()
        start, end, first, on = index.to(device, non_blocking=True).unbind(0)  # (B,) each
        first, on = first.bool(), on.bool()
        j = torch.arange(seq_len + 1, device=device)  # (L+1,)
        flat = start[:, None] + j  # (B, L+1)
        idx = torch.minimum(flat, end[:, None] - 1)  # (B, L+1) stays inside the episode
        step_idx = idx[:, :-1]  # (B, L)
        mask = flat[:, :-1] < end[:, None]  # (B, L)
        next_mask = flat[:, 1:] < end[:, None]  # (B, L)
        if active is not None:
            mask = mask & on[:, None]
            next_mask = next_mask & on[:, None]
        return SeriesBatch(
            mu=self.mu[idx],
            logvar=self.logvar[idx],
            action=self.action[step_idx],
            reward=self.reward[step_idx],
            done=(self.done[step_idx] & mask).float(),
            mask=mask,
            next_mask=next_mask,
            first=first,
        )

    def sample(self, batch: int, seq_len: int, generator: torch.Generator | None = None):
        """B windows drawn uniformly over all start positions that keep a window inside its
        episode (an episode shorter than ``seq_len`` gives one padded window)."""
        counts = (self.lengths - seq_len).clamp(min=0) + 1  # (E,) valid starts per episode
        cum = torch.cumsum(counts, 0)  # (E,)
        u = torch.randint(int(cum[-1]), (batch,), generator=generator)  # (B,)
        ep = torch.searchsorted(cum, u, right=True)  # (B,)
        offset = u - (cum[ep] - counts[ep])  # (B,)
        start = self.starts[ep] + offset
        return self.gather(start, self.starts[ep] + self.lengths[ep], seq_len)

    def num_windows(self, seq_len: int) -> int:
        """Distinct windows of ``seq_len`` transitions (start positions :meth:`sample` draws
        from; an episode shorter than ``seq_len`` gives one)."""
        return int(((self.lengths - seq_len).clamp(min=0) + 1).sum())

    def batches_per_epoch(self, batch: int, seq_len: int) -> int:
        """Batches of random windows that hold as many transitions as the set: an epoch."""
        return max(1, -(-self.num_steps // (batch * seq_len)))

    def lane_plan(
        self, batch: int, seq_len: int, generator: torch.Generator | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(start, end, active)`` (B,) per round of :meth:`lanes`, without gathering."""
        order = (
            torch.randperm(self.num_episodes, generator=generator)
            if generator is not None
            else torch.arange(self.num_episodes)
        )
        tiles: list[list[tuple[int, int]]] = [[] for _ in range(batch)]
        heap = [(0, b) for b in range(batch)]  # (tiles so far, lane): balance the lanes
        for e in order.tolist():
            _, lane = heapq.heappop(heap)
            s, n = int(self.starts[e]), int(self.lengths[e])
            tiles[lane].extend((s + o, s + n) for o in range(0, n, seq_len))
            heapq.heappush(heap, (len(tiles[lane]), lane))
        plan = []
        for i in range(max(len(t) for t in tiles)):
            rows = [t[i] if i < len(t) else (0, 1) for t in tiles]  # (0, 1): dummy padding
            start = torch.tensor([r[0] for r in rows])
            end = torch.tensor([r[1] for r in rows])
            plan.append((start, end, torch.tensor([i < len(t) for t in tiles])))
        return plan

    def lanes(
        self, batch: int, seq_len: int, generator: torch.Generator | None = None
    ) -> Iterator[SeriesBatch]:
        """Every step exactly once, as consecutive windows in ``batch`` lanes.

        Each episode is cut into tiles of ``seq_len`` (the last one padded) and given whole to
        one lane, so lane b's window i+1 continues its window i: an LSTM state carried
        across windows is truncated BPTT, reset where ``first`` is true. Episodes are
        shuffled with ``generator`` (in file order without one); lanes that run dry pad.
        """
        for start, end, active in self.lane_plan(batch, seq_len, generator):
            yield self.gather(start, end, seq_len, active)


def _series_manifest(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / SERIES_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        raise DataError(f"{path} is not a readable series manifest") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path} is not a readable series manifest")
    return manifest


def series_vae_digest(folder: str | os.PathLike) -> str | None:
    """SHA-256 of the VAE weights that made a series folder (``encode``'s series.json), or
    None for a folder without one (e.g. series written by other code)."""

    return (_series_manifest(folder) or {}).get("vae_sha256")


def series_env(folder: str | os.PathLike) -> str | None:
    """The env preset whose episodes a series folder encodes: ``encode``'s series.json
    records it; for one written before it did, the manifest of the dataset it names. None
    when neither says (series written by other code, a dataset without a manifest)."""

    manifest = _series_manifest(folder) or {}
    env = manifest.get("env")
    if env is None and isinstance(manifest.get("data_dir"), str):
        try:
            env = (store.read_manifest(manifest["data_dir"]) or {}).get("env")
        except DataError:  # a moved or damaged dataset: the env is not known
            env = None
    return env if isinstance(env, str) else None


def load_series(
    folder: str | os.PathLike, holdout_fraction: float = 0.1
) -> tuple[SeriesSet, SeriesSet | None]:
    """Load a series folder as ``(train, held_out)``; ``held_out`` is None when empty."""
    train_files, held_files = split_files(folder, holdout_fraction)
    if not train_files:
        raise DataError(
            f"series folder {folder}: all {len(held_files)} episodes fell in the held-out split; "
            f"lower holdout_fraction ({holdout_fraction})"
        )
    train = SeriesSet.load(train_files)
    held = SeriesSet.load(held_files) if held_files else None
    if held is not None and (held.latent_size, held.action_size) != (
        train.latent_size,
        train.action_size,
    ):
        raise DataError(f"series folder {folder}: episodes disagree on latent/action sizes")
    return train, held


def load_initial_states(
    series_dir=None,
    data_dir=None,
    vae=None,
    max_episodes: int = 10_000,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar), each (E, Z) float32, of the first frame of up to ``max_episodes`` episodes.

    From a series folder (``encode``'s output: ``mu``/``logvar`` per episode) when
    ``series_dir`` is given (or an ``initial_z.safetensors`` file of a shipped model, see
    :mod:`world_models.shipped`), else by encoding the first frame of each episode of a
    dataset folder (``collect``'s output) with ``vae``.
    """

    if series_dir is not None and Path(series_dir).suffix == ".safetensors":
        try:
            init = load_file(str(series_dir))
            mu, logvar = init["mu"].float(), init["logvar"].float()
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise DataError(f"{series_dir}: unreadable initial states ({exc})") from None
        return mu[:max_episodes].to(device), logvar[:max_episodes].to(device)
    if series_dir is not None:
        files = sorted(p for p in Path(series_dir).glob("*.npz") if not p.name.startswith("."))
        if not files:
            raise DataError(f"series folder {series_dir} holds no .npz files (run `encode`)")
        mus, logvars = [], []
        for f in files[:max_episodes]:
            arrays = store.load_npz(f, ["mu", "logvar"])
            mus.append(arrays["mu"][0])
            logvars.append(arrays["logvar"][0])
        mu = torch.as_tensor(np.stack(mus), dtype=torch.float32)
        return mu.to(device), torch.as_tensor(np.stack(logvars), dtype=torch.float32).to(device)
    if data_dir is None:
        raise ConfigError("initial dream states need a series folder or a dataset folder")
    if vae is None:
        raise ConfigError("encoding first frames of a dataset needs the VAE checkpoint")
    files = store.list_episodes(data_dir)[:max_episodes]
    if not files:
        raise DataError(f"dataset folder {data_dir} holds no episodes")
    frames = np.stack([store.load_npz(f, ["obs"])["obs"][0] for f in files])  # (E, 64, 64, 3)
    vae = vae.to(device).eval()
    chunks = np.array_split(frames, -(-len(frames) // 256))  # bounded memory per forward
    mus, logvars = zip(*(vae.encode_frames(chunk) for chunk in chunks))
    return torch.cat(mus), torch.cat(logvars)
