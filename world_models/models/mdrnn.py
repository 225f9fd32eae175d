"""M: the MDN-RNN, an LSTM over ``[z_t, a_t]`` predicting ``z_{t+1}`` as a Gaussian mixture.

As in the original (Ha & Schmidhuber), the mixture is *per latent dimension*: each of the
Z dimensions of z_{t+1} has its own K mixture weights, means and log-stds, so the head is
``Linear(hidden -> Z * K * 3)`` (plus one output per optional reward / done head). The
popular PyTorch port shares one set of K weights across all dimensions instead; that is an
option here (``shared_mixture``: head ``K + Z * K * 2``, one component drawn per step for
the whole z), off by default.

Two ways to run the same weights:

* :meth:`MDNRNN.forward` over whole sequences (B, T, ...) with ``nn.LSTM`` (cuDNN on GPU):
  what training uses.
* :meth:`MDNRNN.step` (or :class:`MDNRNNCell`) one step for N environments or dreams at
  once, computing the LSTM gates from the *same* ``nn.LSTM`` parameters: what the
  controller and the dream use. Both take and return the state in ``nn.LSTM``'s layout,
  ``(h, c)`` each (1, N, hidden), so a real prefix can be run with ``forward`` and the
  dream continued with ``step``; ``state[0][0]`` is the (N, hidden) h the controller reads.

Conventions of one transition t: the input is (z_t, a_t); the outputs predict z_{t+1},
the reward received after a_t, and whether the episode *terminated* after a_t.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from world_models.core.checkpoint import PretrainedMixin
from world_models.models.configs import MDNRNNConfig

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

LSTMState = tuple[torch.Tensor, torch.Tensor]
"""``(h, c)``, each (1, N, hidden): ``nn.LSTM``'s layout for one layer."""


class MDNOutput(NamedTuple):
    """What :meth:`MDNRNN.forward` (shapes below) and :meth:`MDNRNN.step` (no T axis) return.

    ``logpi`` (B, T, Z, K) log mixture weights (normalised over K); ``mu`` and ``logsigma``
    (B, T, Z, K) each component's mean and log standard deviation; ``reward`` (B, T) or
    ``None``; ``done_logit`` (B, T) or ``None``; ``state`` the LSTM state after the last step;
    ``shared`` whether the weights are one row for every dimension (``shared_mixture``).
    """

    logpi: torch.Tensor
    mu: torch.Tensor
    logsigma: torch.Tensor
    reward: torch.Tensor | None
    done_logit: torch.Tensor | None
    state: LSTMState
    shared: bool = False


class MDNRNN(PretrainedMixin, nn.Module):
    """LSTM + mixture density head: p(z_{t+1} | z_<=t, a_<=t) = prod_z sum_k pi N(mu, sigma).

    Shapes: ``z`` (B, T, Z), ``action`` (B, T, A); outputs in :class:`MDNOutput`.

    Built from an :class:`MDNRNNConfig` (None: its defaults, the CarRacing M), with any of
    its fields by name on top: ``MDNRNN(MDNRNN_PRESETS["doom"])``,
    ``MDNRNN(latent_size=4, action_size=1, hidden_size=8)``.
    """

    config_class = MDNRNNConfig

    def __init__(self, config: MDNRNNConfig | None = None, **fields: Any) -> None:
        super().__init__()
        self.config: MDNRNNConfig = self.config_with(config, fields)
        c = self.config
        self.latent_size, self.action_size = c.latent_size, c.action_size
        self.hidden_size, self.num_gaussians = c.hidden_size, c.num_gaussians
        self.lstm = nn.LSTM(c.latent_size + c.action_size, c.hidden_size, batch_first=True)
        extra = int(c.reward_head) + int(c.done_head)
        z, k = c.latent_size, c.num_gaussians
        mixture = k + z * k * 2 if c.shared_mixture else z * k * 3
        self.head = nn.Linear(c.hidden_size, mixture + extra)

    # ------------------------------------------------------------------ checks
    def _check_inputs(self, z: torch.Tensor, action: torch.Tensor, step: bool) -> None:
        lead = "(N, " if step else "(B, T, "
        ndim = 2 if step else 3
        for name, x, size in (("z", z, self.latent_size), ("action", action, self.action_size)):
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"expected {name} as a torch.Tensor, got {type(x).__name__}")
            if x.dim() != ndim or x.shape[-1] != size:
                hint = ""
                if not step and x.dim() == 2 and x.shape[-1] == size:
                    hint = "; for one step per sequence use step(), or add T with unsqueeze(1)"
                elif x.dim() == ndim - 1 and name == "action" and size == 1:
                    hint = "; add the action dimension with action.unsqueeze(-1)"
                raise ValueError(
                    f"expected {name} of shape {lead}{size}), got {tuple(x.shape)}{hint}"
                )
            if not x.is_floating_point():
                raise ValueError(f"expected floating-point {name}, got dtype {x.dtype}")
        if z.shape[:-1] != action.shape[:-1]:
            raise ValueError(
                f"z and action disagree on the leading dimensions: z {tuple(z.shape)}, "
                f"action {tuple(action.shape)}"
            )

    def _check_state(self, state: LSTMState | None, batch: int) -> None:
        if state is None:
            return
        expected = (1, batch, self.hidden_size)
        if (
            not isinstance(state, (tuple, list))
            or len(state) != 2
            or any(tuple(s.shape) != expected for s in state)
        ):
            shapes = [tuple(s.shape) for s in state] if isinstance(state, (tuple, list)) else state
            raise ValueError(f"expected state (h, c) each of shape {expected}, got {shapes}")

    # ------------------------------------------------------------------ model
    def initial_state(self, batch: int, device: torch.device | str | None = None) -> LSTMState:
        """Zero ``(h, c)``, each (1, batch, hidden), on the model's device by default."""
        w = self.lstm.weight_hh_l0
        device = w.device if device is None else device
        h = torch.zeros(1, batch, self.hidden_size, device=device, dtype=w.dtype)
        return h, h.clone()

    def _split_head(self, out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Split head outputs (..., Z*K*3 + extra) into the mixture and the optional heads."""
        z, k = self.latent_size, self.num_gaussians
        if self.config.shared_mixture:
            n = k + z * k * 2
            logpi = F.log_softmax(out[..., :k], dim=-1).unsqueeze(-2)  # (..., 1, K)
            logpi = logpi.expand(*logpi.shape[:-2], z, k)  # (..., Z, K): one row, Z views
            mix = out[..., k:n].unflatten(-1, (2, z, k))  # (..., 2, Z, K)
            mu, logsigma = mix[..., 0, :, :], mix[..., 1, :, :]
        else:
            n = z * k * 3
            mix = out[..., :n].unflatten(-1, (3, z, k))  # (..., 3, Z, K)
            logpi = F.log_softmax(mix[..., 0, :, :], dim=-1)  # (..., Z, K) normalised over K
            mu, logsigma = mix[..., 1, :, :], mix[..., 2, :, :]  # (..., Z, K) each
        i = n
        reward = done = None
        if self.config.reward_head:
            reward, i = out[..., i], i + 1  # (...)
        if self.config.done_head:
            done = out[..., i]  # (...)
        return logpi, mu, logsigma, reward, done

    def forward(
        self, z: torch.Tensor, action: torch.Tensor, state: LSTMState | None = None
    ) -> MDNOutput:
        """Run the LSTM over whole sequences (teacher forcing) and predict every next z.

        Args:
            z: (B, T, Z) latents z_0..z_{T-1}.
            action: (B, T, A) actions a_0..a_{T-1}.
            state: optional ``(h, c)`` each (1, B, hidden) to start from (zeros if None).
        Returns:
            :class:`MDNOutput` whose step t predicts z_{t+1}: logpi, mu, logsigma
            (B, T, Z, K); reward, done_logit (B, T) or None; state each (1, B, hidden).
        """
        self._check_inputs(z, action, step=False)
        self._check_state(state, z.shape[0])
        x = torch.cat([z, action.to(z.dtype)], dim=-1)  # (B, T, Z + A)
        # The LSTM always runs in float32 (TF32 on recent GPUs): CUDA autocast runs cuDNN
        # RNNs in float16 whatever dtype it was given (ATen's AutocastRNN.cpp), and M's
        # gradients at the LSTM are small enough to underflow there without a GradScaler.
        # The head, where most of the FLOPs are, still runs under the caller's autocast.
        with torch.autocast(x.device.type, enabled=False):
            state = None if state is None else tuple(s.float() for s in state)
            h, new_state = self.lstm(x.float(), state)  # (B, T, H)
        if self.config.dropout > 0:
            h = F.dropout(h, self.config.dropout, self.training)
        logpi, mu, logsigma, reward, done = self._split_head(self.head(h))
        return MDNOutput(logpi, mu, logsigma, reward, done, new_state, self.config.shared_mixture)

    def step(
        self,
        z: torch.Tensor,
        action: torch.Tensor,
        state: LSTMState | None = None,
        head_mask: torch.Tensor | None = None,
    ) -> MDNOutput:
        """One step for N sequences at once, with the sequence model's own LSTM weights.

        The gates are computed from ``lstm.weight_ih_l0`` etc. directly (``torch.lstm_cell``),
        so no weights are copied and training updates are seen at once.

        Args:
            z: (N, Z) current latents; action: (N, A) actions taken.
            state: ``(h, c)`` each (1, N, hidden), or None for zeros.
            head_mask: optional (N, hidden) multiplier of h before the heads (a dream's fixed
                dropout mask, already scaled by 1 / (1 - p)); the state itself is unmasked.
        Returns:
            :class:`MDNOutput` for z_{t+1}: logpi, mu, logsigma (N, Z, K); reward,
            done_logit (N,) or None; state each (1, N, hidden) (``state[0][0]`` is h).
        """
        self._check_inputs(z, action, step=True)
        self._check_state(state, z.shape[0])
        if state is None:
            state = self.initial_state(z.shape[0], z.device)
        lstm = self.lstm
        x = torch.cat([z, action.to(z.dtype)], dim=-1)  # (N, Z + A)
        h, c = torch.lstm_cell(
            x,
            (state[0][0], state[1][0]),
            lstm.weight_ih_l0,
            lstm.weight_hh_l0,
            lstm.bias_ih_l0,
            lstm.bias_hh_l0,
        )  # (N, H) each
        h_head = h if head_mask is None else h * head_mask  # (N, H)
        logpi, mu, logsigma, reward, done = self._split_head(self.head(h_head))
        state = (h.unsqueeze(0), c.unsqueeze(0))
        return MDNOutput(logpi, mu, logsigma, reward, done, state, self.config.shared_mixture)

    def dropout_mask(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, hidden) fixed dropout masks for :meth:`step`, scaled by 1 / (1 - p)."""
        p, w = self.config.dropout, self.lstm.weight_hh_l0
        keep = torch.rand(n, self.hidden_size, generator=generator, device=w.device) >= p
        return keep.to(w.dtype) / (1.0 - p)

    # ------------------------------------------------------------------ loss
    def loss(
        self,
        output: MDNOutput,
        z_next: torch.Tensor,
        reward: torch.Tensor | None = None,
        done: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        next_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The training loss as named parts, computed in float32 even under autocast.

        ``nll`` is ``-log sum_k pi_k N(z_next | mu_k, sigma_k)`` per latent dimension (via
        logsumexp), averaged over batch, time and dimensions (with ``shared_mixture``, ``-log
        sum_k pi_k prod_z N(...)`` divided by Z, so both read in nats per dimension);
        ``reward`` the MSE and ``done`` the BCE-with-logits (positives weighted by
        ``done_pos_weight``), each averaged over steps;
        ``total = nll + reward_weight * reward + done_weight * done``. Parts of heads the
        model lacks are absent (a given ``reward`` / ``done`` is then ignored).

        Args:
            output: :meth:`forward`'s output (B, T, ...).
            z_next: (B, T, Z) targets z_1..z_T.
            reward: (B, T) rewards, needed with a reward head.
            done: (B, T) termination flags (bool or 0/1), needed with a done head.
            mask: (B, T) true for real steps, false for padding (default: all real).
            next_mask: (B, T) false where z_next is unknown although the step is real (the
                last step of an episode: its reward and done still train); default all true.
        Returns:
            dict with ``nll``, ``reward`` and ``done`` (if the heads exist), ``total``.
        """
        b, t = output.logpi.shape[:2]
        if z_next.shape != (b, t, self.latent_size):
            raise ValueError(
                f"expected z_next of shape {(b, t, self.latent_size)} to match the output, "
                f"got {tuple(z_next.shape)}"
            )
        for name, m in (
            ("mask", mask),
            ("next_mask", next_mask),
            ("reward", reward),
            ("done", done),
        ):
            if m is not None and tuple(m.shape) != (b, t):
                raise ValueError(f"expected {name} of shape {(b, t)}, got {tuple(m.shape)}")
        step_w = torch.ones(b, t, device=z_next.device) if mask is None else mask.float()
        nll_w = step_w if next_mask is None else step_w * next_mask.float()  # (B, T)

        logpi, mu = output.logpi.float(), output.mu.float()
        logsigma = output.logsigma.float()
        target = z_next.float().unsqueeze(-1)  # (B, T, Z, 1)
        log_normal = (
            -0.5 * ((target - mu) * torch.exp(-logsigma)).pow(2) - logsigma - _LOG_SQRT_2PI
        )  # (B, T, Z, K)
        if self.config.shared_mixture:  # one component for the whole z: sum dims, then mix
            joint = logpi[..., 0, :] + log_normal.sum(dim=-2)  # (B, T, K)
            nll = -torch.logsumexp(joint, dim=-1).unsqueeze(-1)  # (B, T, 1): Z dims' nats
        else:
            nll = -torch.logsumexp(logpi + log_normal, dim=-1)  # (B, T, Z)
        # Padded steps must hold finite values (loaders repeat a real frame); weight 0 drops them.
        nll = nll * nll_w.unsqueeze(-1)  # (B, T, Z) or (B, T, 1)
        parts = {"nll": nll.sum() / (nll_w.sum() * self.latent_size).clamp(min=1.0)}
        total = parts["nll"]
        steps = step_w.sum().clamp(min=1.0)
        if self.config.reward_head:
            if reward is None:
                raise ValueError("this model has a reward head: pass reward (B, T) to loss()")
            err = (output.reward.float() - reward.float()).pow(2) * step_w  # (B, T)
            parts["reward"] = err.sum() / steps
            total = total + self.config.reward_weight * parts["reward"]
        if self.config.done_head:
            if done is None:
                raise ValueError("this model has a done head: pass done (B, T) to loss()")
            # a fill, not torch.tensor(): copying a Python number to a GPU syncs the stream
            pos_weight = torch.full((), self.config.done_pos_weight, device=z_next.device)
            bce = F.binary_cross_entropy_with_logits(
                output.done_logit.float(), done.float(), pos_weight=pos_weight, reduction="none"
            )  # (B, T)
            parts["done"] = (bce * step_w).sum() / steps
            total = total + self.config.done_weight * parts["done"]
        parts["total"] = total
        return parts

    # ------------------------------------------------------------------ sampling
    @staticmethod
    def sample(
        params: MDNOutput | tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        tau: float = 1.0,
        generator: torch.Generator | None = None,
        shared: bool | None = None,
    ) -> torch.Tensor:
        """Draw z_{t+1} from the mixture at temperature ``tau``, as the original does.

        Per latent dimension (with ``shared_mixture``: once for the whole z), a component
        is drawn from ``softmax(logpi / tau)`` and its
        Gaussian is sampled with noise scaled by ``sqrt(tau)``. ``tau = 0`` gives the most
        likely component's mean (deterministic); larger tau makes the dream more uncertain.

        Args:
            params: an :class:`MDNOutput` or ``(logpi, mu, logsigma)``, each (..., Z, K).
            tau: temperature >= 0.
            generator: optional ``torch.Generator`` for reproducible draws.
            shared: one component for the whole z (None: an :class:`MDNOutput`'s own
                ``shared``, else False).
        Returns:
            z: (..., Z).
        """
        if tau < 0:
            raise ValueError(f"temperature tau must be >= 0, got {tau}")
        logpi, mu, logsigma = params[0], params[1], params[2]
        if not (logpi.shape == mu.shape == logsigma.shape):
            raise ValueError(
                f"logpi, mu and logsigma must share a shape (..., Z, K), got "
                f"{tuple(logpi.shape)}, {tuple(mu.shape)}, {tuple(logsigma.shape)}"
            )
        if shared is None:
            shared = bool(getattr(params, "shared", False))
        if tau == 0:
            return sample_mixture(logpi, mu, logsigma, 0.0, None, None, shared)
        u = torch.rand(logpi.shape, device=logpi.device, generator=generator)
        eps = torch.randn(mu.shape[:-1], device=mu.device, generator=generator)
        return sample_mixture(logpi, mu, logsigma, tau, u, eps, shared)


def sample_mixture(
    logpi: torch.Tensor,
    mu: torch.Tensor,
    logsigma: torch.Tensor,
    tau: float,
    u: torch.Tensor | None,
    eps: torch.Tensor | None,
    shared: bool = False,
) -> torch.Tensor:
    """Draw from per-dimension mixtures at temperature ``tau`` with the noise given.

    The component is ``argmax(logpi / tau + Gumbel(u))``, a draw from ``softmax(logpi /
    tau)`` (batched, no host sync); its Gaussian is sampled with noise ``eps * sqrt(tau)``.
    Taking the noise as arguments lets batched dreams share it across candidates.
    ``shared``: the weights are one row for every dimension (``shared_mixture``); the draw
    of dimension 0 picks the component of the whole z.

    Args:
        logpi, mu, logsigma: (..., Z, K).
        u: (..., Z, K) uniform noise in [0, 1); eps: (..., Z) standard normal noise. Both
            may be None when ``tau == 0`` (the most likely component's mean).
    Returns:
        z: (..., Z).
    """
    if shared:  # decide on row 0, then read every dimension from that component
        logpi = logpi[..., :1, :]  # (..., 1, K)
        u = None if u is None else u[..., :1, :]
    if tau == 0:
        k = logpi.argmax(dim=-1, keepdim=True)  # (..., Z or 1, 1)
        return mu.gather(-1, k.expand(*mu.shape[:-1], 1)).squeeze(-1)
    assert u is not None and eps is not None
    gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))  # (..., Z or 1, K)
    k = (logpi.float() / tau + gumbel).argmax(dim=-1, keepdim=True)  # (..., Z or 1, 1)
    k = k.expand(*mu.shape[:-1], 1)  # (..., Z, 1)
    mean = mu.gather(-1, k).squeeze(-1)  # (..., Z)
    std = logsigma.gather(-1, k).squeeze(-1).exp()  # (..., Z)
    return mean + std * eps.to(mean.dtype) * math.sqrt(tau)


class MDNRNNCell(nn.Module):
    """Step-by-step view of an :class:`MDNRNN` for the controller and the dream.

    Holds the model itself (not a copy): ``cell(z (N, Z), a (N, A), state)`` is
    ``model.step``, so it always uses the sequence model's current weights.
    """

    def __init__(self, model: MDNRNN) -> None:
        super().__init__()
        self.model = model

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> LSTMState:
        return self.model.initial_state(batch, device)

    def forward(
        self, z: torch.Tensor, action: torch.Tensor, state: LSTMState | None = None
    ) -> MDNOutput:
        return self.model.step(z, action, state)
