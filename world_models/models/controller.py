"""C: the linear controller ``a = tanh(W [z, h] + b)`` and the policy that runs V, M and C.

What C reads is a choice (``cell_input``): ``[z, h]`` (the paper's summary, and CarRacing)
or ``[z, c, h]``, M's LSTM cell *and* hidden state, as the original Doom code does
(``doomrnn``'s ``MODE_ZCH``, with no bias: 64 + 512 + 512 = 1,088 weights).

How C's outputs become env actions, and how M is fed them, is the env's action mode
(:mod:`world_models.models.actions`: ``carracing``, ``thirds``, ``tanh``, or one
registered by the caller), named by ``action_mode``.

For CMA-ES the parameters are one flat vector (``get_flat`` / ``set_flat``: the weight
row-major, then the bias if any; 867 numbers for z=32, h=256, 3 outputs). Many candidates
run at once through :func:`batched_actions`: weights (P, A, I) applied with one ``einsum``,
where I = Z + H, or Z + 2H with the cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from world_models.core.checkpoint import PretrainedMixin
from world_models.models.actions import DOOM_LEFT as DOOM_LEFT  # re-exported
from world_models.models.actions import DOOM_RIGHT as DOOM_RIGHT
from world_models.models.actions import DOOM_STAY as DOOM_STAY
from world_models.models.actions import ActionMode, get_action_mode
from world_models.models.configs import ControllerConfig


def controller_inputs(
    z: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor | None,
    cell_input: bool,
    hidden_input: bool = True,
) -> torch.Tensor:
    """What C reads: [z, h], or [z, c, h] with ``cell_input``, or z alone without
    ``hidden_input``: (..., Z), (..., H) -> (..., I)."""
    if not hidden_input:
        return z  # (..., Z)
    if not cell_input:
        return torch.cat([z, h], dim=-1)  # (..., Z + H)
    if c is None:
        raise ValueError("this controller reads [z, c, h]: pass M's cell state c")
    return torch.cat([z, c, h], dim=-1)  # (..., Z + 2H)


def map_actions(raw: torch.Tensor, mode: str | ActionMode) -> torch.Tensor:
    """Controller outputs ``raw`` (..., A) in [-1, 1] -> env actions of action mode
    ``mode``: (..., A) floats, or (...) int64 indices for a discrete mode."""
    return get_action_mode(mode).to_env(raw)


def actions_for_model(action: torch.Tensor, mode: str | ActionMode, model_action_size: int):
    """Env actions (..., A) float or (...) int -> M's input (..., model_action_size) float."""
    return get_action_mode(mode).to_model(action, model_action_size)


class Controller(PretrainedMixin, nn.Module):
    """Linear controller ``a = tanh(W [z, h] + b)``.

    Shapes: ``z`` (N, Z), ``h`` (N, H) -> raw outputs (N, A) in [-1, 1];
    :meth:`act` maps them to env actions (see the module docstring).

    Built from a :class:`ControllerConfig` (None: its defaults, the CarRacing C), with any
    of its fields by name on top: ``Controller(CONTROLLER_PRESETS["doom"])``,
    ``Controller(latent_size=8, hidden_size=16, output_size=1, action_mode="thirds")``.
    """

    config_class = ControllerConfig

    def __init__(self, config: ControllerConfig | None = None, **fields: Any) -> None:
        super().__init__()
        if isinstance(fields.get("action_mode"), ActionMode):  # a mode object: by its name
            fields["action_mode"] = fields["action_mode"].name
        c = self.config = self.config_with(config, fields)
        self.mode = get_action_mode(c.action_mode)
        self.latent_size, self.hidden_size = c.latent_size, c.hidden_size
        self.output_size, self.action_mode = c.output_size, c.action_mode
        self.cell_input, self.has_bias, self.hidden_input = c.cell_input, c.bias, c.hidden_input
        # inputs [z], [z, h] or [z, c, h]
        state = self.hidden_size * (2 if c.cell_input else 1) if c.hidden_input else 0
        self.input_size = self.latent_size + state
        self.fc = nn.Linear(self.input_size, self.output_size, bias=self.has_bias)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self, z: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw outputs tanh(W [z, (c,) h] + b): (N, Z), (N, H)[, (N, H)] -> (N, A)."""
        return torch.tanh(self.fc(self.inputs(z, h, c)))

    def inputs(
        self, z: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What this C reads (:func:`controller_inputs`): (..., Z), (..., H) -> (..., I)."""
        return controller_inputs(z, h, c, self.cell_input, self.hidden_input)

    def act(self, z: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Env actions: (N, A) floats, or (N,) int64 for a discrete mode (thirds)."""
        return self.mode.to_env(self(z, h, c))

    # ------------------------------------------------------------------ flat parameters
    def get_flat(self) -> np.ndarray:
        """All parameters as one float64 vector: weight (row-major), then bias."""
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()]).double().cpu().numpy()

    def set_flat(self, vec: np.ndarray | torch.Tensor) -> Controller:
        """Load :meth:`get_flat`'s layout back; returns self."""
        vec = torch.as_tensor(np.asarray(vec, np.float64) if not torch.is_tensor(vec) else vec)
        if vec.dim() != 1 or vec.numel() != self.num_params:
            raise ValueError(f"expected a flat vector of {self.num_params}, got {tuple(vec.shape)}")
        i = 0
        with torch.no_grad():
            for p in self.parameters():
                n = p.numel()
                p.copy_(vec[i : i + n].view_as(p).to(p.dtype))
                i += n
        return self

    def unflatten(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P flat vectors (P, D) -> weights (P, A, I) and biases (P, A) (zeros without bias)."""
        a, i = self.output_size, self.input_size
        d = a * i + (a if self.has_bias else 0)
        if params.dim() != 2 or params.shape[1] != d:
            raise ValueError(f"expected params (P, {d}), got {tuple(params.shape)}")
        w = params[:, : a * i].reshape(-1, a, i)
        b = params[:, a * i :] if self.has_bias else params.new_zeros(params.shape[0], a)
        return w, b


def batched_raw(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """P controllers on their own N inputs each: tanh(W_p x + b_p).

    Args:
        weight: (P, A, I); bias: (P, A); x: (P, N, I), from :func:`controller_inputs`.
    Returns:
        (P, N, A) raw outputs in [-1, 1].
    """
    return torch.tanh(torch.einsum("pai,pni->pna", weight, x) + bias[:, None, :])


def batched_actions(
    controller: Controller,
    params: torch.Tensor,
    z: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor | None = None,
) -> torch.Tensor:
    """Env actions of P candidate parameter vectors ``params`` (P, D) on z (P, N, Z), h and
    c (P, N, H): (P, N, A) floats or (P, N) int64 for a discrete mode."""
    w, b = controller.unflatten(params.to(z.dtype))
    x = controller.inputs(z, h, c)  # (P, N, I)
    return controller.mode.to_env(batched_raw(w, b, x))
