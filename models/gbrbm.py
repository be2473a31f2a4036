"""The Gaussian-Bernoulli RBM: real-valued visible units, binary hidden units."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import AbstractBoltzmannMachine
from .errors import InvalidDataError

__all__ = ["GaussianBernoulliRBM"]


class GaussianBernoulliRBM(AbstractBoltzmannMachine):
    """``E(v, h) = sum_i (v_i - mu_i)^2 / (2 var_i) - sum_ij (v_i / var_i) W_ij h_j - c^T h``.

    ``v`` is real (``R^V``), ``h in {0,1}^H``; states are ``[v, h]``. Conditionals:
    ``p(h_j = 1 | v) = sigmoid(c_j + ((v / var)^T W)_j)`` and
    ``p(v | h) = N(mu + W h, diag(var))``.

    The Ising view (:meth:`to_ising`) is the exact marginal of the hidden units after integrating
    ``v`` out: ``p(h) ∝ exp(c'^T h + 1/2 h^T A h)`` with ``A = W^T diag(1/var) W`` and
    ``c' = c + W^T (mu / var)``. So a device samples ``h``, and :meth:`states_from_spins` draws
    ``v ~ p(v | h)`` exactly: the pair is an exact joint sample. Spins cover the ``H`` hidden
    units only (:attr:`num_spins`).

    Parameters
    ----------
    num_visible, num_hidden : int
    init_var : float, default 1.0
        Initial variance of every visible unit (``log_var`` is the learned parameter).
    init_std : float, default 0.01
        Standard deviation of the initial ``W``, ``mu`` and ``c``.
    eps : float, default 1e-8
        Floor of the variance.
    device, dtype, generator
        As for :class:`~kpp_sdk.models.RestrictedBoltzmannMachine`.

    Parameter names (``mu``, ``log_var``, ``quadratic_coef``, ``linear_bias`` for ``c``) are
    those of kaiwu-torch-plugin's GaussianBernoulliRestrictedBoltzmannMachine.
    """

    exact_hidden_conditional = True
    binary_visible = False

    def __init__(self, num_visible: int, num_hidden: int, *, init_var: float = 1.0,
                 init_std: float = 0.01, eps: float = 1e-8, device=None, dtype=None,
                 generator: torch.Generator | None = None):
        super().__init__()
        num_visible, num_hidden = int(num_visible), int(num_hidden)
        if num_visible < 1 or num_hidden < 1:
            raise InvalidDataError(
                f"a Gaussian-Bernoulli RBM needs at least one visible and one hidden unit, got "
                f"{num_visible} and {num_hidden}")
        if not init_var > 0:
            raise InvalidDataError(f"init_var must be positive, got {init_var}")
        self.num_visible, self.num_hidden = num_visible, num_hidden
        self.eps = float(eps)
        dtype = dtype or torch.get_default_dtype()

        def normal(*shape):
            return torch.randn(*shape, generator=generator, dtype=dtype) * init_std

        self.mu = nn.Parameter(normal(num_visible).to(device))
        self.log_var = nn.Parameter(torch.full((num_visible,), math.log(init_var),
                                               dtype=dtype, device=device))
        self.quadratic_coef = nn.Parameter(normal(num_visible, num_hidden).to(device))
        self.linear_bias = nn.Parameter(normal(num_hidden).to(device))

    def _config(self) -> dict:
        return {"num_visible": self.num_visible, "num_hidden": self.num_hidden}

    @staticmethod
    def parameter_shapes(num_visible: int, num_hidden: int) -> dict[str, tuple[int, ...]]:
        """The ``state_dict`` shapes of a model built with this configuration, computed
        without building it (a checkpoint's tensors are checked against them first)."""
        V, H = int(num_visible), int(num_hidden)
        return {"mu": (V,), "log_var": (V,), "quadratic_coef": (V, H), "linear_bias": (H,)}

    @property
    def num_spins(self) -> int:
        return self.num_hidden

    @property
    def var(self) -> torch.Tensor:
        """Variances of the visible units, ``exp(log_var)`` floored at ``eps``."""
        return self.log_var.exp().clamp(min=self.eps)

    @property
    def std(self) -> torch.Tensor:
        return self.var.sqrt()

    def init_visible_bias(self, data, eps: float = 1e-4) -> None:
        """Set ``mu`` and ``log_var`` to the data's per-unit mean and (floored) variance."""
        v = self.check_visible(data)
        with torch.no_grad():
            self.mu.copy_(v.mean(0))
            self.log_var.copy_(torch.log(v.var(0, unbiased=False).clamp(min=eps)))

    # --- energies -------------------------------------------------------------------------

    def energy(self, states: torch.Tensor) -> torch.Tensor:
        x = self.check_states(states)
        v, h = x[:, : self.num_visible], x[:, self.num_visible:]
        var = self.var
        return (0.5 * ((v - self.mu) ** 2 / var).sum(-1)
                - (((v / var) @ self.quadratic_coef) * h).sum(-1)
                - h @ self.linear_bias)

    def quadratic_form(self):
        """The hidden marginal: ``W = A - diag(A)``, ``b = c' + diag(A) / 2`` and
        ``c = -(V/2) log(2 pi) - 1/2 sum log var`` (so that ``sum_h exp(-E) = Z``)."""
        var = self.var
        A = self.quadratic_coef.t() @ (self.quadratic_coef / var[:, None])
        A = 0.5 * (A + A.t())  # symmetric up to rounding; make it exactly so
        d = torch.diagonal(A)
        W = A - torch.diag(d)
        b = self.linear_bias + self.quadratic_coef.t() @ (self.mu / var) + 0.5 * d
        c = -0.5 * self.num_visible * math.log(2 * math.pi) - 0.5 * torch.log(var).sum()
        return W, b, c

    def free_energy(self, visible: torch.Tensor) -> torch.Tensor:
        v = self.check_visible(visible)
        var = self.var
        return (0.5 * ((v - self.mu) ** 2 / var).sum(-1)
                - F.softplus((v / var) @ self.quadratic_coef + self.linear_bias).sum(-1))

    # --- conditionals ------------------------------------------------------------------------

    def hidden_probs(self, visible: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((visible / self.var) @ self.quadratic_coef + self.linear_bias)

    def visible_mean(self, hidden: torch.Tensor) -> torch.Tensor:
        """``E[v | h] = mu + W h``."""
        return self.mu + hidden @ self.quadratic_coef.t()

    def hidden_expectation(self, visible: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            v = visible.to(self.device, self.dtype)
            return torch.cat([v, self.hidden_probs(v)], dim=1)

    def _sample_visible(self, h: torch.Tensor, generator) -> torch.Tensor:
        z = torch.randn(h.shape[0], self.num_visible, generator=generator, device=h.device,
                        dtype=h.dtype)
        return self.visible_mean(h) + z * self.std

    def states_from_spins(self, spins, generator=None) -> torch.Tensor:
        """``h = (s + 1) / 2`` from the spins, then ``v ~ p(v | h)``."""
        h = super().states_from_spins(spins, generator)
        with torch.no_grad():
            return torch.cat([self._sample_visible(h, generator), h], dim=1)

    def gibbs_step(self, states, *, num_clamped: int = 0, generator=None):
        with torch.no_grad():
            x = self.check_states(states)
            v, h = x[:, : self.num_visible], x[:, self.num_visible:]
            if num_clamped not in (0, self.num_visible):
                raise InvalidDataError(
                    f"this RBM clamps all {self.num_visible} visible units or none, got "
                    f"{num_clamped}")
            if num_clamped == 0:
                v = self._sample_visible(h, generator)
            p = self.hidden_probs(v)
            u = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype)
            return torch.cat([v, (u < p).to(p.dtype)], dim=1)

    def random_states(self, num, generator=None):
        with torch.no_grad():
            h = (torch.rand(num, self.num_hidden, generator=generator, device=self.device,
                            dtype=self.dtype) < 0.5).to(self.dtype)
            z = torch.randn(num, self.num_visible, generator=generator, device=self.device,
                            dtype=self.dtype)
            return torch.cat([self.mu + z * self.std, h], dim=1)

    def clamped_ising(self, visible):
        raise InvalidDataError(
            "the hidden units of a Gaussian-Bernoulli RBM given v are independent: use "
            "hidden_expectation (exact) instead of clamped sampling")
