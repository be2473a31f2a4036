"""kaiwu-torch-plugin 0.3.0's public names, one import away.

Replace ``from kaiwu.torch_plugin import RestrictedBoltzmannMachine, BoltzmannMachine,
UnsupervisedDBN`` by ``from kpp_sdk.models.kaiwu_compat import ...``: constructors, parameter
names (``quadratic_coef``, ``linear_bias``) and the methods ``forward`` (energy),
``get_ising_matrix`` (the Kaiwu ancilla matrix), ``objective(s_positive, s_negative)`` and
``sample(sampler)`` keep their meaning. Wherever the plugin took a Kaiwu optimizer
(``solve(ising_matrix)``), these classes take one too, or a kpp Device, a device name, or a
:class:`~kpp_sdk.models.samplers.ModelSampler`. See ``docs/migrating-from-kaiwu.md``.

Differences, on purpose: the default torch device is the CPU (the plugin picked CUDA when
present), and units are {0, 1} throughout, as they are in the plugin's energies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .base import AbstractBoltzmannMachine
from .bm import BoltzmannMachine as _BoltzmannMachine
from .dbn import DeepBeliefNetwork
from .errors import InvalidDataError
from .rbm import RestrictedBoltzmannMachine

__all__ = ["AbstractBoltzmannMachine", "BoltzmannMachine", "RestrictedBoltzmannMachine",
           "UnsupervisedDBN"]


def _is_kaiwu_optimizer(obj: Any) -> bool:
    from kpp_sdk.models.samplers import ModelSampler

    from kpp_sdk.device import Device

    return (not isinstance(obj, (ModelSampler, Device, str))
            and callable(getattr(obj, "solve", None)))


class BoltzmannMachine(_BoltzmannMachine):
    """kaiwu-torch-plugin's ``BoltzmannMachine(num_nodes, quadratic_coef, linear_bias, device)``:
    a fully connected machine over ``num_nodes`` units whose visible/hidden split is given per
    call (``hidden_bias(num_hidden)``, ``condition_sample(sampler, s_visible)``)."""

    def __init__(self, num_nodes: int, quadratic_coef=None, linear_bias=None, device=None):
        super().__init__(num_nodes, 0, quadratic_coef, linear_bias, device)

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

    def condition_sample(self, sampler: Any, s_visible: torch.Tensor,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Samples of the other units given ``s_visible`` (full states). A Kaiwu optimizer solves
        one problem per row and every returned row is kept (the plugin's behaviour); a Device or
        sampler draws clamped samples of all rows in one job."""
        from kpp_sdk.models.samplers import as_sampler

        from kpp_sdk.problem import IsingProblem

        v = torch.as_tensor(s_visible, device=self.device, dtype=self.dtype)
        if v.ndim == 1:
            v = v[None, :]
        if _is_kaiwu_optimizer(sampler):
            parts = []
            for i in range(v.shape[0]):
                problem = self.clamped_ising(v[i:i + 1])
                spins = IsingProblem.spins_from_kaiwu(sampler.solve(problem.to_kaiwu()), problem.n)
                parts.append(self.states_from_clamped_spins(v[i:i + 1], spins))
            return torch.cat(parts).to(dtype)
        return as_sampler(sampler).clamped(self, v).to(dtype)


class UnsupervisedDBN(DeepBeliefNetwork):
    """kaiwu-torch-plugin's ``UnsupervisedDBN(hidden_layers_structure)``: layers are created by
    :meth:`create_rbm_layer` (or :meth:`fit`); ``forward``/``transform`` take and return NumPy
    arrays (tensors stay tensors) and require :meth:`mark_as_trained` (done by :meth:`fit`)."""

    def __init__(self, hidden_layers_structure=None):
        nn.Module.__init__(self)
        self.hidden_layers_structure = (list(hidden_layers_structure)
                                        if hidden_layers_structure is not None else [100, 100])
        self.rbms = None
        self.layer_sizes = None
        self.input_dim = None
        self._is_trained = False

    @property
    def rbm_layers(self):
        return self.rbms

    @property
    def device(self) -> torch.device:
        return self.rbms[0].device if self.rbms else torch.device("cpu")

    def create_rbm_layer(self, input_dim: int) -> UnsupervisedDBN:
        DeepBeliefNetwork.__init__(self, [int(input_dim), *self.hidden_layers_structure])
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
