"""Score a controller in the real env (or the dream): ``evaluate(config) -> output folder``.

N trials (default 100, as the paper's tables) with seeds ``seed .. seed + N - 1``, run in
parallel by :class:`~world_models.envs.pool.EnvPool` (V, M and C batched in this
process). Writes ``results.json`` (mean, std, every return), ``returns.csv``,
``histogram.png``, and an animation of the best and of the worst episode made of the raw
env frames (e.g. 96x96 CarRacing, 240x320 Doom). Episodes are functions of their seeds, so
the two are replayed with recording on rather than storing every frame of every trial;
``results.json`` says whether the replays scored the same.

``target="dream"`` scores the controller inside M's dream instead (the paper's "dream
score" beside the real one): the trials as :class:`~world_models.envs.dream.BatchedDream`
batches at temperature ``tau`` (up to 16,384 dreams a batch for C, 1,024 for a baseline
policy, whose batch is recorded whole for the video; batch k > 0 is seeded from
``(seed, k)``, so up to one batch of trials is the one batch it always was), and the best
and worst dreams decoded by V as animations. Memory stays that of one batch however many
trials are asked for (at most :data:`~world_models.evaluation.configs.MAX_TRIALS`: the
results list every return).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from world_models.core.atomic import atomic_open, atomic_write_json
from world_models.core.config import override
from world_models.core.device import pick_device
from world_models.core.errors import ConfigError
from world_models.core.locking import check_output_dir
from world_models.core.media import check_animation_path, save_animation, to_uint8_hwc
from world_models.data.series import load_initial_states
from world_models.envs.dream import BatchedDream
from world_models.envs.pool import EnvFactory, make_pool
from world_models.envs.presets import get_preset
from world_models.evaluation.configs import EvaluateConfig
from world_models.models.actions import ACTION_MODES
from world_models.models.world_model import check_trained_env, load_world_model
from world_models.policies import ConstantPolicy, make_random_policy
from world_models.policies.controller import ControllerPolicy
from world_models.shipped import pretrained_dir, settings


def baseline_policy(name: str, env: str, action_space=None):
    """A policy that needs no model: ``random`` (the env's data policy) or one of the env's
    named constant actions (Doom: ``stay`` / ``left`` / ``right``). ``action_space``
    defaults to the preset's (the dream's), so no real env is made."""

    preset = get_preset(env)
    if action_space is None:
        action_space = preset.action_space()
    if name == "random":
        return make_random_policy(preset.default_policy, action_space)
    if name in preset.actions.fixed:
        return ConstantPolicy(preset.actions.fixed[name])
    if any(name in mode.fixed for mode in ACTION_MODES.values()):
        raise ConfigError(f"policy {name!r} is not a constant action of {env}")
    raise ConfigError(f"unknown baseline policy {name!r}")


def build_policy(config: EvaluateConfig):
    """The policy the config asks for (V+M+C loaded from checkpoints, or a baseline)."""

    preset = get_preset(config.env)
    if config.policy != "controller":
        return baseline_policy(config.policy, config.env)

    if config.controller is None or config.vae is None or config.mdrnn is None:
        raise ConfigError("policy controller needs --controller, --vae, --mdrnn")
    device = pick_device(config.device)
    wm = load_world_model(
        config.vae,
        config.mdrnn,
        config.controller,
        action_mode=preset.action_mode,
        env=config.env,
        device=device,
    )
    return ControllerPolicy(wm.vae, wm.mdrnn, wm.controller, device, config.z_mode)


def with_pretrained(config: EvaluateConfig) -> EvaluateConfig:
    """``config`` with a shipped model's paths and settings filled in (if it names one)."""
    if config.pretrained is None:
        return config

    root, s = pretrained_dir(config.pretrained), settings(config.pretrained)
    return override(
        config,
        vae=root / "vae",
        mdrnn=root / "mdrnn",
        controller=root / "controller",
        series_dir=root / "initial_z.safetensors",
        data_dir=None,
        env=s["env"],
        tau=s["tau"],
        done_mode=s["done_mode"],
        dream_dropout=s["dream_dropout"],
        dream_max_steps=s["max_steps"],
        done_offset=s.get("done_offset", 0.0),
    )


def evaluate(config: EvaluateConfig) -> Path:
    """Play ``trials`` episodes (real env or dream) and write the results; returns ``out_dir``."""

    check_output_dir(config.out_dir, "output folder", create=False)  # before hours of play
    config = with_pretrained(config)
    _check_env(config)
    out = Path(config.out_dir)
    if config.video != "none":  # before the trials, not after them
        check_animation_path(out / f"best.{config.video}")
    out.mkdir(parents=True, exist_ok=True)
    seeds = np.arange(config.trials) + config.seed
    if config.target == "dream":
        returns, lengths, videos, replay_returns = _dream_trials(config)
    else:
        returns, lengths, videos, replay_returns = _real_trials(config, seeds)
    best, worst = int(np.argmax(returns)), int(np.argmin(returns))
    results = {
        "env": config.env,
        "target": config.target,
        "policy": config.policy,
        "trials": config.trials,
        "mean": float(returns.mean()),
        "std": float(returns.std()),
        "min": float(returns.min()),
        "max": float(returns.max()),
        "mean_length": float(lengths.mean()),
        "returns": [float(r) for r in returns],
        "controller": str(config.controller),
        "z_mode": config.z_mode,
    }
    if config.target == "dream":  # one generator seeds a batch of dreams: no own seeds
        results.update(
            tau=config.dream.tau,
            done_mode=config.dream.done_mode,
            dream_dropout=config.dream.dream_dropout,
            done_offset=config.dream.done_offset,
            seed=config.seed,
            dreams_per_batch=_dreams_per_batch(config),
            best_trial=best,
            worst_trial=worst,
        )
    else:
        results.update(
            best_seed=int(seeds[best]),
            worst_seed=int(seeds[worst]),
            seeds=[int(s) for s in seeds],
        )
    for name, frames in zip(("best", "worst"), videos):
        save_animation(list(frames), out / f"{name}.{config.video}", fps=config.fps)
    if replay_returns is not None:
        results["replay_returns"] = [float(r) for r in replay_returns]
        results["replay_matches"] = bool(
            np.allclose(replay_returns, returns[[best, worst]], rtol=1e-5, atol=1e-6)
        )
    atomic_write_json(out / "results.json", results)
    with atomic_open(out / "returns.csv", "w") as fh:
        first = "trial" if config.target == "dream" else "seed"
        keys = range(len(returns)) if config.target == "dream" else seeds
        fh.write(f"{first},return,length\n")
        fh.writelines(f"{s},{r:.6g},{n}\n" for s, r, n in zip(keys, returns, lengths))
    where = (
        f"{config.env} dream, tau {config.dream.tau}" if config.target == "dream" else config.env
    )
    save_histogram(
        returns,
        out / "histogram.png",
        title=f"{where}: {config.trials} trials, {results['mean']:.1f} +- {results['std']:.1f}",
    )
    return out


def _check_env(config: EvaluateConfig) -> None:
    """Refuse V and M trained on another env's episodes than ``env``, from their meta.json,
    before anything is written (only those the run loads: a baseline in the real env none)."""
    if config.target == "real" and config.policy != "controller":
        return
    check_trained_env(config.env, config.mdrnn, "M")
    if config.target == "real" or _dream_needs_vae(config):
        check_trained_env(config.env, config.vae, "V")


def _real_trials(config: EvaluateConfig, seeds: np.ndarray):
    """Returns, lengths, raw frames of the best and worst episode, and their replays' returns."""

    policy = build_policy(config)
    workers, per = config.rollout.layout(config.trials)
    bar = tqdm(total=config.trials, unit="ep", disable=not config.progress, dynamic_ncols=True)
    factory = EnvFactory(config.env, config.max_steps, backend=config.rollout.env_backend)
    with make_pool(
        config.rollout.backend, factory, workers, per, retries=config.rollout.retries
    ) as pool:
        res = pool.run(policy, seeds, max_steps=config.max_steps, progress=bar.update)
        bar.close()
        if config.video == "none":
            return res.returns, res.lengths, [], None
        pick = [int(np.argmax(res.returns)), int(np.argmin(res.returns))]
        replay = pool.run(policy, seeds[pick], max_steps=config.max_steps, record=True)
    return res.returns, res.lengths, replay.frames, replay.returns


DREAMS_PER_BATCH = 16_384
"""Dreams of C run at once (``--in dream``); more trials run batch after batch."""
BASELINE_DREAMS_PER_BATCH = 1_024
"""Dreams of a baseline policy run at once: with a video the whole batch's z are recorded
(1,024 x 2,101 steps x 64 floats: ~550 MB), so its batches are smaller."""


def _dreams_per_batch(config: EvaluateConfig) -> int:
    return DREAMS_PER_BATCH if config.policy == "controller" else BASELINE_DREAMS_PER_BATCH


def _batch_seed(seed: int, k: int) -> int:
    """The seed of dream batch ``k``: ``seed`` itself for the first, one drawn from
    ``(seed, k)`` for the others (not ``seed + k``, which another --seed's batch reuses)."""
    if k == 0:
        return seed
    state = np.random.SeedSequence([seed % 2**63, k]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))  # < 2**63: torch's and numpy's seeds take it


def _dream_needs_vae(config: EvaluateConfig) -> bool:
    return config.vae is not None and (config.video != "none" or config.series_dir is None)


def _dream_trials(config: EvaluateConfig):
    """The trials in BatchedDream batches; the best and worst dreams decoded by V."""

    if config.policy == "controller" and config.controller is None:
        raise ConfigError("evaluating a controller in the dream needs --controller")
    if config.mdrnn is None:
        raise ConfigError("evaluating in the dream needs --mdrnn")
    device = pick_device(config.device)
    wm = load_world_model(  # no action_mode: in the dream C maps actions its own way
        config.vae if _dream_needs_vae(config) else None,
        config.mdrnn,
        config.controller if config.policy == "controller" else None,
        env=config.env,
        device=device,
    )
    vae = wm.vae
    dream = batched_dream(config, wm.mdrnn, vae, device, config.dream.dream_max_steps)
    record = config.video != "none" and vae is not None
    n, per = config.trials, _dreams_per_batch(config)
    batches = [(k, start, min(per, n - start)) for k, start in enumerate(range(0, n, per))]
    returns, lengths = np.zeros(n), np.zeros(n, np.int64)
    bar = tqdm(total=n, unit="dream", disable=not config.progress, dynamic_ncols=True)
    if config.policy != "controller":
        mode = get_preset(config.env).actions
        policy = baseline_policy(config.policy, config.env)
        kept: dict[str, tuple[float, torch.Tensor]] = {}  # best/worst so far: (return, z)
        for k, start, size in batches:
            seed = _batch_seed(config.seed, k)
            ret, ln = dream.play(policy, size, seed, mode, record=record)
            returns[start : start + size], lengths[start : start + size] = ret, ln
            if record:  # keep two of the batch's recordings, drop the rest
                for name, i, better in (
                    ("best", int(np.argmax(ret)), np.greater),
                    ("worst", int(np.argmin(ret)), np.less),
                ):
                    if name not in kept or better(ret[i], kept[name][0]):  # first one on ties
                        kept[name] = (float(ret[i]), dream.last_recording[: ln[i] + 1, i].clone())
                dream.last_recording = None
            bar.update(size)
        bar.close()
        if not record:
            return returns, lengths, [], None
        zs = [kept["best"][1], kept["worst"][1]]  # (T + 1, Z) each
    else:
        controller = wm.controller
        params = torch.as_tensor(controller.get_flat()[None], dtype=torch.float32)
        for k, start, size in batches:
            seed = _batch_seed(config.seed, k)
            ret = dream.evaluate(controller, params, size, seed=seed)[0]  # (size,)
            returns[start : start + size] = ret.double().cpu().numpy()
            lengths[start : start + size] = dream.last_lengths[0].cpu().numpy()
            bar.update(size)
        bar.close()
        if not record:
            return returns, lengths, [], None
        pick = [int(np.argmax(returns)), int(np.argmin(returns))]
        found: dict[int, torch.Tensor] = {}
        for k, start, size in batches:  # replay the batches that hold them, recording
            inside = [i for i in pick if start <= i < start + size]
            if inside:
                seed = _batch_seed(config.seed, k)
                dream.evaluate(
                    controller, params, size, seed=seed, record=[i - start for i in inside]
                )
                found.update(zip(inside, dream.last_recording))
        zs = [found[i] for i in pick]
    videos = []
    with torch.no_grad():
        for z in zs:  # (T + 1, Z) each
            frames = torch.cat([vae.decode(chunk) for chunk in z.split(512)])  # (T+1, 3, 64, 64)
            videos.append(to_uint8_hwc(frames))
    return returns, lengths, videos, None


def batched_dream(config, mdrnn, vae, device, max_steps: int):
    """M's :class:`~world_models.envs.dream.BatchedDream` with the tau and done settings of
    ``config`` (an evaluate or fidelity config), starting from the first frames of
    ``config.series_dir`` (or of ``config.data_dir``, encoded by ``vae``)."""

    mu, logvar = load_initial_states(config.series_dir, config.data_dir, vae, device=device)
    return BatchedDream(
        mdrnn,
        mu,
        logvar,
        config.dream.tau,
        max_steps,
        device,
        done_mode=config.dream.done_mode,
        dropout=config.dream.dream_dropout,
        done_offset=config.dream.done_offset,
    )


def save_histogram(values: np.ndarray, path: Path, title: str = "") -> Path:
    """A histogram PNG of returns with the mean marked, written atomically."""
    import matplotlib  # late: matplotlib loads when the histogram is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # late: matplotlib loads when the histogram is drawn

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.hist(values, bins=min(30, max(5, len(values) // 3)), color="#4c72b0", alpha=0.85)
    ax.axvline(float(np.mean(values)), color="k", linestyle="--", label="mean")
    ax.set_xlabel("return")
    ax.set_ylabel("episodes")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return Path(path)


def summarize(out_dir: Path) -> str:

    r = json.loads((Path(out_dir) / "results.json").read_text())
    where = f"{r['env']} dream (tau {r['tau']:g})" if r.get("target") == "dream" else r["env"]
    lines = [
        f"{where} ({r['policy']}): {r['mean']:.2f} +- {r['std']:.2f} over "
        f"{r['trials']} trials (min {r['min']:.2f}, max {r['max']:.2f})",
        f"results:   {Path(out_dir) / 'results.json'}",
        f"histogram: {Path(out_dir) / 'histogram.png'}",
    ]
    for f in sorted(Path(out_dir).glob("best.*")) + sorted(Path(out_dir).glob("worst.*")):
        lines.append(f"{f.stem + ':':<10} {f}")
    return "\n".join(lines)
