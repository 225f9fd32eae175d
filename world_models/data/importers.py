"""Import rollouts saved by the public implementations into our episode store.

Recognised ``.npz`` layouts (found recursively under SRC, taken in sorted path order):

* hardmaru/WorldModelsExperiments: ``obs`` (T, 64, 64, 3) uint8, ``action`` (T, A), and
  optionally ``reward`` (T,) and ``done`` (T,);
* ctallec/world-models: ``observations`` (T, 96, 96, 3) uint8 (raw CarRacing frames),
  ``actions`` (T, A), ``rewards`` (T,), ``terminals`` (T,).

Frames already at the preset's size (64x64) are kept as they are; others (96x96 raw
CarRacing, 240x320 Doom) go through the preset's crop and resize. ``done``/``terminals``
become ``terminated``; ``truncated`` is all False (neither layout recorded time limits).
A missing ``reward`` is stored as zeros and a missing ``done`` as all False; the manifest
lists what was missing. Integer 1-D actions (a discrete env) are stored one-hot.
Source file i (in sorted order) becomes ``ep_{i:06d}.npz``, so re-running skips the
episodes already imported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from world_models.atomic import clean_temp_files
from world_models.data import store
from world_models.envs.presets import EnvPreset, get_preset
from world_models.errors import ConfigError, DataError

LAYOUTS = {
    "hardmaru": {"obs": "obs", "action": "action", "reward": "reward", "done": "done"},
    "ctallec": {
        "obs": "observations",
        "action": "actions",
        "reward": "rewards",
        "done": "terminals",
    },
}


@dataclass
class ImportReport:
    out_dir: Path
    imported: int = 0
    skipped_existing: int = 0
    bad: int = 0
    missing: tuple[str, ...] = ()


def detect_layout(keys: list[str], source: Path | str) -> str:
    for name, layout in LAYOUTS.items():
        if layout["obs"] in keys and layout["action"] in keys:
            return name
    raise DataError(
        f"{source}: unknown layout, keys {sorted(keys)}; expected obs/action "
        f"(hardmaru) or observations/actions (ctallec)"
    )


def convert_file(path: Path, preset: EnvPreset) -> tuple[store.Episode, str, set[str]]:
    """One source ``.npz`` -> (Episode, layout name, keys that were missing)."""
    layout_name = detect_layout(store.npz_keys(path), path)
    layout = LAYOUTS[layout_name]
    names = set(store.npz_keys(path))
    arrays = store.load_npz(path, [k for k in layout.values() if k in names])
    obs = arrays[layout["obs"]]
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
    action = np.asarray(arrays[layout["action"]])
    if action.ndim == 1 and np.issubdtype(action.dtype, np.integer):
        if preset.action_kind != "discrete":
            raise DataError(f"{path}: integer actions but the {preset.name} preset is continuous")
        action = np.eye(preset.action_dim, dtype=np.float32)[action]  # (T,) -> (T, k) one-hot
    action = action.astype(np.float32).reshape(len(action), -1)  # (T, A)
    missing = set()
    if layout["reward"] in arrays:
        reward = np.asarray(arrays[layout["reward"]], np.float32).reshape(-1)
    else:
        reward, _ = np.zeros(T, np.float32), missing.add("reward")
    if layout["done"] in arrays:
        terminated = np.asarray(arrays[layout["done"]]).astype(bool).reshape(-1)
    else:
        terminated, _ = np.zeros(T, bool), missing.add("done")
    ep = store.Episode(
        obs=np.ascontiguousarray(obs),
        action=action,
        reward=reward,
        terminated=terminated,
        truncated=np.zeros(T, bool),
    )
    store.validate_episode(ep.arrays(), path)
    return ep, layout_name, missing


def import_rollouts(
    src: str | Path, out_dir: str | Path, env: str = "carracing", skip_bad: bool = False
) -> ImportReport:
    """Convert every ``.npz`` under ``src`` into episodes of the store ``out_dir``."""
    src, out = Path(src), Path(out_dir)
    preset = get_preset(env)
    files = [src] if src.is_file() else sorted(src.rglob("*.npz")) if src.is_dir() else []
    if not files:
        raise DataError(f"{src}: no .npz files to import")
    out.mkdir(parents=True, exist_ok=True)
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
    report = ImportReport(out_dir=out)
    missing: set[str] = set(old.get("missing_keys", [])) if old else set()
    layouts: set[str] = set(old.get("layouts", [])) if old else set()
    for i, path in enumerate(files):
        dest = out / store.episode_name(i)
        if dest.exists():
            try:
                store.read_episode(dest)
                report.skipped_existing += 1
                continue
            except DataError:
                pass  # re-import a damaged one
        try:
            ep, layout, miss = convert_file(path, preset)
        except DataError as exc:
            if not skip_bad:
                raise
            warnings.warn(f"skipping {exc}", stacklevel=2)
            report.bad += 1
            continue
        store.write_episode(dest, ep)
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
            "action": {
                "kind": preset.action_kind,
                "dim": preset.action_dim,
                "stored_as": "float32 (T, A)",
            },
            "policy": {"name": "unknown (imported)"},
            "seed": None,
            "note": "done/terminals -> terminated; truncated all False; missing reward -> 0",
        },
    )
    return report
