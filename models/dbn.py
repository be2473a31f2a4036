"""Deep belief networks: a greedy stack of RBMs, with generation and a classifier head."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .errors import InvalidDataError
from .rbm import RestrictedBoltzmannMachine

__all__ = ["DeepBeliefNetwork", "DBNClassifier"]


class DeepBeliefNetwork(nn.Module):
    """A stack of RBMs (Hinton, Osindero & Teh 2006): ``layer_sizes = [V, H1, H2, ...]`` gives
    RBMs ``V x H1``, ``H1 x H2``, ... trained greedily, each on the hidden samples of the one
    below (:func:`kpp_sdk.models.fit_dbn`).

    As a generative model the top RBM is an undirected prior (sampled by any
    :class:`~kpp_sdk.models.samplers.ModelSampler`, e.g. on an Ising machine) and the layers below
    are directed sigmoid belief nets ``p(h_{l-1} | h_l)`` using the RBMs' weights
    (:meth:`generate`). As a feature extractor the up-pass gives ``p(h_l = 1 | h_{l-1})``
    layer by layer (:meth:`transform`), and :meth:`classifier` turns the stack into a
    feed-forward network to fine-tune with labels.

    Parameters
    ----------
    layer_sizes : sequence of int, at least two
    device, dtype, init_std, generator
        As for :class:`~kpp_sdk.models.RestrictedBoltzmannMachine`.
    """

    def __init__(self, layer_sizes: Sequence[int], *, device=None, dtype=None,
                 init_std: float = 0.01, generator: torch.Generator | None = None):
        super().__init__()
        sizes = [int(s) for s in layer_sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise InvalidDataError(
                f"layer_sizes must list at least two positive sizes (visible, hidden, ...), got "
                f"{list(layer_sizes)}")
        self.layer_sizes = sizes
        self.rbms = nn.ModuleList(
            RestrictedBoltzmannMachine(a, b, device=device, dtype=dtype, init_std=init_std,
                                       generator=generator)
            for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def config(self) -> dict:
        return {"class": type(self).__name__, "layer_sizes": list(self.layer_sizes)}

    @staticmethod
    def parameter_shapes(layer_sizes: Sequence[int]) -> dict[str, tuple[int, ...]]:
        """The ``state_dict`` shapes of a model built with this configuration, computed
        without building it (a checkpoint's tensors are checked against them first)."""
        sizes = [int(s) for s in layer_sizes]
        shapes: dict[str, tuple[int, ...]] = {}
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            for key, shape in RestrictedBoltzmannMachine.parameter_shapes(a, b).items():
                shapes[f"rbms.{i}.{key}"] = shape
        return shapes

    def extra_repr(self) -> str:
        return f"layer_sizes={self.layer_sizes}"

    @property
    def num_visible(self) -> int:
        return self.layer_sizes[0]

    @property
    def num_layers(self) -> int:
        return len(self.rbms)

    @property
    def device(self) -> torch.device:
        return self.rbms[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.rbms[0].dtype

    def check_visible(self, visible: Any) -> torch.Tensor:
        return self.rbms[0].check_visible(visible)

    def forward(self, visible: torch.Tensor) -> torch.Tensor:
        """The top layer's features (:meth:`transform`)."""
        return self.transform(visible)

    def transform(self, visible: Any, num_layers: int | None = None) -> torch.Tensor:
        """Up-pass probabilities ``p(h_l = 1 | h_{l-1})`` through ``num_layers`` RBMs (all)."""
        x = self.check_visible(visible)
        with torch.no_grad():
            for rbm in self.rbms[: self.num_layers if num_layers is None else num_layers]:
                x = rbm.hidden_probs(x)
        return x

    def sample_up(self, visible: Any, num_layers: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """Binary samples of layer ``num_layers`` given the data (the training data of RBM
        ``num_layers`` in greedy training)."""
        x = self.check_visible(visible)
        with torch.no_grad():
            for rbm in self.rbms[:num_layers]:
                p = rbm.hidden_probs(x)
                x = (torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype)
                     < p).to(p.dtype)
        return x

    def generate(self, num_samples: int, sampler: Any = None, *,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(samples, probabilities)`` of the visible layer, each ``(num_samples, V)``.

        The top RBM is sampled by ``sampler`` (a ModelSampler, a Device, a device name or a
        Kaiwu optimizer; default ``sa.cpu``); its visible units are then passed down through
        ``p(h_{l-1} | h_l)``. ``probabilities`` are ``p(v = 1 | h_1)`` of the last step (smoother
        pictures than the binary samples).
        """
        from kpp_sdk.models.samplers import as_sampler

        top = self.rbms[-1]
        states = as_sampler("sa.cpu" if sampler is None else sampler).sample(top, num_samples)
        x = states[:, : top.num_visible]
        probs = x
        with torch.no_grad():
            for rbm in reversed(self.rbms[:-1]):
                probs = rbm.visible_probs(x)
                x = (torch.rand(probs.shape, generator=generator, device=probs.device,
                                dtype=probs.dtype) < probs).to(probs.dtype)
        return x, probs

    def reconstruct(self, visible: Any) -> torch.Tensor:
        """Up to the top with probabilities and back down: ``p(v = 1 | ...)``, shape ``(B, V)``."""
        x = self.transform(visible)
        with torch.no_grad():
            for rbm in reversed(self.rbms):
                x = rbm.visible_probs(x)
        return x

    def classifier(self, num_classes: int) -> DBNClassifier:
        """A feed-forward classifier initialised from the stack (see :class:`DBNClassifier`)."""
        return DBNClassifier(self, num_classes)


class DBNClassifier(nn.Module):
    """Sigmoid layers ``h_l = sigmoid(W_l^T h_{l-1} + c_l)`` initialised from a DBN's RBMs (copies:
    fine-tuning leaves the DBN as it is), followed by a linear head giving class logits.
    Train with :func:`torch.nn.functional.cross_entropy`."""

    def __init__(self, dbn: DeepBeliefNetwork, num_classes: int):
        super().__init__()
        if int(num_classes) < 2:
            raise InvalidDataError(f"a classifier needs at least 2 classes, got {num_classes}")
        layers: list[nn.Module] = []
        for rbm in dbn.rbms:
            lin = nn.Linear(rbm.num_visible, rbm.num_hidden, device=rbm.device, dtype=rbm.dtype)
            with torch.no_grad():
                lin.weight.copy_(rbm.quadratic_coef.t())
                lin.bias.copy_(rbm.hidden_bias)
            layers += [lin, nn.Sigmoid()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(dbn.layer_sizes[-1], int(num_classes), device=dbn.device,
                              dtype=dbn.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
