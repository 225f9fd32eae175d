"""Policies that run the learned models: V + M + C on real frames, C on dream latents."""

from __future__ import annotations

import numpy as np
import torch

from world_models.models.configs import ZMode
from world_models.models.controller import Controller, batched_raw
from world_models.policies.random import Policy, SeedLike, _rngs


class LatentPolicy(Policy):
    """C alone as a :class:`~world_models.policies.Policy` on ``[z, h]`` observations: what
    :class:`~world_models.envs.dream.DreamEnv` (or ``gymnasium.make`` of it, or a vector of
    them) gives, so the same loop that drives a real env with :class:`ControllerPolicy`
    drives dreams with this. (Batched CMA-ES in the dream bypasses both: see
    :class:`~world_models.envs.dream.BatchedDream`.)

    ``act(obs)`` takes (n, Z + H) float32 (or (Z + H,) for one env) and returns float32
    (n, A), or int64 (n,) for ``thirds`` (the Discrete(3) of DreamEnv's Doom preset). A
    controller that reads the cell takes ``[z, c, h]`` (n, Z + 2H): make the DreamEnv with
    ``observe_cell=True``.
    """

    def __init__(self, controller: Controller) -> None:
        self.controller = controller.eval()
        c = controller  # the dream's observation holds M's state even for a z-only C
        self._size = c.latent_size + c.hidden_size * (2 if c.cell_input else 1)

    def reset(self, n: int = 1, seed: SeedLike = None) -> None:
        """Nothing to reset: C has no state (M's state is the env's)."""

    @torch.no_grad()
    def act(self, obs) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs, np.float32)).reshape(-1, self._size)  # (n, Z+H)
        if not self.controller.hidden_input:
            x = x[:, : self.controller.latent_size]  # (n, Z)
        w = self.controller.fc.weight
        x = x.to(w.device, w.dtype)
        raw = torch.tanh(self.controller.fc(x))  # (n, A): fc reads x laid out as C expects
        return self.controller.mode.to_env(raw).cpu().numpy()


class ControllerPolicy(Policy):
    """V + M + C as a :class:`~world_models.policies.Policy` for a batch of real envs.

    Each ``act`` encodes the frames with V, lets C choose from ``[z_t, h_t]``, then advances
    M's LSTM on ``(z_t, a_t)`` per env (the hidden state is kept per env until ``reset``).

    ``z_mode="sample"`` (default) feeds C and M ``z = mu + sigma * eps``, as the original
    did and as M was trained (on re-sampled z) and dreams; ``"mu"`` feeds the posterior mean
    (ctallec's choice: less noisy, deterministic given the frames). The noise of env i comes
    from its own generator seeded by its reset seed, so an episode is a function of its
    seed whatever the batch it runs in.

    Population mode (CMA-ES in the real env): ``set_population(params (P, D))`` then
    ``reset(n, seed, candidates=(n,) indices)``: env i is driven by candidate
    ``candidates[i]``, all in one batched forward.
    """

    supports_active = True
    """``act`` takes an ``active`` mask and advances only those envs' state."""

    def __init__(
        self,
        vae,
        mdrnn,
        controller: Controller,
        device: torch.device | str | None = None,
        z_mode: ZMode = "sample",
    ) -> None:
        if z_mode not in ("sample", "mu"):
            raise ValueError(f"z_mode must be 'sample' or 'mu', got {z_mode!r}")
        if controller.latent_size != vae.latent_size or controller.latent_size != mdrnn.latent_size:
            raise ValueError(
                f"latent sizes differ: V {vae.latent_size}, M {mdrnn.latent_size}, "
                f"C {controller.latent_size}"
            )
        if controller.hidden_size != mdrnn.hidden_size:
            raise ValueError(
                f"C reads h of size {controller.hidden_size}, M's LSTM has {mdrnn.hidden_size}"
            )
        self.device = torch.device(device) if device is not None else vae.fc_mu.weight.device
        self.vae = vae.to(self.device).eval()
        self.mdrnn = mdrnn.to(self.device).eval()
        self.controller = controller.to(self.device).eval()
        self.z_mode = z_mode
        self.population: torch.Tensor | None = None
        self._w = self._b = None
        self._cand: torch.Tensor | None = None
        self._state = None
        self._rngs: list[np.random.Generator] = []

    def set_population(self, params: np.ndarray | torch.Tensor | None) -> None:
        """Candidate flat parameter vectors (P, D), or None to use ``controller``'s own."""
        if params is None:
            self.population = self._w = self._b = None
            return
        p = torch.as_tensor(np.asarray(params), dtype=torch.float32, device=self.device)
        self.population = p
        self._w, self._b = self.controller.unflatten(p)  # (P, A, Z+H), (P, A)

    def reset(self, n: int, seed: SeedLike = None, candidates=None) -> None:

        self._rngs = _rngs(n, seed)
        self._state = self.mdrnn.initial_state(n, self.device)
        if self.population is not None:
            if candidates is None:
                raise ValueError("a population needs candidates=(n,) indices in reset()")
            self._cand = torch.as_tensor(
                np.asarray(candidates), dtype=torch.long, device=self.device
            )
            if self._cand.shape != (n,):
                raise ValueError(f"expected {n} candidate indices, got {tuple(self._cand.shape)}")
        else:
            self._cand = None

    @torch.no_grad()
    def act(self, obs: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
        """(n, 64, 64, 3) uint8 -> float32 (n, A) or int64 (n,); ``active`` (n,) bool limits
        the work (and the state update) to those envs; the others get zeros."""
        if self._state is None:
            raise RuntimeError("call reset(n) before act()")
        n = len(self._rngs)
        if obs.shape[0] != n:
            raise ValueError(f"reset was for {n} envs, got {obs.shape[0]} frames")
        idx = np.arange(n) if active is None else np.flatnonzero(active)
        c = self.controller
        if c.mode.discrete:
            out = np.zeros(n, np.int64)  # (n,) indices
        else:
            out = np.zeros((n, c.output_size), np.float32)
        if len(idx) == 0:
            return out
        ti = torch.as_tensor(idx, device=self.device)
        mu, logvar = self.vae.encode_frames(np.ascontiguousarray(obs[idx]))  # (k, Z) each
        z = mu
        if self.z_mode == "sample":
            eps = np.stack([self._rngs[i].standard_normal(mu.shape[1]) for i in idx])
            z = mu + torch.exp(0.5 * logvar) * torch.as_tensor(
                eps, dtype=mu.dtype, device=self.device
            )
        h_all, c_all = self._state  # (1, n, H) each
        h, cell = h_all[0, ti], c_all[0, ti]  # (k, H) each
        if self._cand is None:
            action = c.act(z, h, cell)  # (k, A) or (k,)
        else:
            cand = self._cand[ti]  # (k,)
            x = c.inputs(z, h, cell)[:, None]  # (k, 1, I)
            raw = batched_raw(self._w[cand], self._b[cand], x)  # (k, 1, A)
            action = c.mode.to_env(raw[:, 0])
        a_m = c.mode.to_model(action, self.mdrnn.action_size)
        state = (h_all[:, ti], c_all[:, ti])  # (1, k, H) each
        new = self.mdrnn.step(z, a_m, state).state
        h_all[:, ti], c_all[:, ti] = new[0], new[1]
        out[idx] = action.cpu().numpy()
        return out
