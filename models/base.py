"""The base class of every Boltzmann machine: energies, the Ising view, the training objective.

Conventions (stated once here, referenced everywhere in ``kpp_sdk.models``)
--------------------------------------------------------------------------
* Binary units take values ``x in {0, 1}`` and are stored as floating-point tensors. A *state*
  is one row of all units, visible first: ``states[:, :num_visible]`` are the visible units and
  ``states[:, num_visible:]`` the hidden ones.
* A model defines an energy ``E(x)`` and the distribution ``p(x) = exp(-E(x)) / Z`` (inverse
  temperature 1).
* Every model's binary part is a quadratic form
  ``E(x) = -b^T x - 1/2 x^T W x + c`` with ``W`` symmetric and zero on the diagonal
  (:meth:`AbstractBoltzmannMachine.quadratic_form`).
* The Ising view uses spins ``s = 2x - 1`` (so ``x = (s + 1) / 2``; unit on <=> spin up) and the
  SDK's energy ``E(s) = -1/2 s^T J s - h^T s + offset``. Substituting gives
  ``J = W / 4``, ``h = b / 2 + W 1 / 4``, ``offset = c - 1^T b / 2 - 1^T W 1 / 8``, so that
  ``model.to_ising().energy(2x - 1) == model.energy(x)`` exactly, offset included: samples of
  the Ising problem at inverse temperature 1 are samples of the model.

Sampling lives elsewhere (:mod:`kpp_sdk.models.samplers`): a model only defines energies and the
conditional distributions that Gibbs-type samplers need. ``forward`` never calls a device.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from kpp_sdk.problem import IsingProblem

from .errors import InvalidDataError

__all__ = ["AbstractBoltzmannMachine", "binary_states", "quadratic_to_ising",
           "is_kaiwu_optimizer", "MAX_ENUMERATION_UNITS"]

#: Largest number of binary units summed over by exact enumeration (2^24 states, in chunks).
MAX_ENUMERATION_UNITS = 24

_CHUNK = 1 << 15


def binary_states(n: int, start: int = 0, stop: int | None = None, *, device=None,
                  dtype=torch.float64) -> torch.Tensor:
    """Rows ``k`` in ``[start, stop)`` of the enumeration of ``{0,1}^n``: bit ``i`` of ``k`` is
    unit ``i`` (the order of :func:`kpp_sdk.exact.all_states`)."""
    stop = (1 << n) if stop is None else stop
    k = torch.arange(start, stop, device=device, dtype=torch.int64)[:, None]
    bits = (k >> torch.arange(n, device=device, dtype=torch.int64)) & 1
    return bits.to(dtype)


def iter_binary_states(n: int, *, device=None, dtype=torch.float64,
                       chunk: int = _CHUNK) -> Iterator[torch.Tensor]:
    """All of ``{0,1}^n`` in chunks (see :func:`binary_states`)."""
    if n > MAX_ENUMERATION_UNITS:
        raise InvalidDataError(
            f"exact enumeration is limited to {MAX_ENUMERATION_UNITS} binary units, got {n}; "
            "use annealed importance sampling (kpp_sdk.models.ais_log_partition) instead"
        )
    total = 1 << n
    for start in range(0, total, chunk):
        yield binary_states(n, start, min(start + chunk, total), device=device, dtype=dtype)


def quadratic_to_ising(W: np.ndarray, b: np.ndarray, c: float = 0.0) -> IsingProblem:
    """The Ising problem of ``E(x) = -b^T x - 1/2 x^T W x + c`` under ``s = 2x - 1`` (see the
    module docstring); ``W`` is symmetrised and its diagonal moved into ``b`` (``x_i^2 = x_i``)."""
    W = np.asarray(W, dtype=np.float64)
    W = 0.5 * (W + W.T)  # products such as W^T D W are symmetric only up to rounding
    b = np.asarray(b, dtype=np.float64)
    d = np.diagonal(W).copy()
    if np.any(d != 0):
        # x_i^2 = x_i: a diagonal coupling is a field
        b = b + 0.5 * d
        W = W - np.diag(d)
    J = 0.25 * W
    h = 0.5 * b + 0.25 * W.sum(axis=1)
    offset = float(c) - 0.5 * float(b.sum()) - 0.125 * float(W.sum())
    return IsingProblem(J, h, offset)


class AbstractBoltzmannMachine(nn.Module, abc.ABC):
    """A Boltzmann machine: an energy over visible and hidden units (see the module docstring).

    Subclasses implement :meth:`energy`, :meth:`quadratic_form`, :meth:`gibbs_step` and
    :meth:`_config`; those whose hidden units are conditionally independent given the visible
    ones (RBMs) set :attr:`exact_hidden_conditional` and implement :meth:`hidden_expectation`.

    The method names ``forward``, ``get_ising_matrix``, ``objective`` and ``sample(sampler)`` have
    the meaning they have in QBoson's kaiwu-torch-plugin 0.3.0.
    """

    #: True when ``p(h | v)`` factorises and ``E`` is linear in ``h``: the positive phase is then
    #: exact (:meth:`hidden_expectation`) and needs no sampling.
    exact_hidden_conditional: bool = False
    #: True when the visible units are binary (False for Gaussian visible units).
    binary_visible: bool = True

    num_visible: int
    num_hidden: int

    # --- shape and placement --------------------------------------------------------------

    @property
    def num_nodes(self) -> int:
        """Visible plus hidden units (the width of a state)."""
        return self.num_visible + self.num_hidden

    @property
    def num_spins(self) -> int:
        """Spins of :meth:`to_ising` (the binary units; all units for BM and RBM)."""
        return self.num_nodes

    def _first_parameter(self) -> torch.Tensor:
        # every model here has linear_bias; looking it up beats iterating parameters()
        p = self._parameters.get("linear_bias")
        return p if p is not None else next(self.parameters())

    @property
    def device(self) -> torch.device:
        """The torch device of the parameters (not an Ising machine)."""
        return self._first_parameter().device

    @property
    def dtype(self) -> torch.dtype:
        return self._first_parameter().dtype

    def _config(self) -> dict:
        """Constructor arguments that rebuild a model of this shape (for checkpoints)."""
        raise NotImplementedError

    def config(self) -> dict:
        return {"class": type(self).__name__, **self._config()}

    # --- energies ---------------------------------------------------------------------------

    @abc.abstractmethod
    def energy(self, states: torch.Tensor) -> torch.Tensor:
        """``E(x)`` of each row of ``states`` (shape ``(B, num_nodes)``), shape ``(B,)``."""

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """The energy (kaiwu-torch-plugin's ``forward`` computes the Hamiltonian)."""
        return self.energy(states)

    @abc.abstractmethod
    def quadratic_form(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]:
        """``(W, b, c)`` with ``E(x) = -b^T x - 1/2 x^T W x + c`` over the :attr:`num_spins`
        binary units; ``W`` symmetric with zero diagonal. Differentiable."""

    def free_energy(self, visible: torch.Tensor) -> torch.Tensor:
        """``F(v) = -log sum_h exp(-E(v, h))`` per row; ``log p(v) = -F(v) - log Z``."""
        raise NotImplementedError(f"{type(self).__name__} has no tractable free energy")

    # --- the Ising view ---------------------------------------------------------------------

    def to_ising(self) -> IsingProblem:
        """The model as an :class:`~kpp_sdk.IsingProblem` over ``s = 2x - 1`` whose energy equals
        the model's energy (module docstring); float64, detached from autograd."""
        with torch.no_grad():
            W, b, c = self.quadratic_form()
            c = float(c) if not torch.is_tensor(c) else float(c.detach().cpu())
            return quadratic_to_ising(W.detach().double().cpu().numpy(),
                                      b.detach().double().cpu().numpy(), c)

    def get_ising_matrix(self) -> np.ndarray:
        """The Kaiwu ``(n+1) x (n+1)`` ancilla matrix of :meth:`to_ising` (``H = -s^T M s`` with
        ``s_n = +1``; see :meth:`kpp_sdk.IsingProblem.to_kaiwu`), as kaiwu-torch-plugin returns
        it. The constant offset is not part of the format."""
        return self.to_ising().to_kaiwu()

    def states_from_spins(self, spins: Any,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """Model states from spins of :meth:`to_ising` (``x = (s + 1) / 2``), on the model's torch
        device and dtype. Models whose Ising view covers only part of the units (Gaussian
        visible units) draw the rest from their exact conditional."""
        s = _spins_tensor(spins, self.device, self.dtype)
        if s.ndim != 2 or s.shape[1] != self.num_spins:
            raise InvalidDataError(
                f"spins must have shape (num_samples, {self.num_spins}), got {tuple(s.shape)}"
            )
        return (s + 1) * 0.5

    # --- data checks --------------------------------------------------------------------------

    def check_visible(self, visible: Any) -> torch.Tensor:
        """``visible`` as a 2-D tensor on the model's device and dtype, or
        :class:`InvalidDataError` naming the first bad entry and the fix."""
        v = torch.as_tensor(visible)
        if v.ndim == 1:
            v = v[None, :]
        if v.ndim != 2 or v.shape[1] != self.num_visible:
            raise InvalidDataError(
                f"data must have shape (batch, {self.num_visible}) for this model "
                f"({self.num_visible} visible units), got {tuple(torch.as_tensor(visible).shape)}"
            )
        v = v.to(device=self.device, dtype=self.dtype)
        if not self.binary_visible and not torch.isfinite(v).all():
            r, c = (int(i) for i in torch.nonzero(~torch.isfinite(v))[0])
            raise InvalidDataError(f"data[{r}, {c}] = {float(v[r, c])} is not finite")
        if self.binary_visible:
            bad = (v != 0) & (v != 1)  # NaN fails both comparisons, so this catches it too
            if bad.any():
                r, c = (int(i) for i in torch.nonzero(bad)[0])
                raise InvalidDataError(
                    f"data[{r}, {c}] = {float(v[r, c])} but binary units take values in {{0, 1}}; "
                    "binarise the data first (e.g. (x > 0.5)), or map spins with x = (s + 1) / 2"
                )
        return v

    def init_visible_bias(self, data: Any, eps: float = 0.01) -> None:
        """Set the visible biases to ``log(p / (1 - p))`` of the data's unit means (``p`` clipped
        to ``[eps, 1 - eps]``): the model then starts at the best independent-unit fit, which
        speeds up the first epochs (Hinton's practical guide, section 8)."""
        v = self.check_visible(data)
        with torch.no_grad():
            p = v.mean(0).clamp(eps, 1 - eps)
            self.linear_bias[: self.num_visible] = torch.log(p) - torch.log1p(-p)

    def check_states(self, states: Any) -> torch.Tensor:
        s = torch.as_tensor(states, device=self.device, dtype=self.dtype)
        if s.ndim != 2 or s.shape[1] != self.num_nodes:
            raise InvalidDataError(
                f"states must have shape (batch, {self.num_nodes}) (visible then hidden units), "
                f"got {tuple(s.shape)}"
            )
        return s

    # --- the training objective ---------------------------------------------------------------

    def objective(self, data_states: torch.Tensor, model_states: torch.Tensor, *,
                  data_weights: torch.Tensor | None = None,
                  model_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean energy of the data states minus mean energy of the model states.

        Its gradient, ``<dE/dθ>_data - <dE/dθ>_model``, is the gradient of the negative
        log-likelihood when ``data_states`` hold the data with hidden units drawn from (or, for
        RBMs, averaged over) ``p(h | v)`` and ``model_states`` are samples of the model; with exact
        model statistics (every state, weighted by ``p(x)``) it is the exact gradient. Minimise
        it. The states are treated as constants (detached). Optional weights give weighted
        means (normalised here).
        """
        return (_weighted_mean(self.energy(data_states.detach()), data_weights)
                - _weighted_mean(self.energy(model_states.detach()), model_weights))

    # --- what samplers use ------------------------------------------------------------------

    def hidden_expectation(self, visible: torch.Tensor) -> torch.Tensor:
        """States with the hidden units replaced by ``E[h | v]`` (models with
        :attr:`exact_hidden_conditional`)."""
        raise NotImplementedError(f"{type(self).__name__}: p(h | v) does not factorise")

    def rao_blackwellize(self, states: torch.Tensor) -> torch.Tensor:
        """Replace sampled hidden units by ``E[h | v]`` where that is exact (lower variance, same
        expected gradient); other models' states are returned unchanged."""
        if not self.exact_hidden_conditional or self.num_hidden == 0:
            return states
        return self.hidden_expectation(states[:, : self.num_visible])

    @abc.abstractmethod
    def gibbs_step(self, states: torch.Tensor, *, num_clamped: int = 0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """One Gibbs sweep at inverse temperature 1 that leaves ``p`` invariant; the first
        ``num_clamped`` units are held fixed (``num_visible``: sample ``h`` given ``v``)."""

    def random_states(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniformly random states (the start of persistent chains)."""
        u = torch.rand(num, self.num_nodes, generator=generator, device=self.device,
                       dtype=self.dtype)
        return (u < 0.5).to(self.dtype)

    def clamped_ising(self, visible: torch.Tensor) -> IsingProblem:
        """The Ising problem of the hidden units given each row of ``visible``: block ``r`` (spins
        ``r*H .. r*H+H-1``) is ``p(h | v_r)``, blocks uncoupled (a sparse block-diagonal ``J``).
        ``visible`` may fix any number ``k`` of leading units; the rest are sampled."""
        with torch.no_grad():
            W, b, _ = self.quadratic_form()
            W = W.detach().double()
            b = b.detach().double()
            v = visible.detach().to(W.device, torch.float64)
            k = v.shape[1]
            n = W.shape[0]
            if not 0 < k < n:
                raise InvalidDataError(f"clamped sampling fixes 1..{n - 1} units, got {k}")
            fields = b[k:][None, :] + v @ W[:k, k:]                    # (B, H)
            return _block_diagonal_ising(W[k:, k:].cpu().numpy(), fields.cpu().numpy())

    def states_from_clamped_spins(self, visible: torch.Tensor, spins: Any) -> torch.Tensor:
        """States ``(B * reads, num_nodes)`` from reads of :meth:`clamped_ising`: row
        ``r * reads + k`` is ``visible[r]`` with the hidden units of read ``k`` of block ``r``."""
        v = visible.to(self.device, self.dtype)
        B, k = v.shape
        s = _spins_tensor(spins, self.device, self.dtype)
        reads = s.shape[0]
        h = ((s + 1) * 0.5).reshape(reads, B, self.num_nodes - k).transpose(0, 1)
        return torch.cat([v[:, None, :].expand(B, reads, k), h], dim=2).reshape(
            B * reads, self.num_nodes)

    # --- kaiwu-torch-plugin's sampling entry point ------------------------------------------

    def sample(self, sampler: Any = None, num_samples: int | None = None) -> torch.Tensor:
        """Samples of the model as states in {0, 1}, on the model's torch device.

        ``sampler`` is a :class:`kpp_sdk.models.samplers.ModelSampler` (a
        :class:`~kpp_sdk.models.samplers.BoltzmannSampler`, CD or PCD), a
        :class:`kpp_sdk.Device`, a device name, or a Kaiwu optimizer (an object with
        ``solve(ising_matrix)``, used as kaiwu-torch-plugin used it: raw solver output, no
        temperature correction). None uses ``sa.cpu`` in Boltzmann sampling mode.
        """
        from kpp_sdk.models.samplers import as_sampler

        from kpp_sdk.problem import IsingProblem

        if is_kaiwu_optimizer(sampler):
            spins = IsingProblem.spins_from_kaiwu(sampler.solve(self.get_ising_matrix()), self.num_spins)
            return self.states_from_spins(spins)
        return as_sampler("sa.cpu" if sampler is None else sampler).sample(self, num_samples)

    def extra_repr(self) -> str:
        return f"num_visible={self.num_visible}, num_hidden={self.num_hidden}"


def is_kaiwu_optimizer(obj: Any) -> bool:
    """True for a Kaiwu-style optimizer (an object with ``solve(ising_matrix)``) that is not one
    of the SDK's own samplers, Devices or device names."""
    from kpp_sdk.models.samplers import ModelSampler

    from kpp_sdk.device import Device

    return (obj is not None and not isinstance(obj, (ModelSampler, Device, str))
            and callable(getattr(obj, "solve", None)))


def _spins_tensor(spins: Any, device, dtype) -> torch.Tensor:
    if torch.is_tensor(spins):
        return spins.to(device=device, dtype=dtype)
    return torch.from_numpy(np.asarray(spins).astype(np.float32)).to(device=device, dtype=dtype)


def _weighted_mean(x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    if w is None:
        return x.mean()
    w = torch.as_tensor(w, device=x.device, dtype=x.dtype)
    return (x * w).sum() / w.sum()


def _block_diagonal_ising(W_hh: np.ndarray, fields: np.ndarray) -> IsingProblem:
    """``B`` uncoupled copies of ``E(h) = -f_r^T h - 1/2 h^T W_hh h`` as one sparse problem."""
    import scipy.sparse as sp

    B = fields.shape[0]
    Jb = 0.25 * W_hh
    hb = 0.5 * fields + 0.25 * W_hh.sum(axis=1)[None, :]
    J = sp.kron(sp.identity(B, format="csr"), sp.csr_matrix(Jb), format="csr")
    return IsingProblem(J, hb.reshape(-1))


def log_sum_exp_chunks(values: Iterator[torch.Tensor]) -> torch.Tensor:
    """``log sum exp`` over the last axis of a stream of chunks, stable."""
    acc = None
    for v in values:
        m = torch.logsumexp(v, dim=-1)
        acc = m if acc is None else torch.logaddexp(acc, m)
    return acc
