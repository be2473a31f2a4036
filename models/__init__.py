"""Energy-based models in PyTorch whose negative phase an Ising machine can sample.

Conventions (units in {0, 1}, spins ``s = 2x - 1``, ``p(x) ∝ exp(-E(x))``):
:mod:`kpp_sdk.models.base`. Samplers (model weights -> device jobs -> torch tensors):
:mod:`kpp_sdk.models.samplers`. Data sets: :mod:`kpp_sdk.models.datasets`. ``kpp train``:
:mod:`kpp_sdk.models.cli`.

>>> import torch
>>> from kpp_sdk.models import RestrictedBoltzmannMachine, BoltzmannSampler
>>> rbm = RestrictedBoltzmannMachine(9, 6, generator=torch.Generator().manual_seed(0))
>>> sampler = BoltzmannSampler("sa.cpu", num_reads=20, num_sweeps=2, seed=0)
>>> v = torch.tensor([[1., 0, 1, 1, 0, 1, 1, 0, 1]])
>>> loss = rbm.objective(sampler.positive(rbm, v), sampler.negative(rbm, v))
>>> loss.backward()

Names are imported on first use, so ``import kpp_sdk.models.datasets`` or ``kpp --help`` does not
load torch; without torch, using a model raises :class:`~kpp_sdk.MissingDependencyError` naming
the ``models`` extra.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule that defines it
_EXPORTS = {
    "base": ("AbstractBoltzmannMachine", "quadratic_to_ising"),
    "bm": ("BoltzmannMachine",),
    "grbm": ("GraphRestrictedBoltzmannMachine",),
    "rbm": ("RestrictedBoltzmannMachine",),
    "gbrbm": ("GaussianBernoulliRBM",),
    "dbn": ("DeepBeliefNetwork", "DBNClassifier"),
    "checkpoint": ("build_model", "load_checkpoint", "load_training_state", "save_checkpoint"),
    "errors": ("CheckpointError", "InvalidDataError", "TrainingInterrupted"),
    "evaluation": ("AISResult", "ais_log_partition", "can_enumerate", "exact_log_likelihood",
                   "exact_log_partition", "exact_model_distribution", "log_likelihood"),
    "training": ("fine_tune_classifier", "fit", "fit_dbn", "make_optimizer"),
    "samplers": ("ModelSampler", "BoltzmannSampler", "ContrastiveDivergence",
                 "PersistentContrastiveDivergence", "ExactSampler", "as_sampler"),
    "qgan": ("QGAN", "BernoulliPrior", "BoltzmannPrior", "GaussianPrior", "fit_qgan"),
    "qdiffusion": ("QDiffusion", "MaskedDiffusion", "load_text_corpus", "nce_loss"),
    "qbmvae": ("QBMVAE", "GaussianVAE"),
    "qvae": ("QVAE",),
    "guided_diffusion": ("EnergyGuidedDiffusion", "EnergyModel", "GuidedDiffusionConfig",
                         "SequenceTokenSpec"),
    "feature_selection": ("FeatureSelectionWrapper", "solve_qubo"),
    "single_cell": ("SingleCellVAE",),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        import torch  # noqa: F401
    except ImportError:  # pragma: no cover - exercised only without torch
        from kpp_sdk.errors import MissingDependencyError

        raise MissingDependencyError("torch", extra="models", feature="kpp_sdk.models") from None
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
