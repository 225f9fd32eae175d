"""Import rollouts saved by the public implementations into our episode store.

Recognised ``.npz`` layouts (found recursively under SRC, taken in sorted path order):

* hardmaru/WorldModelsExperiments: ``obs`` (T, 64, 64, 3) uint8, ``action`` (T, A), and
  optionally ``reward`` (T,) and ``done`` (T,);
* ctallec/world-models: ``observations`` (T, 96, 96, 3) uint8 (raw CarRacing frames),
  ``actions`` (T, A), ``rewards`` (T,), ``terminals`` (T,).

Frames already at the preset's size (64x64) are kept as they are; others (96x96 raw
CarRacing, 240x320 Doom) go through the preset's crop and resize. ``done``/``terminals``
become ``terminated``, except that an episode as long as the env's time limit
(the env preset's ``time_limit``) whose last step is done is stored as *truncated* there (the limit
ended it, as with ctallec's 1,000-step CarRacing rollouts). A missing ``reward`` is stored
as zeros and a missing ``done`` as all False; the manifest lists what was missing.

Actions are stored as collected data stores them (float32 (T, A)); a width that does not
match the preset is refused. Doom's Discrete(3) actions are stored one-hot (T, 3): integer
indices (0 stay, 1 left, 2 right) as they are, and the original doomrnn's continuous
action in [-1, 1] (float (T,) or (T, 1)) mapped as its env did: < -1/3 left, > 1/3 right,
else stay. Any file that cannot be converted raises a :class:`DataError` naming it (or is
skipped with ``skip_bad``).

Each imported episode's source (its path relative to SRC) is appended to
``DIR/imports.jsonl`` before the episode is written. A re-run skips sources already
recorded (re-converting one whose episode file is missing or damaged) and numbers new ones
after the last episode, so names never shift as sources are added or removed. Episodes
whose source has since gone are kept (and counted in the report): an import never deletes.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from world_models.core.atomic import clean_temp_files
from world_models.core.errors import ConfigError, DataError
from world_models.core.locking import lock_folder
from world_models.data import store
from world_models.envs.presets import EnvPreset, get_preset

LAYOUTS = {
    "hardmaru": {"obs": "obs", "action": "action", "reward": "reward", "done": "done"},
    "ctallec": {
        "obs": "observations",
        "action": "actions",
        "reward": "rewards",
        "done": "terminals",
    },
}
RECORD = "imports.jsonl"
"""One line per imported episode: {"episode": "ep_000012.npz", "source": "a/b.npz"}."""


@dataclass
class ImportReport:
    out_dir: Path
    imported: int = 0
    skipped_existing: int = 0
    bad: int = 0
    missing: tuple[str, ...] = ()
    sources_gone: int = 0  # episodes kept whose recorded source is no longer under SRC


def detect_layout(keys: list[str], source: Path | str) -> str:
    for name, layout in LAYOUTS.items():
        if layout["obs"] in keys and layout["action"] in keys:
            return name
    raise DataError(
        f"{source}: unknown layout, keys {sorted(keys)}; expected obs/action "
        f"(hardmaru) or observations/actions (ctallec)"
    )


def _numbers(a: np.ndarray, path: Path, key: str) -> np.ndarray:
    if a.dtype.kind not in "biuf":  # strings would fail later without the file's name
        raise DataError(f"{path}: {key} must be numbers, got dtype {a.dtype}")
    return a


def convert_actions(action: np.ndarray, preset: EnvPreset, path: Path) -> np.ndarray:
    """Source actions -> float32 (T, A) in the layout ``collect`` stores for ``preset``."""
    a = _numbers(np.asarray(action), path, "action")
    T, k = len(a), preset.action_dim
    width = 1 if a.ndim == 1 else a.shape[1] if a.ndim == 2 else None
    if preset.action_kind == "box":
        if width != k or a.dtype.kind == "b":
            raise DataError(
                f"{path}: {preset.name} actions must be (T, {k}) numbers, got {a.dtype} {a.shape}"
            )
        return a.astype(np.float32)  # (T, k)
    if width == k and k > 1:  # already one-hot, as collect stores it
        if not np.isin(a, (0, 1)).all() or not (a.sum(1) == 1).all():
            raise DataError(f"{path}: (T, {k}) actions must be one-hot")
        return a.astype(np.float32)
    if width != 1:
        raise DataError(
            f"{path}: {preset.name} actions must be (T,) indices or (T, {k}) one-hot, got {a.shape}"
        )
    a = a.reshape(T)
    if a.dtype.kind in "iu":  # Discrete indices
        if a.size and (a.min() < 0 or a.max() >= k):
            raise DataError(
                f"{path}: action indices must be in 0..{k - 1}, got {a.min()}..{a.max()}"
            )
        index = a.astype(np.int64)
    elif preset.controller_outputs == 1 and a.dtype.kind == "f":
        # the original's continuous action (Doom's one number): C's own mapping of it
        if not np.isfinite(a).all():
            raise DataError(f"{path}: action has NaN or Inf values")
        index = preset.actions.to_env(torch.from_numpy(a.astype(np.float32))[:, None]).numpy()
    else:
        raise DataError(f"{path}: {preset.name} actions must be integer indices, got {a.dtype}")
    return np.eye(k, dtype=np.float32)[index]  # (T,) -> (T, k) one-hot


def convert_file(path: Path, preset: EnvPreset) -> tuple[store.Episode, str, set[str]]:
    """One source ``.npz`` -> (Episode, layout name, keys that were missing)."""
    try:
        return _convert(path, preset)
    except (ValueError, TypeError, IndexError) as exc:  # anything unforeseen: name the file
        raise DataError(f"{path}: cannot convert ({type(exc).__name__}: {exc})") from None


def _convert(path: Path, preset: EnvPreset) -> tuple[store.Episode, str, set[str]]:
    names = store.npz_keys(path)
    layout_name = detect_layout(names, path)
    layout = LAYOUTS[layout_name]
    arrays = store.load_npz(path, [k for k in layout.values() if k in names])
    obs = _numbers(arrays[layout["obs"]], path, "frames")
    if obs.ndim != 4 or obs.shape[-1] != 3 or len(obs) == 0:
        raise DataError(f"{path}: frames must be (T, H, W, 3), got {obs.shape}")
    if obs.dtype != np.uint8:
        if np.issubdtype(obs.dtype, np.floating) and obs.max(initial=0) <= 1.0:
            obs = np.round(obs * 255.0)  # frames saved in [0, 1]
        obs = np.clip(obs, 0, 255).astype(np.uint8)
    T = len(obs)
    size = preset.preprocess.size
    if obs.shape[1:3] != (size, size):
        try:
            obs = np.stack([preset.preprocess(f) for f in obs])  # (T, 64, 64, 3)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
    action = convert_actions(arrays[layout["action"]], preset, path)  # (T, A)
    missing = set()
    if layout["reward"] in arrays:
        reward = _numbers(arrays[layout["reward"]], path, "reward").astype(np.float32).ravel()
    else:
        reward, _ = np.zeros(T, np.float32), missing.add("reward")
    if layout["done"] in arrays:
        terminated = _numbers(arrays[layout["done"]], path, "done").astype(bool).ravel()
    else:
        terminated, _ = np.zeros(T, bool), missing.add("done")
    truncated = np.zeros(T, bool)
    if T == preset.time_limit and len(terminated) == T and terminated[-1]:
        terminated[-1], truncated[-1] = False, True  # the time limit ended it, not the env
    ep = store.Episode(
        obs=np.ascontiguousarray(obs),
        action=action,
        reward=reward,
        terminated=terminated,
        truncated=truncated,
    )
    store.validate_episode(ep.arrays(), path)
    return ep, layout_name, missing


def _read_record(out: Path) -> dict[str, str]:
    """source -> episode name, from ``imports.jsonl`` (a torn last line is ignored)."""
    done: dict[str, str] = {}
    path = out / RECORD
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                done[entry["source"]] = entry["episode"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a killed run: its episode is re-imported
    return done


def import_rollouts(
    src: str | Path, out_dir: str | Path, env: str = "carracing", skip_bad: bool = False
) -> ImportReport:
    """Convert every ``.npz`` under ``src`` into episodes of the store ``out_dir``."""
    src, out = Path(src), Path(out_dir)
    preset = get_preset(env)
    files = [src] if src.is_file() else sorted(src.rglob("*.npz")) if src.is_dir() else []
    if not files:
        raise DataError(f"{src}: no .npz files to import")
    with lock_folder(out, "dataset folder"):  # one writer per dataset folder
        return _import_locked(src, out, preset, files, skip_bad)


def _import_locked(src: Path, out: Path, preset, files: list[Path], skip_bad: bool) -> ImportReport:
    clean_temp_files(out)
    signature = {
        "source": "import",
        "import_from": str(src.resolve()),
        "env": preset.name,
        "env_id": preset.env_id,
        "preprocess": preset.preprocess.to_dict(),
    }
    old = store.read_manifest(out)
    if old is not None and any(old.get(k) != v for k, v in signature.items()):
        raise ConfigError(
            f"{out} already holds another dataset ({old.get('source')} of "
            f"{old.get('env')}); import into an empty folder"
        )
    done = _read_record(out)
    on_disk = store.list_episodes(out)
    if old is not None and on_disk and not done:
        raise ConfigError(
            f"{out} was imported by an older version that did not record each episode's "
            f"source ({RECORD}); import into an empty folder"
        )
    used = [store.episode_index(n) for n in done.values()] + [
        store.episode_index(p.name) for p in on_disk
    ]
    next_index = max((i for i in used if i is not None), default=-1) + 1
    report = ImportReport(out_dir=out)
    missing: set[str] = set(old.get("missing_keys", [])) if old else set()
    layouts: set[str] = set(old.get("layouts", [])) if old else set()
    names = {
        path: (path.relative_to(src).as_posix() if src.is_dir() else src.name) for path in files
    }
    report.sources_gone = len(set(done) - set(names.values()))
    with open(out / RECORD, "a") as record:
        for path in files:
            name = done.get(names[path])
            if name is not None:
                try:
                    store.read_episode(out / name)
                    report.skipped_existing += 1
                    continue
                except DataError:
                    pass  # missing or damaged: re-import it under its recorded name
            try:
                ep, layout, miss = convert_file(path, preset)
            except DataError as exc:
                if not skip_bad:
                    raise
                warnings.warn(f"skipping {exc}", stacklevel=2)
                report.bad += 1
                continue
            if name is None:  # record first: a killed run leaves a name, not an orphan file
                name, next_index = store.episode_name(next_index), next_index + 1
                record.write(json.dumps({"episode": name, "source": names[path]}) + "\n")
                record.flush()
            store.write_episode(out / name, ep)
            layouts.add(layout)
            missing |= miss
            report.imported += 1
    report.missing = tuple(sorted(missing))
    episodes = store.list_episodes(out)
    store.write_manifest(
        out,
        {
            **signature,
            "layouts": sorted(layouts),
            "missing_keys": report.missing,
            "episodes": len(episodes),
            "bad_sources": report.bad,
            "sources_record": RECORD,
            "time_limit": preset.time_limit,
            "action": {
                "kind": preset.action_kind,
                "dim": preset.action_dim,
                "stored_as": "float32 (T, A)"
                + (" one-hot" if preset.action_kind == "discrete" else ""),
            },
            "policy": {"name": "unknown (imported)"},
            "seed": None,
            "note": "done/terminals -> terminated, or truncated when an episode as long as the "
            "time limit ends done; missing reward -> 0",
        },
    )
    return report


def import_command(config) -> int:
    """``data import``: import, then print what was imported and the dataset's summary."""
    report = import_rollouts(config.src, config.data_dir, env=config.env, skip_bad=config.skip_bad)
    print(
        f"imported {report.imported}, kept {report.skipped_existing} already there, "
        f"skipped {report.bad} bad"
        + (f"; missing keys filled in: {', '.join(report.missing)}" if report.missing else "")
        + (
            f"; {report.sources_gone} episode(s) kept whose source is gone"
            if report.sources_gone
            else ""
        )
    )
    print(store.describe(config.data_dir))
    return 0
