"""The restricted Boltzmann machine: visible and hidden layers, couplings only between them."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import AbstractBoltzmannMachine
from .errors import InvalidDataError

__all__ = ["RestrictedBoltzmannMachine"]


class RestrictedBoltzmannMachine(AbstractBoltzmannMachine):
    """``E(v, h) = -a^T v - c^T h - v^T W h`` with ``v in {0,1}^V``, ``h in {0,1}^H``.

    States are ``[v, h]`` (conventions: :mod:`kpp_sdk.models.base`). ``p(h | v)`` and
    ``p(v | h)`` factorise (``sigmoid(c + W^T v)``, ``sigmoid(a + W h)``), so the positive phase
    is exact and the free energy ``F(v) = -a^T v - sum_j softplus(c_j + (W^T v)_j)`` is
    tractable.

    Parameters
    ----------
    num_visible, num_hidden : int
    quadratic_coef : (V, H) tensor, optional
        ``W``; default ``N(0, init_std^2)``.
    linear_bias : (V + H,) tensor, optional
        ``[a, c]``; default zeros.
    device, dtype
        Torch device and dtype of the parameters (default CPU, float32).
    init_std : float, default 0.01
    generator : torch.Generator, optional

    The constructor signature, the parameter names and ``get_hidden``/``get_visible`` are those
    of kaiwu-torch-plugin 0.3.0.
    """

    exact_hidden_conditional = True

    def __init__(self, num_visible: int, num_hidden: int, quadratic_coef=None, linear_bias=None,
                 device=None, *, dtype=None, init_std: float = 0.01,
                 generator: torch.Generator | None = None):
        super().__init__()
        num_visible, num_hidden = int(num_visible), int(num_hidden)
        if num_visible < 1 or num_hidden < 1:
            raise InvalidDataError(
                f"an RBM needs at least one visible and one hidden unit, got {num_visible} and "
                f"{num_hidden}")
        self.num_visible, self.num_hidden = num_visible, num_hidden
        dtype = dtype or torch.get_default_dtype()
        if quadratic_coef is None:
            quadratic_coef = torch.randn(num_visible, num_hidden, generator=generator,
                                         dtype=dtype) * init_std
        if linear_bias is None:
            linear_bias = torch.zeros(num_visible + num_hidden, dtype=dtype)
        quadratic_coef = torch.as_tensor(quadratic_coef, dtype=dtype)
        linear_bias = torch.as_tensor(linear_bias, dtype=dtype)
        if quadratic_coef.shape != (num_visible, num_hidden) or linear_bias.shape != (
                num_visible + num_hidden,):
            raise InvalidDataError(
                f"quadratic_coef must be ({num_visible}, {num_hidden}) and linear_bias "
                f"({num_visible + num_hidden},), got {tuple(quadratic_coef.shape)} and "
                f"{tuple(linear_bias.shape)}")
        self.quadratic_coef = nn.Parameter(quadratic_coef.clone().to(device))
        self.linear_bias = nn.Parameter(linear_bias.clone().to(device))

    def _config(self) -> dict:
        return {"num_visible": self.num_visible, "num_hidden": self.num_hidden}

    @staticmethod
    def parameter_shapes(num_visible: int, num_hidden: int) -> dict[str, tuple[int, ...]]:
        """The ``state_dict`` shapes of a model built with this configuration, computed
        without building it (a checkpoint's tensors are checked against them first)."""
        V, H = int(num_visible), int(num_hidden)
        return {"quadratic_coef": (V, H), "linear_bias": (V + H,)}

    @property
    def visible_bias(self) -> torch.Tensor:
        """``a`` (a view of ``linear_bias``)."""
        return self.linear_bias[: self.num_visible]

    @property
    def hidden_bias(self) -> torch.Tensor:
        """``c`` (a view of ``linear_bias``)."""
        return self.linear_bias[self.num_visible:]

    # --- energies -------------------------------------------------------------------------

    def energy(self, states: torch.Tensor) -> torch.Tensor:
        x = self.check_states(states)
        v, h = x[:, : self.num_visible], x[:, self.num_visible:]
        return -x @ self.linear_bias - ((v @ self.quadratic_coef) * h).sum(dim=-1)

    def quadratic_form(self):
        V, H = self.num_visible, self.num_hidden
        Wvh = self.quadratic_coef
        top = torch.cat([Wvh.new_zeros(V, V), Wvh], dim=1)
        bottom = torch.cat([Wvh.t(), Wvh.new_zeros(H, H)], dim=1)
        return torch.cat([top, bottom], dim=0), self.linear_bias, 0.0

    def to_ising(self):
        """As :meth:`AbstractBoltzmannMachine.to_ising`, built from the ``V x H`` block directly
        (the training loop calls this once per negative phase)."""
        from kpp_sdk.problem import IsingProblem

        with torch.no_grad():
            W = self.quadratic_coef.detach().double().cpu().numpy()
            b = self.linear_bias.detach().double().cpu().numpy()
        V = self.num_visible
        J = np.zeros((V + self.num_hidden, V + self.num_hidden))
        J[:V, V:] = 0.25 * W
        J[V:, :V] = 0.25 * W.T
        h = 0.5 * b
        h[:V] += 0.25 * W.sum(axis=1)
        h[V:] += 0.25 * W.sum(axis=0)
        return IsingProblem(J, h, -0.5 * float(b.sum()) - 0.25 * float(W.sum()))

    def free_energy(self, visible: torch.Tensor) -> torch.Tensor:
        v = self.check_visible(visible)
        softplus = F.softplus(v @ self.quadratic_coef + self.hidden_bias)
        return -v @ self.visible_bias - softplus.sum(-1)

    # --- conditionals ------------------------------------------------------------------------

    def hidden_probs(self, visible: torch.Tensor) -> torch.Tensor:
        """``p(h_j = 1 | v) = sigmoid(c_j + (W^T v)_j)``, shape ``(B, H)``."""
        return torch.sigmoid(visible @ self.quadratic_coef + self.hidden_bias)

    def visible_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """``p(v_i = 1 | h) = sigmoid(a_i + (W h)_i)``, shape ``(B, V)``."""
        return torch.sigmoid(hidden @ self.quadratic_coef.t() + self.visible_bias)

    def hidden_expectation(self, visible: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            v = visible.to(self.device, self.dtype)
            return torch.cat([v, self.hidden_probs(v)], dim=1)

    def gibbs_step(self, states, *, num_clamped: int = 0, generator=None):
        """Block Gibbs: ``v ~ p(v | h)`` then ``h ~ p(h | v)``; with ``num_clamped=num_visible``
        only ``h ~ p(h | v)``."""
        with torch.no_grad():
            x = self.check_states(states)
            v, h = x[:, : self.num_visible], x[:, self.num_visible:]
            if num_clamped not in (0, self.num_visible):
                raise InvalidDataError(
                    f"an RBM clamps all {self.num_visible} visible units or none, got "
                    f"{num_clamped}")
            if num_clamped == 0:
                v = _bernoulli(self.visible_probs(h), generator)
            h = _bernoulli(self.hidden_probs(v), generator)
            return torch.cat([v, h], dim=1)

    # --- kaiwu-torch-plugin names ---------------------------------------------------------

    def get_hidden(self, s_visible: torch.Tensor, requires_grad: bool = False,
                   bernoulli: bool = False) -> torch.Tensor:
        """States ``[v, p(h | v)]`` (or ``[v, h ~ p(h | v)]`` with ``bernoulli``)."""
        ctx = torch.enable_grad if requires_grad else torch.no_grad
        with ctx():
            v = torch.as_tensor(s_visible, device=self.device, dtype=self.dtype)
            p = self.hidden_probs(v)
            return torch.cat([v, _bernoulli(p, None) if bernoulli else p], dim=1)

    def get_visible(self, s_hidden: torch.Tensor, bernoulli: bool = False) -> torch.Tensor:
        """States ``[p(v | h), h]`` (or ``[v ~ p(v | h), h]`` with ``bernoulli``)."""
        with torch.no_grad():
            h = torch.as_tensor(s_hidden, device=self.device, dtype=self.dtype)
            p = self.visible_probs(h)
            return torch.cat([_bernoulli(p, None) if bernoulli else p, h], dim=1)

    def clip_parameters(self, h_range, j_range) -> None:
        """Clamp ``linear_bias`` to ``h_range`` and ``quadratic_coef`` to ``j_range`` in place."""
        with torch.no_grad():
            self.linear_bias.clamp_(*h_range)
            self.quadratic_coef.clamp_(*j_range)


def _bernoulli(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype)
    return (u < p).to(p.dtype)
