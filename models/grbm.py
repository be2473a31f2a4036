"""A Boltzmann machine restricted to a sparse graph: any nodes, any edges, any hidden nodes (the
model of dwave-pytorch-plugin 0.4's ``GraphRestrictedBoltzmannMachine``; the port guide is
``docs/porting-from-dwave-pytorch-plugin.md``).

The parameters are Ising biases on spins ``s = 2x - 1`` in dimod's sign, one per node and one per
edge, as in the D-Wave plugin:

    E(s) = sum_i h_i s_i + sum_{(i, j) in edges} J_ij s_i s_j.

As every model here (:mod:`kpp_sdk.models.base`), states are units ``x in {0, 1}``, visible
first: the model orders its units as the visible nodes then the hidden nodes, each in the order
given (:attr:`GraphRestrictedBoltzmannMachine.nodes`); :meth:`~GraphRestrictedBoltzmannMachine.
spins_to_states` and :meth:`~GraphRestrictedBoltzmannMachine.states_to_spins` convert D-Wave-style
spin tensors in the construction order. When no edge joins two hidden nodes, ``p(h | v)``
factorises: the positive phase and the free energy are exact.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from kpp_sdk.problem import IsingProblem

from .base import AbstractBoltzmannMachine
from .errors import InvalidDataError

__all__ = ["GraphRestrictedBoltzmannMachine"]


class GraphRestrictedBoltzmannMachine(AbstractBoltzmannMachine):
    """A Boltzmann machine on the graph ``(nodes, edges)`` (module docstring).

    Parameters
    ----------
    nodes : iterable of hashable
    edges : iterable of (node, node)
        No self-loops, no repeated pair.
    hidden_nodes : iterable of hashable, optional
        A subset of ``nodes``.
    linear : dict {node: h}, optional
    quadratic : dict {(u, v): J}, optional
        Initial biases (either orientation of an edge); the rest start at small random values.
    init_std : float, default 0.01
    generator : torch.Generator, optional
    device, dtype
    """

    def __init__(self, nodes: Iterable[Hashable], edges: Iterable[tuple[Hashable, Hashable]],
                 hidden_nodes: Iterable[Hashable] | None = None, linear: dict | None = None,
                 quadratic: dict | None = None, *, init_std: float = 0.01,
                 generator: torch.Generator | None = None, device=None, dtype=None):
        super().__init__()
        given = list(nodes)
        if len(set(given)) != len(given):
            raise InvalidDataError("nodes must be distinct")
        hidden = list(hidden_nodes or [])
        unknown = [v for v in hidden if v not in set(given)]
        if unknown:
            raise InvalidDataError(f"hidden nodes {unknown[:5]} are not among the nodes")
        hidden_set = set(hidden)
        self._given_nodes = given
        self.nodes = [v for v in given if v not in hidden_set] + hidden
        self.hidden_nodes = hidden
        self.node_to_idx = {v: i for i, v in enumerate(self.nodes)}
        self.num_visible, self.num_hidden = len(self.nodes) - len(hidden), len(hidden)
        self.edges = [tuple(e) for e in edges]
        seen = set()
        for u, v in self.edges:
            if u not in self.node_to_idx or v not in self.node_to_idx:
                raise InvalidDataError(f"edge ({u!r}, {v!r}) has a node that is not in nodes")
            if u == v:
                raise InvalidDataError(f"self-loop ({u!r}, {v!r}): a spin's square is a constant")
            key = frozenset((u, v))
            if key in seen:
                raise InvalidDataError(f"edge ({u!r}, {v!r}) is listed twice")
            seen.add(key)
        idx_i = [self.node_to_idx[u] for u, _ in self.edges]
        idx_j = [self.node_to_idx[v] for _, v in self.edges]
        self.register_buffer("edge_idx_i", torch.tensor(idx_i, dtype=torch.long, device=device))
        self.register_buffer("edge_idx_j", torch.tensor(idx_j, dtype=torch.long, device=device))
        self._edge_index = {frozenset(e): k for k, e in enumerate(self.edges)}
        dtype = dtype or torch.get_default_dtype()
        n, m = len(self.nodes), len(self.edges)
        self.linear = nn.Parameter(
            (torch.randn(n, generator=generator, dtype=dtype) * init_std).to(device))
        self.quadratic = nn.Parameter(
            (torch.randn(m, generator=generator, dtype=dtype) * init_std).to(device))
        if linear:
            self.set_linear(linear)
        if quadratic:
            self.set_quadratic(quadratic)
        h = torch.as_tensor(idx_i) >= self.num_visible
        self.exact_hidden_conditional = not bool((h & (torch.as_tensor(idx_j)
                                                       >= self.num_visible)).any())

    def _first_parameter(self) -> torch.Tensor:
        return self.linear

    def _config(self) -> dict:
        return {"nodes": list(self._given_nodes), "edges": [list(e) for e in self.edges],
                "hidden_nodes": list(self.hidden_nodes)}

    def extra_repr(self) -> str:
        return (f"nodes={len(self.nodes)}, edges={len(self.edges)}, "
                f"hidden={self.num_hidden}")

    # --- the D-Wave plugin's names --------------------------------------------------------------

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    @property
    def theta(self) -> torch.Tensor:
        """``[h, J]`` in node then edge order."""
        return torch.cat([self.linear, self.quadratic])

    def set_linear(self, linear: dict) -> None:
        """Set ``h`` of the given nodes."""
        with torch.no_grad():
            for node, value in linear.items():
                if node not in self.node_to_idx:
                    raise InvalidDataError(f"{node!r} is not a node of this model")
                self.linear[self.node_to_idx[node]] = float(value)

    def set_quadratic(self, quadratic: dict) -> None:
        """Set ``J`` of the given edges (either orientation)."""
        with torch.no_grad():
            for (u, v), value in quadratic.items():
                k = self._edge_index.get(frozenset((u, v)))
                if k is None:
                    raise InvalidDataError(f"({u!r}, {v!r}) is not an edge of this model")
                self.quadratic[k] = float(value)

    def to_dimod_ising(self, prefactor: float = 1.0, linear_range=None,
                       quadratic_range=None) -> tuple[dict, dict]:
        """``(h, J)`` dicts over the node labels, scaled by ``prefactor`` then clipped to the
        ranges (for a dimod sampler or hardware with bias ranges)."""
        h = prefactor * self.linear.detach().cpu()
        J = prefactor * self.quadratic.detach().cpu()
        if linear_range is not None:
            h = h.clamp(*linear_range)
        if quadratic_range is not None:
            J = J.clamp(*quadratic_range)
        return ({v: float(h[i]) for i, v in enumerate(self.nodes)},
                {e: float(J[k]) for k, e in enumerate(self.edges)})

    def spins_to_states(self, spins: Any) -> torch.Tensor:
        """Spin rows in the construction order of ``nodes`` -> states ``(s + 1) / 2`` in the
        model's order (visible nodes first); NaN (an unobserved spin) stays NaN."""
        s = torch.as_tensor(spins, device=self.device, dtype=self.dtype)
        s = s[None, :] if s.ndim == 1 else s
        if s.shape[-1] != len(self._given_nodes):
            raise InvalidDataError(f"spins must have {len(self._given_nodes)} columns (the nodes "
                                   f"in construction order), got {tuple(s.shape)}")
        order = torch.tensor([self._given_nodes.index(v) for v in self.nodes], device=s.device)
        return (s[..., order] + 1) * 0.5

    def states_to_spins(self, states: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`spins_to_states`."""
        x = torch.as_tensor(states, device=self.device, dtype=self.dtype)
        back = torch.tensor([self.node_to_idx[v] for v in self._given_nodes], device=x.device)
        return 2 * x[..., back] - 1

    # --- energies -------------------------------------------------------------------------------

    def check_states(self, states: Any) -> torch.Tensor:
        x = super().check_states(states)
        if bool(((x < 0) | (x > 1)).any()):
            raise InvalidDataError(
                "states are units in {0, 1} (or probabilities); these hold values outside [0, 1]"
                " -- spins? convert with model.spins_to_states(s) (x = (s + 1) / 2)")
        return x

    def energy(self, states: torch.Tensor) -> torch.Tensor:
        """``E`` of the module docstring at ``s = 2x - 1`` (linear in each unit, so fractional
        hidden units give the conditional expectation when hidden nodes are not coupled)."""
        s = 2 * self.check_states(states) - 1
        return s @ self.linear + (s[:, self.edge_idx_i] * s[:, self.edge_idx_j]) @ self.quadratic

    def _dense_w(self) -> torch.Tensor:
        n = len(self.nodes)
        W = self.quadratic.new_zeros(n, n)
        W = W.index_put((self.edge_idx_i, self.edge_idx_j), -4 * self.quadratic, accumulate=True)
        return W + W.t()

    def _degree_sums(self) -> torch.Tensor:
        """``sum_{e containing i} J_e`` per node."""
        out = self.quadratic.new_zeros(len(self.nodes))
        out = out.index_add(0, self.edge_idx_i, self.quadratic)
        return out.index_add(0, self.edge_idx_j, self.quadratic)

    def quadratic_form(self):
        """``W = -4 J`` (both orientations), ``b = -2 h + 2 sum_e J_e``, ``c = sum J - sum h``."""
        b = -2 * self.linear + 2 * self._degree_sums()
        return self._dense_w(), b, self.quadratic.sum() - self.linear.sum()

    def to_ising(self) -> IsingProblem:
        """The sparse Ising problem ``J_ours = -J``, ``h_ours = -h`` (equal energies, no
        offset), built from the edge list."""
        with torch.no_grad():
            i = self.edge_idx_i.cpu().numpy()
            j = self.edge_idx_j.cpu().numpy()
            w = -self.quadratic.detach().double().cpu().numpy()
        n = len(self.nodes)
        J = sp.coo_matrix((np.r_[w, w], (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsr()
        return IsingProblem(J, -self.linear.detach().double().cpu().numpy())

    # --- conditionals ---------------------------------------------------------------------------

    def _hidden_fields(self, visible: torch.Tensor) -> torch.Tensor:
        """x-space fields of the hidden units given the visible ones (hidden nodes uncoupled)."""
        _, b, _ = self.quadratic_form()
        W = self._dense_w()
        V = self.num_visible
        return b[V:][None, :] + visible @ W[:V, V:]

    def hidden_expectation(self, visible: torch.Tensor) -> torch.Tensor:
        if not self.exact_hidden_conditional:
            raise NotImplementedError("hidden nodes are coupled: p(h | v) does not factorise")
        with torch.no_grad():
            v = visible.to(self.device, self.dtype)
            return torch.cat([v, torch.sigmoid(self._hidden_fields(v))], dim=1)

    def free_energy(self, visible: torch.Tensor) -> torch.Tensor:
        """Exact ``F(v)`` when no two hidden nodes are coupled."""
        if self.num_hidden and not self.exact_hidden_conditional:
            raise InvalidDataError("the free energy is exact only when hidden nodes are "
                                   "uncoupled; use AIS (kpp_sdk.models.ais_log_partition)")
        v = self.check_visible(visible)
        W, b, c = self.quadratic_form()
        V = self.num_visible
        vis = v @ b[:V] + 0.5 * ((v @ W[:V, :V]) * v).sum(-1)
        if not self.num_hidden:
            return -vis + c
        return -vis - F.softplus(self._hidden_fields(v)).sum(-1) + c

    def gibbs_step(self, states, *, num_clamped: int = 0, generator=None):
        """One heat-bath sweep over the unclamped units in order (all units given the rest)."""
        with torch.no_grad():
            x = self.check_states(states).clone()
            W, b, _ = self.quadratic_form()
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            for i in range(int(num_clamped), len(self.nodes)):
                p = torch.sigmoid(b[i] + x @ W[:, i])
                x[:, i] = (u[:, i] < p).to(x.dtype)
            return x

    def estimate_beta(self, spins: Any) -> float:
        """The pseudo-likelihood inverse temperature of spin samples (rows in construction order)
        under this model (:func:`kpp_sdk.models.samplers.pseudo_likelihood_beta`)."""
        from .samplers import pseudo_likelihood_beta

        x = self.spins_to_states(spins)
        return pseudo_likelihood_beta(self.to_ising(), (2 * x - 1).cpu().numpy().astype(np.int8))
