"""Energy-based models in PyTorch whose negative phase an Ising machine can sample.

Conventions (units in {0, 1}, spins ``s = 2x - 1``, ``p(x) ∝ exp(-E(x))``):
:mod:`kpp_sdk.models.base`. Samplers: :mod:`kpp_sdk.torch_bridge`.

>>> import torch
>>> from kpp_sdk.models import RestrictedBoltzmannMachine
>>> from kpp_sdk.torch_bridge import BoltzmannSampler
>>> rbm = RestrictedBoltzmannMachine(9, 6, generator=torch.Generator().manual_seed(0))
>>> sampler = BoltzmannSampler("sa.cpu", num_reads=20, num_sweeps=2, seed=0)
>>> v = torch.tensor([[1., 0, 1, 1, 0, 1, 1, 0, 1]])
>>> loss = rbm.objective(sampler.positive(rbm, v), sampler.negative(rbm, v))
>>> loss.backward()
"""

try:
    import torch  # noqa: F401
except ImportError:  # pragma: no cover - exercised only without torch
    from kpp_sdk.errors import MissingDependencyError

    raise MissingDependencyError("torch", extra="models", feature="kpp_sdk.models") from None

from .base import AbstractBoltzmannMachine, quadratic_to_ising
from .bm import BoltzmannMachine
from .checkpoint import build_model, load_checkpoint, save_checkpoint
from .dbn import DBNClassifier, DeepBeliefNetwork
from .errors import CheckpointError, InvalidDataError
from .evaluation import (
    AISResult,
    ais_log_partition,
    can_enumerate,
    exact_log_likelihood,
    exact_log_partition,
    exact_model_distribution,
    log_likelihood,
)
from .gbrbm import GaussianBernoulliRBM
from .qdiffusion import MaskedDiffusion, QDiffusion, load_text_corpus, nce_loss
from .qgan import QGAN, BernoulliPrior, BoltzmannPrior, GaussianPrior, fit_qgan
from .rbm import RestrictedBoltzmannMachine
from .training import fine_tune_classifier, fit, fit_dbn, make_optimizer

__all__ = [
    "AbstractBoltzmannMachine", "BoltzmannMachine", "RestrictedBoltzmannMachine",
    "GaussianBernoulliRBM", "DeepBeliefNetwork", "DBNClassifier", "quadratic_to_ising",
    "exact_log_partition", "exact_log_likelihood", "exact_model_distribution",
    "ais_log_partition", "AISResult", "log_likelihood", "can_enumerate",
    "fit", "fit_dbn", "fine_tune_classifier", "make_optimizer",
    "save_checkpoint", "load_checkpoint", "build_model",
    "InvalidDataError", "CheckpointError",
    "QGAN", "BoltzmannPrior", "BernoulliPrior", "GaussianPrior", "fit_qgan",
    "QDiffusion", "MaskedDiffusion", "load_text_corpus", "nce_loss",
]

from .qbmvae import QBMVAE, GaussianVAE
from .single_cell import SingleCellVAE

__all__ += ["QBMVAE", "GaussianVAE", "SingleCellVAE"]
