"""Why a dream fails: M's done head and its open-loop drift, measured on real episodes.

Two checks on latent series (``encode``'s output), each run on held-out random-policy
episodes and, when given, on episodes of the controller itself (the states C reaches):

* :func:`done_detection`: M teacher-forced on each episode (z sampled from V's posterior,
  the recorded actions), its done head read at the *dream's own* death rule (threshold or
  sampled, with the dream's offset). ``recall`` is the chance the rule fires on the fatal
  step, ``recall_window`` that it fires at least once in the last ``window`` steps,
  ``false_alarm`` the chance per step that it fires earlier. A dream whose M cannot see
  death coming in real data cannot teach a controller to avoid it.
* :func:`open_loop_errors`: from windows of real episodes, ``context`` teacher-forced steps,
  then M free-running (tau 0: each dimension's most likely component's mean) under the
  recorded actions. At k steps: the latent MSE against the real z, the MSE of holding the
  last real z (a model that predicts no change), and the step-to-step motion of the dream
  and of the game: a dream whose motion decays while the game's does not is freezing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from world_models.core.errors import DataError
from world_models.data import store
from world_models.data.series import split_files

HORIZONS = (1, 5, 20, 50)
"""Open-loop steps at which the errors are reported."""


def load_episodes(folder, max_episodes: int, holdout_fraction: float | None) -> list[dict]:
    """Up to ``max_episodes`` series episodes of ``folder`` as dicts of numpy arrays (mu,
    logvar, action (T, A), terminated); only M's held-out split when ``holdout_fraction``
    is given (the split rule of train-mdrnn; it may be empty for a small folder), else every
    episode."""
    if holdout_fraction is None:
        files = sorted(p for p in Path(folder).glob("*.npz") if not p.name.startswith("."))
        if not files:
            raise DataError(f"{folder}: no series episodes for the diagnostics")
    else:
        files = split_files(folder, holdout_fraction)[1]
    episodes = []
    for f in files[:max_episodes]:
        a = store.load_npz(f, ["mu", "logvar", "action", "terminated"])
        action = a["action"].astype(np.float32)
        a["action"] = action[:, None] if action.ndim == 1 else action
        episodes.append(a)
    return episodes


def fire_probability(logit: torch.Tensor, mode: str, offset: float, pos_weight: float):
    """Chance per step that the dream's death rule fires, from M's done logits (same shape):
    ``threshold`` 0 or 1 (logit + offset > 0); ``sample`` the Bernoulli's probability
    ``sigmoid(logit + offset - log(pos_weight))`` (envs/dream.py's rule)."""
    if mode == "threshold":
        return (logit + offset > 0).float()
    return torch.sigmoid(logit + offset - math.log(pos_weight))


@torch.no_grad()
def done_detection(
    mdrnn,
    episodes: list[dict],
    done_mode: str,
    done_offset: float = 0.0,
    window: int = 10,
    seed: int = 0,
) -> dict:
    """Recall and false alarms of M's done head at the dream's rule (module docstring)."""
    if mdrnn.config.done_head is not True:
        return {"episodes": 0, "note": "M has no done head"}
    device = mdrnn.lstm.weight_hh_l0.device
    gen = torch.Generator().manual_seed(seed)
    fatal, in_window, elsewhere, p_fatal, p_else = [], [], [], [], []
    for ep in episodes:
        mu = torch.as_tensor(ep["mu"], dtype=torch.float32)  # (T, Z)
        std = torch.exp(0.5 * torch.as_tensor(ep["logvar"], dtype=torch.float32))
        z = (mu + std * torch.randn(mu.shape, generator=gen)).to(device)  # (T, Z)
        a = torch.as_tensor(ep["action"], device=device)  # (T, A)
        logit = mdrnn(z[None], a[None]).done_logit[0].float().cpu()  # (T,): after a_t
        p = fire_probability(logit, done_mode, done_offset, mdrnn.config.done_pos_weight)
        t = len(p)
        died = bool(ep["terminated"][-1])
        early = p[: max(0, t - 1 - window)] if died else p
        elsewhere.append(early)
        if died:
            fatal.append(float(p[-1]))
            in_window.append(float(1.0 - torch.prod(1.0 - p[-window:])))
            p_fatal.append(float(torch.sigmoid(logit[-1] - math.log(mdrnn.config.done_pos_weight))))
        p_else.append(torch.sigmoid(logit[: t - 1] - math.log(mdrnn.config.done_pos_weight)))
    early = torch.cat(elsewhere) if elsewhere else torch.zeros(0)
    calm = torch.cat(p_else) if p_else else torch.zeros(0)
    return {
        "episodes": len(episodes),
        "deaths": len(fatal),
        "rule": done_mode,
        "offset": float(done_offset),
        "window": int(window),
        "recall": float(np.mean(fatal)) if fatal else math.nan,
        "recall_window": float(np.mean(in_window)) if in_window else math.nan,
        "false_alarm": float(early.mean()) if len(early) else math.nan,
        "death_probability_fatal": float(np.mean(p_fatal)) if p_fatal else math.nan,
        "death_probability_other": float(calm.mean()) if len(calm) else math.nan,
    }


@torch.no_grad()
def open_loop_errors(
    mdrnn,
    episodes: list[dict],
    context: int = 30,
    horizons: tuple[int, ...] = HORIZONS,
    max_windows: int = 200,
    seed: int = 0,
) -> dict:
    """Latent MSE of M's open-loop prediction at each horizon (module docstring)."""
    device = mdrnn.lstm.weight_hh_l0.device
    steps = max(horizons)
    need = context + steps + 1
    rng = np.random.default_rng(seed)
    mus, acts = [], []
    for ep in episodes:
        t = len(ep["mu"])
        for _ in range(max(1, t // need)):  # several disjoint-ish windows of long episodes
            if t < need or len(mus) >= max_windows:
                break
            s = int(rng.integers(0, t - need + 1))
            mus.append(ep["mu"][s : s + need].astype(np.float32))
            acts.append(ep["action"][s : s + need])
    if not mus:
        return {"windows": 0, "context": context, "note": f"no episode of {need}+ steps"}
    mu = torch.as_tensor(np.stack(mus), device=device)  # (W, C + S + 1, Z)
    act = torch.as_tensor(np.stack(acts), device=device)  # (W, C + S + 1, A)
    out = mdrnn(mu[:, :context], act[:, :context])  # teacher-forced: z_0..z_{C-1}
    z = mdrnn.sample(out, 0.0)[:, -1]  # (W, Z): M's prediction of z_C
    state = out.state
    dream = [z]
    for k in range(1, steps):
        out = mdrnn.step(z, act[:, context + k - 1], state)
        z = mdrnn.sample(out, 0.0)
        state = out.state
        dream.append(z)
    dream = torch.stack(dream, 1)  # (W, S, Z): predictions of z_C .. z_{C+S-1}
    real = mu[:, context : context + steps]  # (W, S, Z)
    last = mu[:, context - 1 : context]  # (W, 1, Z): the last z M was shown
    result = {"windows": len(mus), "context": context, "tau": 0.0, "k": {}}
    for k in horizons:
        i = k - 1  # k steps after the last real z
        prev_d = dream[:, i - 1] if i > 0 else last[:, 0]
        prev_r = real[:, i - 1] if i > 0 else last[:, 0]
        result["k"][str(k)] = {
            "mse": float((dream[:, i] - real[:, i]).pow(2).mean()),
            "hold_mse": float((last[:, 0] - real[:, i]).pow(2).mean()),
            "dream_motion": float((dream[:, i] - prev_d).pow(2).mean()),
            "real_motion": float((real[:, i] - prev_r).pow(2).mean()),
        }
    return result


def diagnose(mdrnn, episodes: list[dict], done_mode: str, done_offset: float, seed: int) -> dict:
    """Both checks on one set of episodes."""
    return {
        "done": done_detection(mdrnn, episodes, done_mode, done_offset, seed=seed),
        "open_loop": open_loop_errors(mdrnn, episodes, seed=seed),
    }


def diagnostics_table(name: str, d: dict) -> list[str]:
    """Text lines for one set of episodes' diagnostics."""
    lines = []
    done = d["done"]
    if done.get("deaths"):
        lines.append(
            f"{name}: done head ({done['rule']}, offset {done['offset']:+.2f}) on "
            f"{done['deaths']} deaths of {done['episodes']} episodes: recall "
            f"{done['recall']:.2f} at the fatal step, {done['recall_window']:.2f} within "
            f"{done['window']} steps; false alarms {done['false_alarm']:.4f} per step "
            f"(death probability {done['death_probability_fatal']:.3f} fatal, "
            f"{done['death_probability_other']:.4f} elsewhere)"
        )
    ol = d["open_loop"]
    if ol.get("windows"):
        lines.append(
            f"{name}: open loop ({ol['windows']} windows, {ol['context']} steps shown, tau 0)"
            f"  k: mse / hold-last mse / dream motion / game motion"
        )
        for k, v in ol["k"].items():
            lines.append(
                f"    k={k:>3}: {v['mse']:.3f} / {v['hold_mse']:.3f} / "
                f"{v['dream_motion']:.4f} / {v['real_motion']:.4f}"
            )
    return lines
