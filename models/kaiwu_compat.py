"""kaiwu-torch-plugin 0.3.0's public names, one import away.

Replace ``from kaiwu.torch_plugin import ...`` (and ``from kaiwu.torch_plugin.<module> import
...``) by ``from kpp_sdk.models.kaiwu_compat import ...``: the plugin's own test files pass
against this module with only their import lines changed. Constructors, parameter and keyword
names (``quadratic_coef``, ``linear_bias``, ``forward(s_all)``, ``objective(s_positive,
s_negative)``, ``get_ising_matrix()``, ``sample(sampler)``), state-dict keys and the way the
plugin subclasses its abstract base (``__init__(device)``, ``forward``, ``_to_ising_matrix``)
keep their meaning. Wherever the plugin took a Kaiwu optimizer (``solve(ising_matrix)``), these
classes take one too (:mod:`kpp_sdk.kaiwu` has stand-ins), or a kpp Device, a device name, a
``dimod.Sampler`` or a :class:`~kpp_sdk.models.samplers.ModelSampler`. See
``docs/migrating-from-kaiwu.md``.

Differences, on purpose (each in that page): the default torch device is the CPU (the plugin
picked CUDA when present); the usage-statistics functions exist but nothing is ever collected
or sent; the conditional Kaiwu matrix of :meth:`BoltzmannMachine._hidden_to_ising_matrix` is
exact (the plugin's field term differed when hidden units are coupled); a Gaussian-Bernoulli
RBM keeps given ``linear_bias``/``quadratic_coef`` (the plugin re-initialised them).
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from . import feature_selection as plugin
from .base import AbstractBoltzmannMachine as _Base
from .base import is_kaiwu_optimizer
from .bm import BoltzmannMachine as _BoltzmannMachine
from .dbn import DeepBeliefNetwork
from .errors import InvalidDataError
from .feature_selection import FeatureSelectionWrapper, QuadraticLinearSolver
from .gbrbm import GaussianBernoulliRBM as _GaussianBernoulliRBM
from .guided_diffusion import (
    EnergyGuidedDiffusion,
    EnergyModel,
    GuidedDiffusionConfig,
    SequenceTokenSpec,
)
from .qvae import (
    QVAE,
    AutoEncoderBase,
    DistUtil,
    Exponential,
    FactorialBernoulliUtil,
    MixtureGeneric,
    SmoothingDist,
    sigmoid_cross_entropy_with_logits,
)
from .rbm import RestrictedBoltzmannMachine as _RestrictedBoltzmannMachine

__version__ = "0.3.0"

__all__ = [
    "QVAE",
    "AbstractBoltzmannMachine",
    "AutoEncoderBase",
    "BoltzmannMachine",
    "DistUtil",
    "EnergyModel",
    "Exponential",
    "FactorialBernoulliUtil",
    "FeatureSelectionWrapper",
    "GaussianBernoulliRestrictedBoltzmannMachine",
    "MixtureGeneric",
    "QDiffusion",
    "QDiffusionConfig",
    "QuadraticLinearSolver",
    "RestrictedBoltzmannMachine",
    "SequenceTokenSpec",
    "SmoothingDist",
    "UnsupervisedDBN",
    "disable_usage_stats",
    "enable_usage_stats",
    "is_usage_stats_enabled",
    "kpp_caller_context",
    "plugin",
    "sigmoid_cross_entropy_with_logits",
]


class AbstractBoltzmannMachine(_Base):
    """The plugin's abstract base: ``__init__(device=None)``, ``forward(s_all)`` (the energy),
    ``get_ising_matrix()`` (which calls ``_to_ising_matrix()``), ``objective(s_positive,
    s_negative)`` and ``sample(sampler)``; ``device``, ``dtype`` and ``num_nodes`` may be assigned
    as the plugin's models do.

    A model written the plugin's way (``forward`` and ``_to_ising_matrix`` only) works with Kaiwu
    optimizers and, through its Kaiwu matrix, with every kpp Device and sampler; the SDK's own
    models (:class:`BoltzmannMachine`, ...) implement both this and the SDK's interface.
    """

    def __init__(self, device: Any = None) -> None:
        nn.Module.__init__(self)
        self.device = device

    # --- what the plugin's models assign -------------------------------------------------------

    def _hint(self, name: str, default: Any) -> Any:
        return self.__dict__.get(name, default)

    @property
    def device(self) -> torch.device:
        """The parameters' torch device (before any parameter exists: the one assigned, else
        the CPU)."""
        p = next(iter(self.parameters()), None)
        return p.device if p is not None else torch.device(self._hint("_kpp_device", "cpu"))

    @device.setter
    def device(self, value: Any) -> None:
        self.__dict__["_kpp_device"] = torch.device("cpu" if value is None else value)

    @property
    def dtype(self) -> torch.dtype:
        p = next(iter(self.parameters()), None)
        return p.dtype if p is not None else self._hint("_kpp_dtype", torch.get_default_dtype())

    @dtype.setter
    def dtype(self, value: torch.dtype) -> None:
        self.__dict__["_kpp_dtype"] = value

    @property
    def num_visible(self) -> int:
        """Visible units; a plugin-style model that never sets it has all units visible."""
        value = self._hint("_kpp_num_visible", None)
        return value if value is not None else self._hint("_kpp_num_nodes", 0)

    @num_visible.setter
    def num_visible(self, value: int) -> None:
        self.__dict__["_kpp_num_visible"] = int(value)

    @property
    def num_hidden(self) -> int:
        return self._hint("_kpp_num_hidden", 0)

    @num_hidden.setter
    def num_hidden(self, value: int) -> None:
        self.__dict__["_kpp_num_hidden"] = int(value)

    @property
    def num_nodes(self) -> int:
        hint = self._hint("_kpp_num_nodes", None)
        return hint if hint is not None else self.num_visible + self.num_hidden

    @num_nodes.setter
    def num_nodes(self, value: int) -> None:
        self.__dict__["_kpp_num_nodes"] = int(value)

    @property
    def num_spins(self) -> int:
        if self._plugin_style():
            return self.get_ising_matrix().shape[0] - 1
        return _Base.num_spins.fget(self)

    def _plugin_style(self) -> bool:
        return type(self)._to_ising_matrix is not AbstractBoltzmannMachine._to_ising_matrix

    # --- the plugin's interface --------------------------------------------------------------

    def forward(self, s_all: torch.Tensor) -> torch.Tensor:
        """The energy of each row of ``s_all``."""
        return self.energy(s_all)

    def energy(self, states: torch.Tensor) -> torch.Tensor:
        if type(self).forward is AbstractBoltzmannMachine.forward:
            raise NotImplementedError(f"{type(self).__name__} must define forward(s_all)")
        return self.forward(states)

    def _to_ising_matrix(self) -> np.ndarray:
        """The Kaiwu matrix; plugin-style models override this."""
        return _Base.get_ising_matrix(self)

    def get_ising_matrix(self) -> np.ndarray:
        return self._to_ising_matrix()

    def to_ising(self):
        """The Ising problem; for a plugin-style model, the one of its Kaiwu matrix (no offset)."""
        if self._plugin_style():
            from kpp_sdk.problem import IsingProblem

            M = np.asarray(self._to_ising_matrix(), dtype=np.float64)
            return IsingProblem.from_kaiwu(0.5 * (M + M.T))
        return _Base.to_ising(self)

    def quadratic_form(self):
        raise NotImplementedError(
            f"{type(self).__name__} is written the kaiwu-torch-plugin way: it samples through its "
            "Kaiwu matrix (_to_ising_matrix); define quadratic_form() for the SDK's exact tools")

    def gibbs_step(self, states, *, num_clamped: int = 0, generator=None):
        raise NotImplementedError(f"{type(self).__name__} has no Gibbs sampler")

    def objective(self, s_positive: torch.Tensor, s_negative: torch.Tensor,
                  **weights: Any) -> torch.Tensor:
        """Mean energy of ``s_positive`` (data) minus mean energy of ``s_negative`` (model
        samples)."""
        return _Base.objective(self, s_positive, s_negative, **weights)

    def sample(self, sampler: Any = None, num_samples: int | None = None) -> torch.Tensor:
        """Samples as states in {0, 1}. A Kaiwu optimizer's rows ``[s, a]`` become
        ``(s a + 1) / 2`` exactly as the plugin maps them (values other than +-1, which no real
        optimizer returns, are mapped the same way with a warning); anything else goes through
        :meth:`kpp_sdk.models.base.AbstractBoltzmannMachine.sample`."""
        if is_kaiwu_optimizer(sampler):
            return self._states_from_solution(sampler.solve(self.get_ising_matrix()))
        return _Base.sample(self, sampler, num_samples)

    def _units_from_solution(self, solution: Any) -> torch.Tensor:
        """The Ising-view units ``(s a + 1) / 2`` of an optimizer's rows ``[s, a]``."""
        s = np.asarray(solution, dtype=np.float64)
        s = s[None, :] if s.ndim == 1 else s
        if s.ndim != 2 or s.shape[1] != self.num_spins + 1:
            raise InvalidDataError(f"the optimizer returned shape {s.shape}; expected "
                                   f"(k, {self.num_spins + 1}) with the ancilla spin last")
        if not np.isin(s, (-1.0, 1.0)).all():
            warnings.warn("the optimizer returned values other than -1/+1; mapped with "
                          "(s * ancilla + 1) / 2 as kaiwu-torch-plugin does", RuntimeWarning,
                          stacklevel=4)
        return torch.as_tensor((s[:, :-1] * s[:, -1:] + 1) / 2, device=self.device,
                               dtype=self.dtype)

    def _states_from_solution(self, solution: Any) -> torch.Tensor:
        x = self._units_from_solution(solution)
        if ((x == 0) | (x == 1)).all():
            return self.states_from_spins(2 * x - 1)
        return x


class BoltzmannMachine(_BoltzmannMachine, AbstractBoltzmannMachine):
    """kaiwu-torch-plugin's ``BoltzmannMachine(num_nodes, quadratic_coef, linear_bias, device)``:
    a fully connected machine over ``num_nodes`` units whose visible/hidden split is given per
    call (``hidden_bias(num_hidden)``, ``condition_sample(sampler, s_visible)``)."""

    def __init__(self, num_nodes: int, quadratic_coef=None, linear_bias=None, device=None):
        _BoltzmannMachine.__init__(self, num_nodes, 0, quadratic_coef, linear_bias, device)

    def hidden_bias(self, num_hidden: int) -> torch.Tensor:
        return self.linear_bias[self.num_nodes - int(num_hidden):]

    def visible_bias(self, num_visible: int) -> torch.Tensor:
        return self.linear_bias[: int(num_visible)]

    def gibbs_sample(self, num_steps: int = 100, s_visible: torch.Tensor | None = None,
                     num_sample: int | None = None) -> torch.Tensor:
        """``num_steps`` Gibbs sweeps from random units; with ``s_visible`` its units are held
        fixed (only the rest is sampled). Returns full states."""
        if s_visible is None and num_sample is None:
            raise InvalidDataError("Either s_visible or num_sample must be provided.")
        n = num_sample if s_visible is None else s_visible.shape[0]
        x = self.random_states(int(n))
        k = 0
        if s_visible is not None:
            k = s_visible.shape[1]
            x[:, :k] = torch.as_tensor(s_visible, device=x.device, dtype=x.dtype)
        for _ in range(int(num_steps)):
            x = self.gibbs_step(x, num_clamped=k)
        return x

    def _hidden_to_ising_matrix(self, s_visible: torch.Tensor) -> np.ndarray:
        """The Kaiwu matrix of the units after ``s_visible`` (one row) given it: ``(H+1, H+1)``,
        whose energy differences are the model's (exact, the hidden couplings included)."""
        v = torch.as_tensor(s_visible, device=self.device, dtype=self.dtype).reshape(1, -1)
        return self.clamped_ising(v).to_kaiwu()


class RestrictedBoltzmannMachine(_RestrictedBoltzmannMachine, AbstractBoltzmannMachine):
    """kaiwu-torch-plugin's ``RestrictedBoltzmannMachine(num_visible, num_hidden,
    quadratic_coef, linear_bias, device)`` (:class:`kpp_sdk.models.RestrictedBoltzmannMachine`
    with the plugin's interface)."""


class GaussianBernoulliRestrictedBoltzmannMachine(_GaussianBernoulliRBM, AbstractBoltzmannMachine):
    """kaiwu-torch-plugin's Gaussian-Bernoulli RBM: ``(num_visible, num_hidden,
    is_visible_gaussian=True, eps, dtype, linear_bias, quadratic_coef, device)``.

    States are Gaussian units first, then Bernoulli units, whichever layer is visible
    (``is_visible_gaussian=False`` swaps which one the data is); ``num_gaussian`` and
    ``num_bernoulli`` give the sizes, and, unlike the plugin, ``num_visible`` / ``num_hidden``
    here name the Gaussian / Bernoulli parts. The energy is
    :class:`kpp_sdk.models.GaussianBernoulliRBM`'s (the same formula as the plugin's)."""

    def __init__(self, num_visible: int, num_hidden: int, is_visible_gaussian: bool = True,
                 eps: float = 1e-8, dtype: torch.dtype = torch.float32, linear_bias=None,
                 quadratic_coef=None, device=None):
        gauss, bern = (num_visible, num_hidden) if is_visible_gaussian else (num_hidden,
                                                                             num_visible)
        _GaussianBernoulliRBM.__init__(self, gauss, bern, eps=eps, device=device, dtype=dtype)
        self.is_visible_gaussian = bool(is_visible_gaussian)
        with torch.no_grad():
            for name, value in (("linear_bias", linear_bias), ("quadratic_coef", quadratic_coef)):
                if value is not None:
                    param = getattr(self, name)
                    value = torch.as_tensor(value, dtype=param.dtype, device=param.device)
                    if value.shape != param.shape:
                        raise InvalidDataError(f"{name} must have shape {tuple(param.shape)}, "
                                               f"got {tuple(value.shape)}")
                    param.copy_(value)

    @property
    def num_gaussian(self) -> int:
        return self.num_visible

    @property
    def num_bernoulli(self) -> int:
        return self.num_hidden

    def energy(self, s_all: torch.Tensor, enable_grad: bool = True) -> torch.Tensor:
        """The energy (the plugin's default was ``enable_grad=False``; here the SDK's training
        code relies on gradients, so it is True)."""
        with torch.set_grad_enabled(enable_grad):
            return _GaussianBernoulliRBM.energy(self, s_all)

    def forward(self, s_all: torch.Tensor) -> torch.Tensor:
        return self.energy(s_all, enable_grad=True)

    def marginal_energy(self, s_gaussian: torch.Tensor) -> torch.Tensor:
        """The free energy of the Gaussian units (Bernoulli units summed out), no gradient."""
        with torch.no_grad():
            return self.free_energy(s_gaussian)

    def positive_phase_energy_expectation(self, s_gaussian: torch.Tensor,
                                          enable_grad: bool = True) -> torch.Tensor:
        """``E(v, p(h | v))``: the energy with the Bernoulli units at their (detached)
        conditional means; the positive phase of training."""
        v = torch.as_tensor(s_gaussian, device=self.device, dtype=self.dtype)
        with torch.no_grad():
            p = self.hidden_probs(v)
        with torch.set_grad_enabled(enable_grad):
            return _GaussianBernoulliRBM.energy(self, torch.cat([v, p], dim=1))

    def infer_from_gaussian(self, s_gaussian: torch.Tensor, binarize: bool = True,
                            no_random: bool = False) -> torch.Tensor:
        """``[v, h]`` with ``h`` = ``p(h | v)`` (``binarize=False``), ``p >= 1/2``
        (``no_random``) or a draw."""
        with torch.no_grad():
            v = torch.as_tensor(s_gaussian, device=self.device, dtype=self.dtype)
            p = self.hidden_probs(v)
            if binarize:
                p = (p >= 0.5).to(p.dtype) if no_random else (torch.rand_like(p) < p).to(p.dtype)
            return torch.cat([v, p], dim=1)

    def infer_from_bernoulli(self, s_bernoulli: torch.Tensor,
                             no_random: bool = False) -> torch.Tensor:
        """``[v, h]`` with ``v`` = ``E[v | h] = mu + W h`` (``no_random``) or a draw of
        ``N(mu + W h, var)``."""
        with torch.no_grad():
            h = torch.as_tensor(s_bernoulli, device=self.device, dtype=self.dtype)
            mean = self.visible_mean(h)
            v = mean if no_random else mean + torch.randn_like(mean) * self.std
            return torch.cat([v, h], dim=1)

    def gibbs_sample(self, n_step: int, n_burnin: int = 0, s_gaussian=None, s_bernoulli=None,
                     sampler: Any = None, n_sample: int | None = None) -> torch.Tensor:
        """Block Gibbs chains, started from ``s_gaussian``, ``s_bernoulli``, a ``sampler``'s
        Bernoulli samples or ``n_sample`` standard-normal Gaussian units; the states after
        steps ``max(n_burnin, 1)`` .. ``n_step`` (1-based) of every chain, concatenated step
        by step (the plugin's convention)."""
        with torch.no_grad():
            if s_gaussian is not None:
                x, gaussian_first = torch.as_tensor(s_gaussian, dtype=self.dtype), True
            elif s_bernoulli is not None:
                x, gaussian_first = torch.as_tensor(s_bernoulli, dtype=self.dtype), False
            elif sampler is not None:
                x, gaussian_first = self.sample(sampler)[:, self.num_gaussian:], False
            else:
                if n_sample is None:
                    raise InvalidDataError("give s_gaussian, s_bernoulli, sampler or n_sample")
                x = torch.randn(int(n_sample), self.num_gaussian, dtype=self.dtype)
                gaussian_first = True
            x = x.to(self.device)
            kept = []
            for step in range(1, int(n_step) + 1):
                if gaussian_first:
                    h = self.infer_from_gaussian(x)[:, self.num_gaussian:]
                    states = self.infer_from_bernoulli(h)
                    x = states[:, : self.num_gaussian]
                else:
                    v = self.infer_from_bernoulli(x)[:, : self.num_gaussian]
                    states = self.infer_from_gaussian(v)
                    x = states[:, self.num_gaussian:]
                if step >= max(int(n_burnin), 1):
                    kept.append(states)
            return torch.cat(kept)

    def sample(self, sampler: Any = None, num_samples: int | None = None) -> torch.Tensor:
        """Bernoulli units from ``sampler`` (through the Kaiwu matrix of their marginal) and the
        Gaussian units at their conditional means ``mu + W h``, as the plugin returns them."""
        if is_kaiwu_optimizer(sampler):
            h = self._units_from_solution(sampler.solve(self.get_ising_matrix()))
        else:
            h = _Base.sample(self, sampler, num_samples)[:, self.num_gaussian:]
        return self.infer_from_bernoulli(h, no_random=True)


class UnsupervisedDBN(DeepBeliefNetwork):
    """kaiwu-torch-plugin's ``UnsupervisedDBN(hidden_layers_structure)``: layers are created by
    :meth:`create_rbm_layer` (or :meth:`fit`); ``forward``/``transform`` take and return NumPy
    arrays (tensors stay tensors) and require :meth:`mark_as_trained` (done by :meth:`fit`)."""

    def __init__(self, hidden_layers_structure=None):
        nn.Module.__init__(self)
        self.hidden_layers_structure = (list(hidden_layers_structure)
                                        if hidden_layers_structure is not None else [100, 100])
        self.rbm_layers = None
        self.layer_sizes = None
        self.input_dim = None
        self._is_trained = False

    @property
    def rbms(self):
        """The layers (registered as ``rbm_layers``, so state dicts carry the plugin's keys
        ``rbm_layers.<i>.quadratic_coef`` / ``.linear_bias``)."""
        return self.rbm_layers

    @property
    def device(self) -> torch.device:
        return self.rbms[0].device if self.rbms else torch.device("cpu")

    def create_rbm_layer(self, input_dim: int) -> UnsupervisedDBN:
        structure = self.hidden_layers_structure
        DeepBeliefNetwork.__init__(self, [int(input_dim), *structure])
        self.__dict__.pop("rbm_layers", None)
        del self._modules["rbms"]
        sizes = self.layer_sizes
        self.rbm_layers = nn.ModuleList(RestrictedBoltzmannMachine(a, b)
                                        for a, b in itertools.pairwise(sizes))
        self.hidden_layers_structure = self.layer_sizes[1:]
        self.input_dim = int(input_dim)
        self._is_trained = False
        return self

    def mark_as_trained(self) -> UnsupervisedDBN:
        self._is_trained = True
        return self

    def fit(self, data, sampler: Any = None, **kwargs: Any) -> list[list[dict]]:
        """Greedy training (:func:`kpp_sdk.models.fit_dbn`; default sampler: ``sa.cpu``)."""
        from .training import fit_dbn

        data = torch.as_tensor(np.asarray(data) if not torch.is_tensor(data) else data)
        if self.rbms is None:
            self.create_rbm_layer(data.shape[1])
        histories = fit_dbn(self, data, "sa.cpu" if sampler is None else sampler, **kwargs)
        self.mark_as_trained()
        return histories

    def forward(self, data_in):
        if self.rbms is None:
            raise ValueError("Model not built yet. Call create_rbm_layer first.")
        if not self._is_trained:
            raise ValueError("Model not trained yet. Call mark_as_trained() after training.")
        if torch.is_tensor(data_in):
            return self.transform(data_in.to(self.dtype))
        out = self.transform(torch.as_tensor(np.asarray(data_in, dtype=np.float32)).to(self.dtype))
        return out.cpu().numpy()

    def transform(self, data_in, num_layers: int | None = None):
        if torch.is_tensor(data_in):
            return DeepBeliefNetwork.transform(self, data_in, num_layers)
        x = torch.as_tensor(np.asarray(data_in), dtype=self.dtype)
        return DeepBeliefNetwork.transform(self, x, num_layers).cpu().numpy()

    def check_visible(self, visible):
        if self.rbms is None:
            raise ValueError("Model not built yet. Call create_rbm_layer first.")
        v = torch.as_tensor(np.asarray(visible) if not torch.is_tensor(visible) else visible)
        # the plugin feeds real-valued activations (e.g. min-max scaled pixels) to its layers
        if not self.rbms[0].binary_visible or ((v == 0) | (v == 1)).all():
            return self.rbms[0].check_visible(v)
        return v.to(self.device, self.dtype)

    def reconstruct(self, data_in, layer_index: int = 0):
        if not self.rbms:
            raise ValueError("No RBM layers found. Please fit the model first.")
        if layer_index >= len(self.rbms):
            raise ValueError(f"Layer index {layer_index} out of range.")
        return self.reconstruct_with_rbm(self.rbms[layer_index], data_in, self.device)

    def get_rbm_layer(self, index: int):
        return self.rbms[index] if index < len(self.rbms) else None

    @staticmethod
    def reconstruct_with_rbm(rbm: RestrictedBoltzmannMachine, data_in, device=None):
        """``(p(v | E[h | v]), mean squared error per row)`` as NumPy arrays."""
        device = rbm.device if device is None else device
        x = torch.as_tensor(np.asarray(data_in), dtype=rbm.dtype, device=device)
        with torch.no_grad():
            recon = rbm.visible_probs(rbm.hidden_probs(x))
            err = ((x - recon) ** 2).mean(dim=1)
        return recon.cpu().numpy(), err.cpu().numpy()

    @property
    def num_layers(self) -> int:
        return len(self.rbms) if self.rbms is not None else 0

    @property
    def output_dim(self) -> int:
        if self.rbms:
            return self.rbms[-1].num_hidden
        return self.input_dim


@dataclass
class QDiffusionConfig(GuidedDiffusionConfig):
    """kaiwu-torch-plugin's name for :class:`kpp_sdk.models.guided_diffusion.GuidedDiffusionConfig`."""


class QDiffusion(EnergyGuidedDiffusion):
    """kaiwu-torch-plugin's ``QDiffusion(proposal_model, energy_model, token_spec, config, dtype,
    device, freeze_proposal)``: :class:`kpp_sdk.models.guided_diffusion.EnergyGuidedDiffusion`
    under the plugin's name (not :class:`kpp_sdk.models.QDiffusion`, the SDK's own text model)."""

    config_class = QDiffusionConfig


# --- usage statistics: the names exist, nothing is collected or sent ---------------------------


def enable_usage_stats() -> None:
    """The plugin's opt-in to usage statistics. This SDK collects none, so this does nothing."""


def disable_usage_stats() -> None:
    """The plugin's opt-out; nothing is collected either way."""


def is_usage_stats_enabled() -> bool:
    """Always False: nothing is collected or sent."""
    return False


@contextlib.contextmanager
def kpp_caller_context(source: str = "kpp"):
    """The plugin's tagging context for usage statistics; does nothing."""
    yield
