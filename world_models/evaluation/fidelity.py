"""Is this V + M worth evolving in? ``fidelity(config) -> output folder``.

Before any CMA-ES, the same fixed policies are scored in M's dream and in the real game:
the env's random data policy, and for Doom always-stay, always-left and always-right (plus
a given controller). Side by side for each: mean episode length and deaths per step (a
death is an episode that ends before the step cap). Then, whether the dream responds to
the action: the constant policies are dreamed from the same starts with the same sampling
noise (:meth:`~world_models.envs.dream.BatchedDream.play`), so any difference between
them is the action's doing. A verdict line sums it up, e.g. "dream too easy: random
survives 2100 steps in the dream, 311 in the game".

Writes ``fidelity.json`` (every number), ``fidelity.txt`` (the table and the verdict) and
``strip.png``: a real episode's frames (top), V's reconstructions (middle) and M's
open-loop dream of the same episode from its first frame with its recorded actions
(bottom).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from world_models.core.atomic import atomic_write_json, atomic_write_text
from world_models.core.device import pick_device
from world_models.core.errors import ConfigError
from world_models.core.media import save_png
from world_models.data import store
from world_models.envs.dream import calibrate_done_offset
from world_models.envs.pool import EnvFactory, make_pool
from world_models.envs.presets import get_preset
from world_models.evaluation.configs import FidelityConfig
from world_models.evaluation.diagnostics import diagnose, diagnostics_table, load_episodes
from world_models.evaluation.evaluate import (
    EvaluateConfig,
    baseline_policy,
    batched_dream,
    build_policy,
)
from world_models.evaluation.open_loop import open_loop
from world_models.models.world_model import load_world_model
from world_models.policies.controller import LatentPolicy

EASY, HARD = 1.3, 0.7
"""The dream is called faithful when the random policy's mean survival in it is within
[HARD, EASY] times its survival in the real game (the shipped model's target)."""


def _stats(lengths: np.ndarray, cap: int) -> dict[str, float]:
    deaths = int((lengths < cap).sum())
    return {
        "mean_length": float(lengths.mean()),
        "std_length": float(lengths.std()),
        "deaths": deaths,
        "deaths_per_step": deaths / max(1, int(lengths.sum())),
    }


def verdict(results: dict) -> str:
    """The one-line summary of :func:`fidelity`'s results."""
    d = results["dream"]["random"]["mean_length"]
    parts = []
    if "real" in results:
        r = results["real"]["random"]["mean_length"]
        ratio = d / max(r, 1e-9)
        if ratio > EASY:
            head = "dream too easy"
        elif ratio < HARD:
            head = "dream too hard"
        else:
            head = "dream as deadly as the game"
        parts.append(f"{head}: random survives {d:.0f} steps in the dream, {r:.0f} in the game")
    else:
        parts.append(f"random survives {d:.0f} steps in the dream (game not played)")
    resp = results.get("response")
    if resp is not None:
        if resp["lengths_differ"] < 0.05 and resp["z_distance"] < 1e-3:
            parts.append("the dream ignores the action")
        else:
            parts.append(f"the action changes {100 * resp['lengths_differ']:.0f}% of dream lengths")
    rank = results.get("rank_agreement")
    if rank is not None:
        parts.append(f"policy ranking agreement {rank:+.2f}")
    return "; ".join(parts)


def _rank_agreement(dream: dict, real: dict) -> float | None:
    """Spearman correlation of the policies' mean lengths, dream against game."""
    names = [k for k in dream if k in real]
    if len(names) < 3:
        return None
    a = np.argsort(np.argsort([dream[k]["mean_length"] for k in names])).astype(float)
    b = np.argsort(np.argsort([real[k]["mean_length"] for k in names])).astype(float)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _policies(config: FidelityConfig) -> list[str]:
    """The random data policy, then the env's named constant actions (Doom's stay, ...)."""
    return ["random", *get_preset(config.env).actions.fixed]


def dream_for(config: FidelityConfig):
    """The BatchedDream a fidelity config describes (V attached as ``.vae``) and the env's
    action mode."""

    mode = get_preset(config.env).actions
    device = pick_device(config.device)
    wm = load_world_model(config.vae, config.mdrnn, env=config.env, device=device)
    dream = batched_dream(config, wm.mdrnn, wm.vae, device, config.dream.dream_max_steps)
    dream.vae = wm.vae
    return dream, mode


def fidelity(config: FidelityConfig, log=print) -> Path:
    """Score the fixed policies (and a controller) in the dream and the game; see the module
    docstring. Returns the output folder."""

    dream, mode = dream_for(config)
    vae, mdrnn = dream.vae, dream.mdrnn
    device = dream.device
    controller = None
    if config.controller is not None:
        controller = load_world_model(controller=config.controller, device=device).controller
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    calibration = None
    if config.calibrate:
        calibration = calibrate(dream, config, mode)
        dream.done_offset = calibration["done_offset"]
        log(
            f"calibrated done offset {calibration['done_offset']:+.3f}: random survives "
            f"{calibration['dream_length']:.0f} steps in the dream, "
            f"{calibration['data_length']:.0f} in the data"
        )

    names = _policies(config)
    results: dict = {
        "env": config.env,
        "tau": config.dream.tau,
        "done_mode": config.dream.done_mode,
        "dream_dropout": config.dream.dream_dropout,
        "done_offset": dream.done_offset,
        "calibration": calibration,
        "trials": config.trials,
        "max_steps": config.dream.dream_max_steps,
        "vae": str(config.vae),
        "mdrnn": str(config.mdrnn),
        "controller": None if controller is None else str(config.controller),
        "dream": {},
    }
    finals = {}
    for name in names:
        policy = baseline_policy(name, config.env)
        _, lengths = dream.play(policy, config.trials, config.seed, mode, record=name != "random")
        results["dream"][name] = _stats(lengths, config.dream.dream_max_steps)
        if name != "random":
            finals[name] = (lengths, dream.last_recording)
    if controller is not None:
        lat = LatentPolicy(controller.to(device))
        _, lengths = dream.play(
            lat, config.trials, config.seed, mode, observe_cell=controller.cell_input
        )
        results["dream"]["controller"] = _stats(lengths, config.dream.dream_max_steps)
    if len(finals) >= 2:
        lens = np.stack([v[0] for v in finals.values()])  # (3, n)
        k = min(20, min(v[1].shape[0] for v in finals.values()) - 1)
        zs = [v[1][k] for v in finals.values()]  # (n, Z) each, step k
        dist = float(np.mean([(zs[0] - z).norm(dim=-1).mean().item() for z in zs[1:]]))
        results["response"] = {
            "policies": list(finals),
            "lengths_differ": float((lens != lens[:1]).any(axis=0).mean()),
            "z_distance": dist,
            "z_distance_step": k,
        }

    if config.diagnostics:
        results["diagnostics"] = _diagnostics(config, mdrnn, dream.done_offset)
    if config.real:
        results["real"] = _real(config, names, controller is not None)
        results["rank_agreement"] = _rank_agreement(results["dream"], results["real"])
    results["verdict"] = verdict(results)
    if config.data_dir is not None:
        results["strip"] = str(_strip(config, vae, mdrnn, out / "strip.png"))
    atomic_write_json(out / "fidelity.json", results)
    text = table(results)
    atomic_write_text(out / "fidelity.txt", text + "\n")
    log(text)
    return out


def _diagnostics(config: FidelityConfig, mdrnn, done_offset: float) -> dict:
    """:func:`~world_models.evaluation.diagnostics.diagnose` on M's held-out episodes and,
    when given, on a controller's episodes, at the dream's death rule and offset."""
    sets = {}
    if config.series_dir is not None and Path(config.series_dir).is_dir():
        sets["held_out"] = (config.series_dir, config.holdout_fraction)
    if config.controller_series_dir is not None:
        sets["controller_episodes"] = (config.controller_series_dir, None)
    n, mode = config.diagnostic_episodes, config.dream.done_mode
    return {
        name: diagnose(mdrnn, load_episodes(folder, n, frac), mode, done_offset, config.seed)
        for name, (folder, frac) in sets.items()
    }


def data_mean_length(series_dir, max_steps: int) -> float:
    """Mean episode length (capped at ``max_steps``) of a series folder's episodes."""

    files = sorted(p for p in Path(series_dir).glob("*.npz") if not p.name.startswith("."))
    if not files:
        raise ConfigError(f"{series_dir}: no series episodes to calibrate against")
    return float(np.mean([min(len(store.load_npz(f, ["mu"])["mu"]), max_steps) for f in files]))


def calibrate(dream, config: FidelityConfig, mode) -> dict:
    """The done offset matching the data's random-policy survival (see envs/dream.py)."""

    if config.series_dir is None or Path(config.series_dir).suffix == ".safetensors":
        raise ConfigError("calibrate needs the series folder of the random-policy data")
    target = data_mean_length(config.series_dir, config.dream.dream_max_steps)
    offset, length = calibrate_done_offset(
        dream,
        baseline_policy("random", config.env),
        target,
        n=max(100, config.trials),
        seed=config.seed + 1,  # not the scoring trials' seed
        action_mode=mode,
    )
    return {"done_offset": offset, "dream_length": length, "data_length": target}


def _real(config: FidelityConfig, names: list[str], with_controller: bool) -> dict:

    seeds = np.arange(config.trials) + config.seed
    workers, per = config.rollout.layout(config.trials)
    real = {}
    todo = names + (["controller"] if with_controller else [])
    factory = EnvFactory(
        config.env, config.dream.dream_max_steps, backend=config.rollout.env_backend
    )
    rollout = config.rollout
    with make_pool(rollout.backend, factory, workers, per, retries=rollout.retries) as pool:
        for name in todo:
            ev = EvaluateConfig(
                controller=config.controller,
                vae=config.vae,
                mdrnn=config.mdrnn,
                env=config.env,
                policy=name,
                device=config.device,
            )
            bar = tqdm(
                total=config.trials, desc=f"real {name}", disable=not config.progress, leave=False
            )
            res = pool.run(
                build_policy(ev), seeds, max_steps=config.dream.dream_max_steps, progress=bar.update
            )
            bar.close()
            real[name] = _stats(res.lengths, config.dream.dream_max_steps)
    return real


def table(results: dict) -> str:
    """The side-by-side table and the verdict, as text."""
    offset = results.get("done_offset", 0.0)
    lines = [
        f"{results['env']} dream (tau {results['tau']:g}, done {results['done_mode']}"
        f"{', dropout' if results['dream_dropout'] else ''}"
        f"{f', offset {offset:+.2f}' if offset else ''}) vs game, "
        f"{results['trials']} trials, cap {results['max_steps']} steps",
        f"{'policy':<11} {'dream length':>16} {'deaths/step':>12} "
        f"{'game length':>16} {'deaths/step':>12} {'dream/game':>10}",
    ]
    real = results.get("real", {})
    for name, d in results["dream"].items():
        row = f"{name:<11} {d['mean_length']:>8.1f} +- {d['std_length']:<5.0f} "
        row += f"{d['deaths_per_step']:>12.5f}"
        r = real.get(name)
        if r is not None:
            ratio = d["mean_length"] / max(r["mean_length"], 1e-9)
            row += (
                f" {r['mean_length']:>8.1f} +- {r['std_length']:<5.0f} "
                f"{r['deaths_per_step']:>12.5f} {ratio:>10.2f}"
            )
        lines.append(row)
    resp = results.get("response")
    if resp:
        lines.append(
            f"action response (same starts and noise, {'/'.join(resp['policies'])}): lengths "
            f"differ in {100 * resp['lengths_differ']:.0f}% of dreams; mean |z| distance at "
            f"step {resp['z_distance_step']}: {resp['z_distance']:.3f}"
        )
    for name, d in results.get("diagnostics", {}).items():
        lines += diagnostics_table(name, d)
    lines.append(f"verdict: {results['verdict']}")
    return "\n".join(lines)


def _strip(config: FidelityConfig, vae, mdrnn, path: Path) -> Path:
    """Real frames, V's reconstructions and M's open-loop dream, as a 3-row PNG."""

    files = store.list_episodes(config.data_dir)
    if not files:
        raise ConfigError(f"{config.data_dir}: no episodes for the picture strip")
    arrays = store.load_npz(files[0], ("obs", "action"))
    obs, actions = arrays["obs"], arrays["action"].astype(np.float32)
    if actions.ndim == 1:
        actions = actions[:, None]
    steps = min(len(obs), config.strip_steps * config.strip_every)
    dreamed = open_loop(vae, mdrnn, obs[0], actions[:steps], config.dream.tau, config.seed)
    cols = list(range(0, steps, config.strip_every))[: config.strip_steps]
    with torch.no_grad():
        recon = vae.decode(vae.encode_frames(obs[cols])[0]).clamp(0, 1)
    recon = (recon * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    rows = [obs[cols], recon, dreamed[cols]]
    gap = 2
    h, w = obs.shape[1], obs.shape[2]
    pic = np.full((3 * h + 2 * gap, len(cols) * (w + gap) - gap, 3), 255, np.uint8)
    for r, frames in enumerate(rows):
        for c, f in enumerate(frames):
            pic[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = f
    return save_png(pic.repeat(2, 0).repeat(2, 1), path)
