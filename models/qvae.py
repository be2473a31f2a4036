"""A discrete VAE whose prior is a Boltzmann machine (Khoshaman et al., "Quantum Variational
Autoencoder", 2018; the relaxation of Vahdat et al., DVAE#, 2018), with the interface of
kaiwu-torch-plugin 0.3.0's ``QVAE`` (:mod:`kpp_sdk.models.kaiwu_compat` re-exports it).

Encoder logits ``q`` give ``z ~ Bernoulli(sigmoid(q))``; the decoder sees a continuous
relaxation ``zeta`` in [0, 1] drawn from a mixture of two overlapping exponentials
(:class:`MixtureGeneric`): ``r(zeta | z=0) = beta e^{-beta zeta} / (1 - e^{-beta})`` and
``r(zeta | z=1) = r(1 - zeta | z=0)``. Gradients reach ``q`` through the implicit derivative of
the mixture's inverse CDF. The prior is ``p(z) = exp(-E_BM(z)) / Z``; the KL term is the
cross-entropy ``E_q[E_BM] - E_model[E_BM]`` (its gradient: the model term from device samples,
``bm.sample(sampler)``) minus the posterior entropy.

A concrete model subclasses :class:`QVAE` and implements ``_create_encoder``,
``_create_decoder``, ``_create_bm`` and ``_create_sampler`` (or passes the components).
"""

from __future__ import annotations

import abc
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "QVAE",
    "AutoEncoderBase",
    "DistUtil",
    "Exponential",
    "FactorialBernoulliUtil",
    "MixtureGeneric",
    "SmoothingDist",
    "sigmoid_cross_entropy_with_logits",
]


def sigmoid_cross_entropy_with_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``-labels log sigmoid(logits) - (1 - labels) log(1 - sigmoid(logits))``, stable."""
    return F.softplus(logits) - logits * labels


class SmoothingDist:
    """A density ``r(zeta | z = 0)`` on [0, 1] (``r(zeta | z = 1) = r(1 - zeta | z = 0)``)."""

    def pdf(self, zeta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cdf(self, zeta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, shape) -> torch.Tensor:
        raise NotImplementedError

    def log_pdf(self, zeta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Exponential(SmoothingDist):
    """``r(zeta) = beta e^{-beta zeta} / (1 - e^{-beta})`` on [0, 1] (sharper for larger beta)."""

    def __init__(self, beta: float):
        if not float(beta) > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.beta = torch.tensor(float(beta))
        self._norm = -torch.expm1(-self.beta)  # 1 - e^{-beta}

    def pdf(self, zeta):
        return self.beta * torch.exp(-self.beta * zeta) / self._norm

    def cdf(self, zeta):
        return -torch.expm1(-self.beta * zeta) / self._norm

    def log_pdf(self, zeta):
        return torch.log(self.beta) - self.beta * zeta - torch.log(self._norm)

    def sample(self, shape, generator: torch.Generator | None = None) -> torch.Tensor:
        """Inverse-CDF draws."""
        u = torch.rand(shape, generator=generator)
        return -torch.log1p(-u * self._norm) / self.beta


class DistUtil:
    """A distribution over the latent units given encoder logits."""

    def reparameterize(self, is_training: bool) -> torch.Tensor:
        raise NotImplementedError

    def entropy(self) -> torch.Tensor:
        raise NotImplementedError


class FactorialBernoulliUtil(DistUtil):
    """Independent Bernoulli units with logits ``param`` (``logit_mu``)."""

    def __init__(self, param: torch.Tensor):
        self.logit_mu = param

    def reparameterize(self, is_training: bool) -> torch.Tensor:
        """A sample ``z`` (no gradient: a Bernoulli draw is not differentiable, so training needs
        :class:`MixtureGeneric`)."""
        if is_training:
            raise NotImplementedError(
                "a Bernoulli sample has no reparameterisation gradient; use MixtureGeneric")
        q = torch.sigmoid(self.logit_mu)
        return (torch.rand_like(q) < q).to(q.dtype)

    def entropy(self) -> torch.Tensor:
        """Per-unit entropy ``H(sigmoid(logit))``."""
        return sigmoid_cross_entropy_with_logits(self.logit_mu, torch.sigmoid(self.logit_mu))

    def log_prob_per_var(self, samples: torch.Tensor) -> torch.Tensor:
        """``log p(samples)`` per unit (samples may be fractional, as binarised pixels are)."""
        return -sigmoid_cross_entropy_with_logits(self.logit_mu, samples)


class MixtureGeneric(FactorialBernoulliUtil):
    """The relaxed posterior ``r(zeta) = (1 - q) r(zeta | 0) + q r(zeta | 1)`` (module
    docstring), ``q = sigmoid(logit_mu)``, with a smoothing distribution of parameter
    ``smoothing_dist_beta`` (:class:`Exponential`)."""

    num_param = 1

    def __init__(self, param: torch.Tensor, smoothing_dist_beta: float):
        super().__init__(param)
        self.smoothing_dist = Exponential(smoothing_dist_beta)

    def _densities(self, zeta):
        sd = self.smoothing_dist
        return sd.pdf(zeta), sd.pdf(1.0 - zeta)

    def reparameterize(self, is_training: bool) -> torch.Tensor:
        """``zeta`` drawn ancestrally (``z``, then ``zeta | z``), with the gradient of the inverse
        CDF: ``d zeta / d q = (R(zeta | 0) - R(zeta | 1)) / r(zeta)`` (``R`` the CDFs), applied to
        ``q`` only."""
        q = torch.sigmoid(self.logit_mu)
        with torch.no_grad():
            z = (torch.rand_like(q) < q).to(q.dtype)
            u = self.smoothing_dist.sample(q.shape).to(device=q.device, dtype=q.dtype)
            zeta = torch.where(z == 0, u, 1.0 - u)
            r0, r1 = self._densities(zeta)
            sd = self.smoothing_dist
            dzeta_dq = (sd.cdf(zeta) - (1.0 - sd.cdf(1.0 - zeta))) / ((1 - q) * r0 + q * r1)
        return zeta + dzeta_dq * (q - q.detach())

    def log_prob_per_var(self, samples: torch.Tensor) -> torch.Tensor:
        q = torch.sigmoid(self.logit_mu)
        r0, r1 = self._densities(samples)
        return torch.log((1 - q) * r0 + q * r1)

    def log_ratio(self, zeta: torch.Tensor) -> torch.Tensor:
        """``log r(zeta | 1) - log r(zeta | 0)``."""
        sd = self.smoothing_dist
        return sd.log_pdf(1.0 - zeta) - sd.log_pdf(zeta)


class AutoEncoderBase(nn.Module):
    """Shape and configuration checks shared by the auto-encoders.

    ``config`` needs ``num_latent_units`` (> 0) and ``loss_type`` (``"bernoulli"`` or
    ``"mse"``)."""

    def __init__(self, input_dimension: Any = None, activation_fct: Any = None,
                 config: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        dims = list(input_dimension) if isinstance(input_dimension, (list, tuple)) else [
            input_dimension]
        if not dims or dims[0] is None or int(dims[0]) < 1:
            raise ValueError(f"input_dimension must be a positive size, got {input_dimension!r}")
        if config is None:
            raise ValueError("config is required (num_latent_units, loss_type, dist_beta, "
                             "kl_beta, weight_decay)")
        latent = getattr(config, "num_latent_units", None)
        if latent is None or int(latent) < 1:
            raise ValueError(f"config.num_latent_units must be >= 1, got {latent!r}")
        if not hasattr(config, "loss_type"):
            raise ValueError("config needs loss_type ('bernoulli' or 'mse')")
        self._model_type = None
        self.config = config
        self._latent_dimensions = int(latent)
        self._input_dimension = int(dims[0])
        self._activation_fct = activation_fct
        self._dataset_mean = None

    def set_dataset_mean(self, mean: Any) -> None:
        """The training data's mean, subtracted from Bernoulli inputs before the encoder."""
        self._dataset_mean = mean


class QVAE(AutoEncoderBase):
    """The quantum VAE (module docstring).

    Parameters
    ----------
    input_dimension : int
    activation_fct : callable, optional
        For subclasses' networks.
    config : object
        ``num_latent_units``, ``loss_type`` (``"bernoulli"``: inputs in [0, 1] and a
        factorised Bernoulli likelihood of the decoder's logits, plus a bias from the data mean;
        ``"mse"``), ``dist_beta`` (the relaxation's sharpness), ``kl_beta`` (weight of the KL
        term), ``weight_decay`` (L2 on the prior's weights), optionally ``sampler_type``.
    encoder, decoder, bm, sampler : optional
        Components; those not given come from ``_create_*``. ``sampler`` is whatever
        ``bm.sample`` takes (a Kaiwu optimizer, a kpp Device or sampler).
    sampler_type : str, optional
        Passed to ``_create_sampler`` (default ``config.sampler_type`` or ``"sa"``).
    """

    LOSS_TYPES = ("bernoulli", "mse")

    def __init__(self, input_dimension, activation_fct, config, encoder=None, decoder=None,
                 bm=None, sampler=None, sampler_type=None):
        super().__init__(input_dimension, activation_fct, config)
        self._model_type = "QVAE"
        self.sampler_type = sampler_type or getattr(config, "sampler_type", "sa")
        self.dist_beta = config.dist_beta
        self.kl_beta = config.kl_beta
        self.weight_decay = config.weight_decay
        self.encoder, self.decoder, self.bm, self.sampler = encoder, decoder, bm, sampler
        self.register_buffer("_train_bias", torch.zeros(self._input_dimension))
        self.last_recon_loss = None
        self.last_kl_loss = None
        self.create_networks()

    def create_networks(self) -> None:
        """Build the components that were not passed in."""
        if self.encoder is None:
            self.encoder = self._create_encoder()
        if self.decoder is None:
            self.decoder = self._create_decoder()
        if self.bm is None:
            self.bm = self._create_bm()
        if self.sampler is None:
            self.sampler = self._create_sampler(self.sampler_type)
        if self._dataset_mean is not None:
            self.set_train_bias(self._dataset_mean)

    @abc.abstractmethod
    def _create_encoder(self) -> nn.Module: ...

    @abc.abstractmethod
    def _create_decoder(self) -> nn.Module: ...

    @abc.abstractmethod
    def _create_bm(self) -> nn.Module: ...

    @abc.abstractmethod
    def _create_sampler(self, sampler_type: str) -> Any: ...

    # --- helpers ------------------------------------------------------------------------------

    def _loss_type(self) -> str:
        lt = self.config.loss_type
        if lt not in self.LOSS_TYPES:
            raise ValueError(f"Unsupported loss type: {lt!r}; use one of {self.LOSS_TYPES}")
        return lt

    def _encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, self._input_dimension)
        if self._loss_type() == "bernoulli" and self._dataset_mean is not None:
            x = x - torch.as_tensor(self._dataset_mean, dtype=x.dtype, device=x.device)
        return x

    def set_train_bias(self, mean: Any) -> None:
        """The decoder's output bias ``logit(mean)`` (mean clipped to [0.001, 0.999]); ``mean`` a
        scalar or one value per input feature."""
        m = torch.as_tensor(mean, dtype=self._train_bias.dtype, device=self._train_bias.device)
        if m.numel() == 1:
            m = m.reshape(1).expand(self._input_dimension)
        elif m.numel() != self._input_dimension:
            raise ValueError(f"the dataset mean must be a scalar or have {self._input_dimension} "
                             f"entries, got {m.numel()}")
        p = m.reshape(-1).clamp(0.001, 0.999).detach()
        self._train_bias.copy_(torch.log(p) - torch.log1p(-p))

    # --- the model ------------------------------------------------------------------------------

    def posterior(self, q_logits: torch.Tensor, beta: float):
        """``(MixtureGeneric(q_logits, beta), zeta)``."""
        dist = MixtureGeneric(q_logits, beta)
        return dist, dist.reparameterize(self.training)

    def forward(self, x: torch.Tensor):
        """``(recon_logits, posterior, q_logits, zeta)``; Bernoulli inputs are centred on the
        dataset mean for the encoder and the decoder's logits get :meth:`set_train_bias`'s bias."""
        q = self.encoder(self._encoder_input(x))
        posterior, zeta = self.posterior(q, self.config.dist_beta)
        recon = self.decoder(zeta)
        if self._loss_type() == "bernoulli":
            recon = recon + self._train_bias
        return recon, posterior, q, zeta

    def energy(self, x: torch.Tensor, loss_type: str | None = None) -> torch.Tensor:
        """The prior's energy of each input's most likely latent state ``(q > 0)``."""
        if loss_type is not None and loss_type != self.config.loss_type:
            raise ValueError(f"loss_type {loss_type!r} does not match config.loss_type "
                             f"{self.config.loss_type!r}")
        q = self.encoder(self._encoder_input(x))
        return self.bm((q > 0).to(q.dtype))

    def _cross_entropy(self, logit_q: torch.Tensor) -> torch.Tensor:
        """``E_q[E_BM] - E_model[E_BM]`` (the log-partition's gradient from device samples)."""
        positive = self.bm(torch.sigmoid(logit_q)).mean()
        negative = self.bm(self.bm.sample(self.sampler)).mean()
        return positive - negative

    def _kl_dist_from(self, posterior: MixtureGeneric) -> torch.Tensor:
        """KL per example up to ``log Z``: cross-entropy minus entropy."""
        return self._cross_entropy(posterior.logit_mu) - posterior.entropy().sum(dim=1)

    def _weight_decay_loss(self):
        wd = 0.0
        if hasattr(self.bm, "quadratic_coef"):
            wd = wd + self.weight_decay * torch.sum(self.bm.quadratic_coef ** 2)
        if hasattr(self.bm, "linear_bias"):
            wd = wd + self.weight_decay * 0.5 * torch.sum(self.bm.linear_bias ** 2)
        return wd

    def loss(self, x: torch.Tensor, recon_x: torch.Tensor, posterior: MixtureGeneric):
        """Reconstruction + ``kl_beta`` KL + weight decay, averaged over the batch."""
        target = x.view(-1, self._input_dimension)
        if self._loss_type() == "mse":
            recon = F.mse_loss(recon_x, target, reduction="sum") / x.size(0)
        else:
            recon = -FactorialBernoulliUtil(recon_x).log_prob_per_var(target).sum(dim=1).mean()
        kl = self._kl_dist_from(posterior).mean()
        self.last_recon_loss, self.last_kl_loss = recon.detach(), kl.detach()
        return recon + self.kl_beta * kl + self._weight_decay_loss()

    def bm_loss(self, q: torch.Tensor, bm_weight_decay: float = 0.0) -> torch.Tensor:
        """The prior's own objective: data states ``sigmoid(q)`` (detached) against samples of
        the prior, plus optional L2."""
        loss = self.bm.objective(torch.sigmoid(q.detach()), self.bm.sample(self.sampler))
        if bm_weight_decay > 0:
            if hasattr(self.bm, "quadratic_coef"):
                loss = loss + bm_weight_decay * torch.sum(self.bm.quadratic_coef ** 2)
            if hasattr(self.bm, "linear_bias"):
                loss = loss + bm_weight_decay * 0.5 * torch.sum(self.bm.linear_bias ** 2)
        return loss

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(input_dimension={self._input_dimension}, "
                f"latent={self._latent_dimensions}, loss_type={self.config.loss_type!r})")

