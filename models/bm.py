"""The fully connected Boltzmann machine."""

from __future__ import annotations

import torch
from torch import nn

from .base import (
    MAX_ENUMERATION_UNITS,
    AbstractBoltzmannMachine,
    is_kaiwu_optimizer,
    iter_binary_states,
)
from .errors import InvalidDataError

__all__ = ["BoltzmannMachine"]


class BoltzmannMachine(AbstractBoltzmannMachine):
    """A Boltzmann machine whose units are all coupled: ``E(x) = -b^T x - 1/2 x^T W x``.

    Units are ``x in {0, 1}``, visible first (conventions: :mod:`kpp_sdk.models.base`).

    Parameters
    ----------
    num_visible : int
    num_hidden : int, default 0
        Hidden units. With hidden units the positive phase needs samples of ``p(h | v)``
        (clamped sampling), and the free energy sums over ``2^num_hidden`` hidden states.
    quadratic_coef : (N, N) tensor, optional
        Raw couplings; only the strict upper triangle is used, ``W = triu(Q, 1) + triu(Q, 1)^T``
        (kaiwu-torch-plugin's parametrisation). Default ``N(0, init_std^2)``.
    linear_bias : (N,) tensor, optional
        ``b``; default zeros.
    device, dtype
        Torch device and dtype of the parameters (default CPU, float32).
    init_std : float, default 0.01
    generator : torch.Generator, optional
        Makes the random initialisation reproducible.
    """

    def __init__(self, num_visible: int, num_hidden: int = 0, quadratic_coef=None,
                 linear_bias=None, device=None, *, dtype=None, init_std: float = 0.01,
                 generator: torch.Generator | None = None):
        super().__init__()
        num_visible, num_hidden = int(num_visible), int(num_hidden)
        if num_visible < 1 or num_hidden < 0:
            raise InvalidDataError(
                f"a Boltzmann machine needs num_visible >= 1 and num_hidden >= 0, "
                f"got {num_visible} and {num_hidden}")
        self.num_visible, self.num_hidden = num_visible, num_hidden
        n = num_visible + num_hidden
        dtype = dtype or torch.get_default_dtype()
        if quadratic_coef is None:
            quadratic_coef = torch.randn(n, n, generator=generator, dtype=dtype) * init_std
        if linear_bias is None:
            linear_bias = torch.zeros(n, dtype=dtype)
        quadratic_coef = torch.as_tensor(quadratic_coef, dtype=dtype)
        linear_bias = torch.as_tensor(linear_bias, dtype=dtype)
        if quadratic_coef.shape != (n, n) or linear_bias.shape != (n,):
            raise InvalidDataError(
                f"quadratic_coef must be ({n}, {n}) and linear_bias ({n},), got "
                f"{tuple(quadratic_coef.shape)} and {tuple(linear_bias.shape)}")
        self.quadratic_coef = nn.Parameter(quadratic_coef.clone().to(device))
        self.linear_bias = nn.Parameter(linear_bias.clone().to(device))

    def _config(self) -> dict:
        return {"num_visible": self.num_visible, "num_hidden": self.num_hidden}

    @staticmethod
    def parameter_shapes(num_visible: int, num_hidden: int = 0) -> dict[str, tuple[int, ...]]:
        """The ``state_dict`` shapes of a model built with this configuration, computed
        without building it (a checkpoint's tensors are checked against them first)."""
        n = int(num_visible) + int(num_hidden)
        return {"quadratic_coef": (n, n), "linear_bias": (n,)}

    def symmetrized_quadratic_coef(self) -> torch.Tensor:
        """``W``: symmetric, zero diagonal, built from the strict upper triangle."""
        upper = self.quadratic_coef.triu(1)
        return upper + upper.transpose(0, 1)

    def energy(self, states: torch.Tensor) -> torch.Tensor:
        x = self.check_states(states)
        W = self.symmetrized_quadratic_coef()
        return -x @ self.linear_bias - 0.5 * ((x @ W) * x).sum(dim=-1)

    def quadratic_form(self):
        return self.symmetrized_quadratic_coef(), self.linear_bias, 0.0

    def free_energy(self, visible: torch.Tensor) -> torch.Tensor:
        """Exact ``F(v)``: the energy itself without hidden units, else a sum over the
        ``2^num_hidden`` hidden states (at most ``2^24``)."""
        v = self.check_visible(visible)
        if self.num_hidden == 0:
            return self.energy(v)
        if self.num_hidden > MAX_ENUMERATION_UNITS:
            raise InvalidDataError(
                f"the free energy sums over 2^{self.num_hidden} hidden states; it is exact only up "
                f"to {MAX_ENUMERATION_UNITS} hidden units")
        V = self.num_visible
        W = self.symmetrized_quadratic_coef()
        b = self.linear_bias
        vis = v @ b[:V] + 0.5 * ((v @ W[:V, :V]) * v).sum(-1)          # (B,)
        fields = b[V:][None, :] + v @ W[:V, V:]                          # (B, H)
        acc = None
        for h in iter_binary_states(self.num_hidden, device=v.device, dtype=v.dtype):
            term = fields @ h.T + 0.5 * ((h @ W[V:, V:]) * h).sum(-1)[None, :]
            m = torch.logsumexp(term, dim=-1)
            acc = m if acc is None else torch.logaddexp(acc, m)
        return -(vis + acc)

    def gibbs_step(self, states, *, num_clamped: int = 0, generator=None):
        """One sequential sweep over the unclamped units in index order (heat bath)."""
        with torch.no_grad():
            x = self.check_states(states).clone()
            W = self.symmetrized_quadratic_coef()
            b = self.linear_bias
            u = torch.rand(x.shape[0], self.num_nodes, generator=generator, device=x.device,
                           dtype=x.dtype)
            for i in range(int(num_clamped), self.num_nodes):
                p = torch.sigmoid(b[i] + x @ W[:, i])
                x[:, i] = (u[:, i] < p).to(x.dtype)
            return x

    # kaiwu-torch-plugin names ---------------------------------------------------------------

    def clip_parameters(self, h_range, j_range) -> None:
        """Clamp ``linear_bias`` to ``h_range`` and ``quadratic_coef`` to ``j_range`` in place."""
        with torch.no_grad():
            self.linear_bias.clamp_(*h_range)
            self.quadratic_coef.clamp_(*j_range)

    def condition_sample(self, sampler, s_visible: torch.Tensor,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Full states with the leading units fixed to the rows of ``s_visible`` and the rest
        sampled given them (``p(h | v)``).

        ``sampler``: a Kaiwu optimizer solves one problem per row and every row it returns is
        kept (kaiwu-torch-plugin's behaviour, so the output may have more rows than
        ``s_visible``); a Device, device name or :class:`~kpp_sdk.models.samplers.ModelSampler`
        draws one clamped sample per row in one job. With zero columns nothing is fixed: the
        samples are of the whole model (the plugin's result for an empty condition)."""
        from kpp_sdk.models.samplers import as_sampler

        from kpp_sdk.problem import IsingProblem

        v = torch.as_tensor(s_visible, device=self.device, dtype=self.dtype)
        if v.ndim == 1:
            v = v[None, :]
        if v.shape[1] == 0:  # nothing fixed: samples of the whole model, one per row (or solve)
            if is_kaiwu_optimizer(sampler):
                return torch.cat([self.states_from_spins(IsingProblem.spins_from_kaiwu(
                    sampler.solve(self.get_ising_matrix()), self.num_spins))
                    for _ in range(v.shape[0])]).to(dtype)
            return as_sampler(sampler).sample(self, v.shape[0]).to(dtype)
        if is_kaiwu_optimizer(sampler):
            parts = []
            for i in range(v.shape[0]):
                problem = self.clamped_ising(v[i:i + 1])
                spins = IsingProblem.spins_from_kaiwu(sampler.solve(problem.to_kaiwu()), problem.n)
                parts.append(self.states_from_clamped_spins(v[i:i + 1], spins))
            return torch.cat(parts).to(dtype)
        return as_sampler(sampler).clamped(self, v).to(dtype)
