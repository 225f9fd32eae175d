"""The dream: M (the MDN-RNN) as an environment, one at a time or thousands as one tensor.

* :class:`DreamEnv` is a ``gymnasium.Env``, registered as ``WorldModels/Dream-v0`` when
  this module is imported; ``gymnasium.make("world_models.envs.dream:WorldModels/Dream-v0",
  mdrnn=..., vae=..., initial_mu=...)`` imports it on the way. Its observation is
  ``[z, h]`` (what C reads), float32 of size Z + H; ``render()`` decodes z with V's
  decoder to a (64, 64, 3) uint8 frame.
* :class:`BatchedDream` steps N dreams at once (one LSTM cell over (N, Z+A), batched MDN
  sampling, done masks) and evaluates P controller candidates x R rollouts in one batch:
  what CMA-ES in the dream uses.

Rules, as in the original Doom experiment: each step samples z_{t+1} from M at temperature
tau; the episode *terminates* when M's done logit is > 0 (no done head: never) and is
*truncated* at ``max_steps`` (2100); the reward is M's reward head when it has one, else
+1 per step survived. Initial z are drawn from real first frames: one of the given
(mu, logvar) rows is picked and sampled (none given: z ~ N(0, I)).

Two options that depart from the original, both off by default here (the presets say
which they turn on, and why, in the README):

* ``done_mode="sample"``: the episode ends with M's *probability* of death, a Bernoulli of
  ``sigmoid(logit - log(done_pos_weight))``. The done head is trained with positives
  weighted by ``done_pos_weight`` (x10 for Doom), which multiplies its odds by that weight;
  subtracting its log gives the calibrated per-step hazard of the data. The threshold rule
  kills only where M is confident (p > 1 / 11 at weight 10), which a small M never is.
* ``dropout=True`` (M trained with ``dropout > 0``): one dropout mask on h per rollout,
  fixed for the whole rollout and shared by every candidate (Wellmer & Kwok 2021).
* ``done_offset``: added to M's done logit. A small M's imagined futures drift towards
  calm, fireball-free rooms where it predicts few deaths, so its dreams are easier than the
  game even with sampled deaths. :func:`calibrate_done_offset` finds the offset at which
  the random data policy survives in the dream as long as it did in the collected data:
  the dream's overall death rate is then the data's, while *where* death is likely (which
  states, which actions) is still M's. 0 by default.
"""

from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from world_models.core.errors import ConfigError
from world_models.models.actions import ActionMode, get_action_mode
from world_models.models.controller import Controller, batched_raw, controller_inputs
from world_models.models.mdrnn import sample_mixture

DREAM_ID = "WorldModels/Dream-v0"
DONE_MODES = ("threshold", "sample")


def dream_done(
    done_logit: torch.Tensor, mode: str, pos_weight: float, u: torch.Tensor | None
) -> torch.Tensor:
    """Which dreams end this step: (N,) bool from M's done logits (N,).

    ``threshold``: logit > 0 (the original). ``sample``: u < sigmoid(logit - log(pos_weight))
    with u (N,) uniform, i.e. logit - log(pos_weight) > logit(u) (no sigmoid, no sync).
    """
    if mode == "threshold":
        return done_logit > 0
    if mode != "sample":
        raise ValueError(f"done_mode must be one of {DONE_MODES}, got {mode!r}")
    u = u.clamp(1e-7, 1.0 - 1e-7)
    return done_logit - math.log(pos_weight) > torch.log(u) - torch.log1p(-u)


def calibrate_done_offset(
    dream: BatchedDream,
    policy,
    target_length: float,
    n: int = 200,
    seed: int = 0,
    action_mode: str | ActionMode = "thirds",
    iterations: int = 10,
    bounds: tuple[float, float] = (-4.0, 8.0),
) -> tuple[float, float]:
    """The done-logit offset at which ``policy`` (the random data policy) survives
    ``target_length`` steps on average in ``dream``, by bisection over ``bounds`` (a larger
    offset kills sooner). Every trial uses the same seed, so the search sees one set of
    starts and noise. Returns ``(offset, mean length at that offset)``; ``dream`` keeps its
    own offset."""
    keep = dream.done_offset
    lo, hi = bounds
    best = (keep, math.inf)
    try:
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            dream.done_offset = mid
            length = float(dream.play(policy, n, seed, action_mode)[1].mean())
            if abs(length - target_length) < abs(best[1] - target_length):
                best = (mid, length)
            if length > target_length:
                lo = mid  # survives too long: kill sooner
            else:
                hi = mid
    finally:
        dream.done_offset = keep
    return best


def _check_dream_options(mdrnn, done_mode: str, dropout: bool) -> None:
    """One-line :class:`ConfigError` (a ValueError) for dream settings that cannot work, so
    the commands that build dreams need no translation of their own."""
    if done_mode not in DONE_MODES:
        raise ConfigError(f"done_mode must be one of {DONE_MODES}, got {done_mode!r}")
    if dropout and mdrnn.config.dropout <= 0:
        raise ConfigError(
            "dream dropout needs an M trained with dropout > 0 (train-mdrnn --dropout)"
        )


def _initial(initial_mu, initial_logvar, latent_size: int, device) -> tuple[torch.Tensor, ...]:
    """Validated (E, Z) float32 initial mu and logvar on ``device`` (E = 0 when none)."""
    if initial_mu is None:
        empty = torch.zeros(0, latent_size, device=device)
        return empty, empty
    mu = (
        torch.as_tensor(np.asarray(initial_mu) if not torch.is_tensor(initial_mu) else initial_mu)
        .float()
        .to(device)
    )
    logvar = (
        torch.full_like(mu, -30.0)
        if initial_logvar is None
        else torch.as_tensor(
            np.asarray(initial_logvar) if not torch.is_tensor(initial_logvar) else initial_logvar
        )
        .float()
        .to(device)
    )
    if mu.dim() != 2 or mu.shape[1] != latent_size or logvar.shape != mu.shape or len(mu) == 0:
        raise ValueError(
            f"initial mu/logvar must be (E, {latent_size}) with E >= 1, got "
            f"{tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    return mu, logvar


class DreamEnv(gym.Env):
    """One dream driven by M. See the module docstring for the rules.

    Args:
        mdrnn: a trained :class:`~world_models.models.mdrnn.MDNRNN`.
        vae: its ConvVAE, only needed for ``render()``.
        initial_mu, initial_logvar: (E, Z) posteriors of real first frames (logvar None:
            exactly mu).
        tau: sampling temperature (the paper's best real Doom score came at 1.15).
        max_steps: truncation (2100 as the original).
        action_mode: the env's action mode (models/actions.py), by name or itself:
            ``thirds`` (Discrete(3): 0 stay, 1 left, 2 right, the Doom preset),
            ``carracing`` (Box [-1,0,0]..[1,1,1]), ``tanh`` (Box [-1, 1]^A), ...
        render_mode: None or ``"rgb_array"``.
        device: where M runs.
        done_mode: ``threshold`` (logit > 0, the original) or ``sample`` (module docstring).
        dropout: keep M's dropout on with one mask per episode (M trained with dropout).
        observe_cell: observations ``[z, c, h]`` for a controller that reads the cell.
        done_offset: added to M's done logit (see the module docstring).

    Observation: float32 ``[z_t, h_t]`` (Z + H,), or ``[z_t, c_t, h_t]`` (Z + 2H,) with
    ``observe_cell``. Info: ``{"z": ..., "done_logit": ...}``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 35}

    def __init__(
        self,
        mdrnn,
        vae=None,
        initial_mu=None,
        initial_logvar=None,
        tau: float = 1.0,
        max_steps: int = 2100,
        action_mode: str | ActionMode = "thirds",
        render_mode: str | None = None,
        device: str | torch.device = "cpu",
        done_mode: str = "threshold",
        dropout: bool = False,
        observe_cell: bool = False,
        done_offset: float = 0.0,
    ) -> None:
        _check_dream_options(mdrnn, done_mode, dropout)
        self.done_offset = float(done_offset)
        if tau < 0:
            raise ValueError(f"tau must be >= 0, got {tau}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if vae is None:
            if render_mode is not None:
                raise ValueError("render_mode 'rgb_array' needs V's decoder: pass vae=...")
            self.metadata = {**self.metadata, "render_modes": []}  # nothing to draw with
        self.device = torch.device(device)
        self.mdrnn = mdrnn.to(self.device).eval()
        self.vae = vae.to(self.device).eval() if vae is not None else None
        self.tau, self.max_steps, self.render_mode = float(tau), int(max_steps), render_mode
        self.mode = get_action_mode(action_mode)
        self.action_mode = self.mode.name
        self.done_mode, self.dropout, self.observe_cell = done_mode, bool(dropout), observe_cell
        self._mask: torch.Tensor | None = None
        z, h = mdrnn.latent_size, mdrnn.hidden_size
        self.init_mu, self.init_logvar = _initial(initial_mu, initial_logvar, z, self.device)
        size = z + h * (2 if observe_cell else 1)
        self.observation_space = spaces.Box(-np.inf, np.inf, (size,), np.float32)
        self.action_space: spaces.Space = self.mode.space(mdrnn.action_size)
        self._gen = torch.Generator(device=self.device)
        self._z: torch.Tensor | None = None
        self._state = None
        self._t = 0

    def _obs(self) -> np.ndarray:
        h, c = self._state[0][0, 0], self._state[1][0, 0]  # (H,) each
        x = controller_inputs(self._z[0], h, c, self.observe_cell)  # (Z + H,) or (Z + 2H,)
        return x.float().cpu().numpy()

    @torch.no_grad()
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._gen.manual_seed(int(self.np_random.integers(2**62)))
        zs = self.mdrnn.latent_size
        eps = torch.randn(1, zs, generator=self._gen, device=self.device)
        if len(self.init_mu):
            i = int(self.np_random.integers(len(self.init_mu)))
            self._z = self.init_mu[i : i + 1] + torch.exp(0.5 * self.init_logvar[i : i + 1]) * eps
        else:
            self._z = eps  # (1, Z)
        self._state = self.mdrnn.initial_state(1, self.device)
        self._mask = self.mdrnn.dropout_mask(1, self._gen) if self.dropout else None
        self._t = 0
        return self._obs(), {"z": self._z[0].cpu().numpy()}

    @torch.no_grad()
    def step(self, action):
        if self._z is None:
            raise RuntimeError("call reset() before step()")
        if self.mode.discrete:
            a = torch.as_tensor([int(action)], device=self.device)  # (1,)
        else:
            a = torch.as_tensor(np.asarray(action, np.float32), device=self.device)[None]
        a_m = self.mode.to_model(a, self.mdrnn.action_size)  # (1, A_m)
        out = self.mdrnn.step(self._z, a_m, self._state, self._mask)
        self._z = self.mdrnn.sample(out, self.tau, generator=self._gen)  # (1, Z)
        self._state = out.state
        self._t += 1
        reward = float(out.reward[0]) if out.reward is not None else 1.0
        logit = float(out.done_logit[0]) if out.done_logit is not None else -math.inf
        terminated = False
        if out.done_logit is not None:
            u = torch.rand(1, generator=self._gen, device=self.device)
            pos_weight = self.mdrnn.config.done_pos_weight
            logit_t = out.done_logit + self.done_offset
            terminated = bool(dream_done(logit_t, self.done_mode, pos_weight, u)[0])
        truncated = self._t >= self.max_steps and not terminated
        info = {"z": self._z[0].cpu().numpy(), "done_logit": logit}
        return self._obs(), reward, terminated, truncated, info

    @torch.no_grad()
    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self.vae is None:
            raise ValueError("DreamEnv.render() needs the VAE: pass vae=...")
        if self._z is None:
            raise RuntimeError("call reset() before render()")
        img = self.vae.decode(self._z.to(self.vae.fc_mu.weight.dtype))[0]  # (3, 64, 64)
        return (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


if DREAM_ID not in gym.registry:
    gym.register(id=DREAM_ID, entry_point="world_models.envs.dream:DreamEnv")


class BatchedDream:
    """N dreams stepped as one tensor operation; see the module docstring for the rules.

    Low level: ``z, h = reset(n, generator)`` then ``step(action_m, noise)`` repeatedly
    (state kept inside). High level: :meth:`evaluate` runs P controller candidates x R
    rollouts to the end and returns their returns (P, R).

    CUDA graphs (``cuda_graph=True``, CUDA devices only; not yet run on a GPU by us): the
    whole loop body of :meth:`evaluate` (noise, controller, LSTM cell, mixture sampling,
    returns and done masks) is captured for ``GRAPH_STEPS`` steps at a time and replayed,
    so a generation costs a few dozen graph launches instead of ~60 kernel launches per
    step. The capture is kept for the next call with the same shapes (CMA-ES calls it once
    per generation with new parameters). Replays draw the same random numbers as the eager
    loop (the generator is registered with the graph), so both give the same returns.
    """

    GRAPH_STEPS = 50
    """Steps captured in one graph: long enough to hide launch costs, short enough to
    capture in well under a second and to stop soon after every dream has ended."""

    def __init__(
        self,
        mdrnn,
        initial_mu=None,
        initial_logvar=None,
        tau: float = 1.0,
        max_steps: int = 2100,
        device: str | torch.device | None = None,
        cuda_graph: bool = False,
        done_mode: str = "threshold",
        dropout: bool = False,
        done_offset: float = 0.0,
    ) -> None:
        if tau < 0 or max_steps < 1:
            raise ConfigError(f"need tau >= 0 and max_steps >= 1, got {tau}, {max_steps}")
        _check_dream_options(mdrnn, done_mode, dropout)
        self.done_mode, self.dropout = done_mode, bool(dropout)
        self.done_offset = float(done_offset)
        self.device = torch.device(device) if device is not None else mdrnn.lstm.weight_hh_l0.device
        self.mdrnn = mdrnn.to(self.device).eval()
        self.tau, self.max_steps = float(tau), int(max_steps)
        self.init_mu, self.init_logvar = _initial(
            initial_mu, initial_logvar, mdrnn.latent_size, self.device
        )
        self.cuda_graph = bool(cuda_graph) and self.device.type == "cuda"
        self.z: torch.Tensor | None = None
        self.state = None
        self._loops: dict[tuple, _Loop] = {}  # by shape, kept between calls with their graphs

    # ------------------------------------------------------------------ low level
    def initial_z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, Z) initial latents: a random real first frame's posterior, sampled."""
        zs = self.mdrnn.latent_size
        eps = torch.randn(n, zs, generator=generator, device=self.device)  # (n, Z)
        if not len(self.init_mu):
            return eps
        i = torch.randint(len(self.init_mu), (n,), generator=generator, device=self.device)
        return self.init_mu[i] + torch.exp(0.5 * self.init_logvar[i]) * eps

    def reset(
        self, n: int, generator: torch.Generator | None = None, z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Start n dreams (from ``z`` (n, Z) when given); returns z (n, Z) and h (n, H).

        With ``dropout``, each dream also gets its own mask (``self.mask``, (n, H))."""
        self.z = self.initial_z(n, generator) if z is None else z.to(self.device).float()
        self.state = self.mdrnn.initial_state(n, self.device)
        self.mask = self.mdrnn.dropout_mask(n, generator) if self.dropout else None
        return self.z, self.state[0][0]

    def noise(self, n: int, generator: torch.Generator | None = None):
        """The sampling noise of one step for n dreams: u (n, Z, K), eps (n, Z), and u_done
        (n,) for ``done_mode="sample"`` (else None). At tau 0 (each mixture's top mean) u
        and eps are None: nothing is drawn for them."""
        if self.tau == 0:
            return None, None, self.done_noise(n, generator)
        zs, k = self.mdrnn.latent_size, self.mdrnn.num_gaussians
        u = torch.rand(n, zs, k, generator=generator, device=self.device)
        eps = torch.randn(n, zs, generator=generator, device=self.device)
        return u, eps, self.done_noise(n, generator)

    def done_noise(self, n: int, generator: torch.Generator | None = None):
        """(n,) uniform noise of the done draw for ``done_mode="sample"``, else None."""
        if self.done_mode != "sample":
            return None
        return torch.rand(n, generator=generator, device=self.device)

    def transition(self, z, state, action_m, noise, mask=None):
        """One step of n dreams, pure (nothing stored): what :meth:`step` and
        :meth:`evaluate` share.

        ``noise`` is ``(u, eps, u_done)`` of n rows, or of m rows shared by the n / m
        groups of m consecutive dreams (candidates x rollouts: common random numbers, no
        copies). ``mask``: (n, H) dropout masks or None.

        Returns ``(z_next, state, reward, terminated)``: (n, Z), (h, c) each (1, n, H),
        (n,), (n,) bool.
        """
        n = z.shape[0]
        out = self.mdrnn.step(z, action_m.to(z.dtype), state, mask)
        u, eps, u_done = noise if len(noise) == 3 else (*noise, None)
        m = n if u is None else u.shape[0]
        if m == n:
            z_next = sample_mixture(
                out.logpi, out.mu, out.logsigma, self.tau, u, eps, out.shared
            )  # (n, Z)
        else:  # common noise: rows i, i + m, i + 2m, ... share noise row i (m = len(u))
            g = (n // m, m)  # (P, R)
            mix = [x.view(*g, *x.shape[1:]) for x in (out.logpi, out.mu, out.logsigma)]
            z_next = sample_mixture(*mix, self.tau, u, eps, out.shared)  # (P, R, Z)
            z_next = z_next.reshape(n, -1)  # (n, Z)
        reward = out.reward if out.reward is not None else torch.ones(n, device=z.device)
        if out.done_logit is not None:
            if self.done_mode == "sample" and u_done is None:
                raise ValueError("done_mode 'sample' needs u_done in the noise")
            logit = (out.done_logit + self.done_offset).view(-1, m)  # (n / m, m)
            ud = None if u_done is None else u_done.view(1, m)
            pos_weight = self.mdrnn.config.done_pos_weight
            done = dream_done(logit, self.done_mode, pos_weight, ud).reshape(n)
        else:
            done = torch.zeros(n, dtype=torch.bool, device=z.device)
        return z_next, out.state, reward, done

    @torch.no_grad()
    def step(self, action_m: torch.Tensor, noise=None, generator: torch.Generator | None = None):
        """Advance every dream by M's input actions ``action_m`` (n, A_m).

        ``noise``: as in :meth:`transition` (None: drawn from ``generator``).

        Returns ``(z, h, reward, terminated)``: (n, Z), (n, H), (n,), (n,) bool.
        """
        if noise is None:
            noise = self.noise(self.z.shape[0], generator)
        mask = getattr(self, "mask", None)
        self.z, self.state, reward, done = self.transition(
            self.z, self.state, action_m, noise, mask
        )
        return self.z, self.state[0][0], reward, done

    # ------------------------------------------------------------------ any policy
    @torch.no_grad()
    def play(
        self,
        policy,
        n: int,
        seed: int = 0,
        action_mode: str | ActionMode = "thirds",
        observe_cell: bool = False,
        record: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """n dreams driven by any :class:`~world_models.policies.Policy` (a random data
        policy, a constant action, :class:`~world_models.policies.controller.LatentPolicy`).

        The policy sees ``[z, h]`` (or ``[z, c, h]`` with ``observe_cell``) as (n, I)
        float32 and returns env actions (int64 (n,) for a discrete ``action_mode`` such as
        ``thirds``, float32 (n, A) otherwise). The initial z and every step's sampling
        noise come from one generator seeded by ``seed`` and never depend on the actions,
        so two policies played with the same seed and n meet the same starts and the same
        noise: what the fidelity check uses to ask whether the dream responds to the
        action. One host sync per step: for scoring a controller population,
        :meth:`evaluate` is the fast path.

        Returns returns (n,) float64 and lengths (n,) int64; with ``record``,
        ``last_recording`` holds the z of every step, (T + 1, n, Z) on the CPU.
        """
        mode = get_action_mode(action_mode)
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        z, _ = self.reset(n, gen)
        policy.reset(n, seed=int(seed))
        returns = torch.zeros(n, dtype=torch.float64, device=self.device)
        lengths = torch.zeros(n, dtype=torch.long, device=self.device)
        alive = torch.ones(n, dtype=torch.bool, device=self.device)
        traj = [z.cpu()] if record else []
        for _ in range(self.max_steps):
            h, c = self.state[0][0], self.state[1][0]  # (n, H) each
            obs = controller_inputs(self.z, h, c, observe_cell).float().cpu().numpy()
            action = torch.as_tensor(np.asarray(policy.act(obs)), device=self.device)
            a_m = mode.to_model(action, self.mdrnn.action_size)  # (n, A_m)
            noise = self.noise(n, gen)
            z, _, reward, done = self.step(a_m.float(), noise)
            returns += reward.double() * alive
            lengths += alive
            alive &= ~done
            if record:
                traj.append(z.cpu())
            if not bool(alive.any()):
                break
        if record:
            self.last_recording = torch.stack(traj)  # (T + 1, n, Z)
        return returns.cpu().numpy(), lengths.cpu().numpy()

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(
        self,
        controller: Controller,
        params,
        rollouts: int,
        seed: int = 0,
        check_every: int = 50,
        record: list[int] | None = None,
    ) -> torch.Tensor:
        """Returns (P, R) of P candidates ``params`` (P, D) over R rollouts each.

        Common random numbers: rollout r starts from the same initial z and sees the same
        sampling noise for every candidate (so candidates differ by their policy, not by
        luck). Finished dreams keep stepping (masked) so shapes stay fixed; the loop stops
        early once all are done, checked every ``check_every`` steps (one host sync).

        Afterwards ``last_lengths`` (P, R) holds each dream's steps, and with ``record``
        (rollout indices of candidate 0) ``last_recording`` holds their z trajectories,
        one (T + 1, Z) tensor each (the initial z, then one per step until the end).
        Recording always runs eagerly.
        """
        params = torch.as_tensor(
            np.asarray(params) if not torch.is_tensor(params) else params,
            dtype=torch.float32,
            device=self.device,
        )
        if params.dim() == 1:
            params = params[None]
        p, r = params.shape[0], int(rollouts)
        check_every = max(1, int(check_every))
        w, b = controller.unflatten(params)  # (P, A, Z+H), (P, A)
        device_ctx = torch.cuda.device(self.device) if self.device.type == "cuda" else nullcontext()
        with device_ctx:  # a graph captures on the current device's streams
            returns, loop = self._run(controller, w, b, r, seed, check_every, record)
        # copies: the loop's buffers are overwritten by the next call of the same shape
        self.z, self.state = loop.z.clone(), (loop.h.clone(), loop.c.clone())
        self.last_lengths = loop.lengths.view(p, r).clone()
        return returns

    def _run(self, controller, w, b, r, seed, check_every, record):
        p = w.shape[0]
        key = (p, r, controller.action_mode, tuple(w.shape))
        if key not in self._loops:
            if len(self._loops) >= 4:  # e.g. a generation's shape and the mean's 1 x 1024
                self._loops.pop(next(iter(self._loops)))
            self._loops[key] = _Loop(self, controller, p, r)
        loop = self._loops[key]
        chunk = min(self.GRAPH_STEPS, check_every, self.max_steps)
        graphed = self.cuda_graph and not record
        if graphed and not (loop.graph and loop.graph.fits(chunk, self)):
            try:  # before seeding: warm-up and capture draw noise
                loop.graph = None
                loop.graph = _GraphedSteps(loop, chunk)
            except Exception as e:  # an unsupported op, torch or driver: still right, eagerly
                warnings.warn(f"CUDA graph capture failed, dreaming eagerly: {e}", stacklevel=3)
                self.cuda_graph = graphed = False
                # a fresh loop: the failed capture may have left its generator unusable
                loop = self._loops[key] = _Loop(self, controller, p, r)
        loop.gen.manual_seed(int(seed))
        z0 = self.initial_z(r, loop.gen)  # (R, Z): shared by all candidates
        loop.load(w, b, z0)
        rec = torch.as_tensor(record or [], dtype=torch.long, device=self.device)
        traj = [loop.z[rec].clone()] if record else []  # list of (k, Z)
        t = since_check = 0
        while t < self.max_steps:
            if graphed and t + chunk <= self.max_steps:
                loop.graph.replay()
                done_now = chunk
            else:
                loop.advance()
                done_now = 1
                if record:
                    traj.append(loop.z[rec].clone())
            t += done_now
            since_check += done_now
            if since_check >= check_every and t < self.max_steps:
                since_check = 0
                if not bool(loop.alive.any()):
                    break
        if record:
            steps = torch.stack(traj, dim=1)  # (k, T + 1, Z)
            n = loop.lengths[rec].tolist()
            self.last_recording = [steps[i, : n[i] + 1] for i in range(len(n))]
        return loop.returns.view(p, r).clone(), loop


class _Loop:
    """The state of :meth:`BatchedDream.evaluate` for P candidates x R rollouts.

    Every tensor is preallocated and updated in place by :meth:`advance`, so a CUDA graph
    captured over it reads and writes the same memory on every replay (a graph replays
    fixed addresses: rebinding a Python name inside it would never be seen).
    """

    def __init__(self, dream: BatchedDream, controller: Controller, p: int, r: int):
        m, dev = dream.mdrnn, dream.device
        self.dream, self.p, self.r = dream, p, r
        self.graph: _GraphedSteps | None = None
        self.mode, self.a_size = controller.mode, m.action_size
        self.cell_input, self.inputs = controller.cell_input, controller.inputs
        a, i = controller.output_size, controller.input_size
        self.w = torch.zeros(p, a, i, device=dev)  # (P, A, I)
        self.b = torch.zeros(p, a, device=dev)  # (P, A)
        self.z = torch.zeros(p * r, m.latent_size, device=dev)  # (P*R, Z)
        self.h, self.c = m.initial_state(p * r, dev)  # (1, P*R, H) each
        self.returns = torch.zeros(p * r, device=dev)
        self.lengths = torch.zeros(p * r, dtype=torch.long, device=dev)
        self.alive = torch.ones(p * r, dtype=torch.bool, device=dev)
        self.mask = torch.ones(p * r, m.hidden_size, device=dev) if dream.dropout else None
        self.gen = torch.Generator(device=dev)

    def load(self, w, b, z0) -> None:
        """Start: parameters (P, A, I), (P, A); initial z (R, Z) shared by the P (and, with
        dropout, one mask per rollout, also shared by the P)."""
        self.w.copy_(w)
        self.b.copy_(b)
        self.z.view(self.p, self.r, -1).copy_(z0)  # broadcast over P
        if self.mask is not None:
            masks = self.dream.mdrnn.dropout_mask(self.r, self.gen)  # (R, H)
            self.mask.view(self.p, self.r, -1).copy_(masks)
        self.h.zero_()
        self.c.zero_()
        self.returns.zero_()
        self.lengths.zero_()
        self.alive.fill_(True)

    def advance(self) -> None:
        """One step of every dream, in place; no host sync, no data-dependent shape."""
        p, r = self.p, self.r
        # (R, Z, K), (R, Z): shared by the P; tau 0 takes each mixture's top mean, no noise
        u, eps, u_done = self.dream.noise(r, self.gen)
        z, h = self.z.view(p, r, -1), self.h[0].view(p, r, -1)  # (P, R, Z), (P, R, H)
        c = self.c[0].view(p, r, -1) if self.cell_input else None  # (P, R, H)
        x = self.inputs(z, h, c)  # (P, R, I)
        action = self.mode.to_env(batched_raw(self.w, self.b, x))  # (P, R[, A])
        a_m = self.mode.to_model(action, self.a_size).reshape(p * r, self.a_size)
        z_next, (h_next, c_next), reward, done = self.dream.transition(
            self.z, (self.h, self.c), a_m, (u, eps, u_done), self.mask
        )
        self.z.copy_(z_next)
        self.h.copy_(h_next)
        self.c.copy_(c_next)
        self.returns.add_(reward * self.alive)
        self.lengths.add_(self.alive)
        self.alive.logical_and_(~done)


class _GraphedSteps:
    """``steps`` calls of :meth:`_Loop.advance` captured as one CUDA graph.

    The rules of ``torch.cuda.graphs``: warm up on a side stream first (lazy inits,
    cuBLAS workspaces), then capture; the loop's generator is registered with the graph so
    each replay draws fresh numbers (at the generator's current offset, as eager code
    would). Warm-up and capture leave the loop's buffers and generator in an arbitrary
    state: :meth:`BatchedDream.evaluate` seeds and loads them afterwards.
    """

    def __init__(self, loop: _Loop, steps: int) -> None:
        self.steps, self.key = steps, self.key_of(steps, loop.dream)
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(loop.gen)
        current = torch.cuda.current_stream(loop.dream.device)
        side = torch.cuda.Stream(loop.dream.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(3):
                loop.advance()
        current.wait_stream(side)
        torch.cuda.synchronize(loop.dream.device)
        with torch.cuda.graph(self.graph):
            for _ in range(steps):
                loop.advance()

    def fits(self, steps: int, dream: BatchedDream) -> bool:
        """Still the right graph: same length, and tau and M's weights (which the graph
        reads at fixed addresses) have not been replaced since the capture."""
        return self.key_of(steps, dream) == self.key

    @staticmethod
    def key_of(steps: int, dream: BatchedDream) -> tuple:
        """What a capture bakes in: its length, tau, the done offset and M's weights."""
        return (steps, dream.tau, dream.done_offset, _weights(dream.mdrnn))

    def replay(self) -> None:
        self.graph.replay()


def _weights(module: torch.nn.Module) -> tuple:
    return tuple((p.data_ptr(), p.dtype) for p in module.parameters())
