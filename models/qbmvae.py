"""QBM-VAE: a variational autoencoder for counts whose binary latent space has a Boltzmann-machine
prior, and the plain Gaussian-prior VAE it is compared with.

The model (one cell = one row of counts ``x``, with a batch index ``s``)
-----------------------------------------------------------------------
* **Encoder** ``log1p(x) -> logits``; ``q = sigmoid(logits)`` are the probabilities of ``n_latent``
  independent Bernoulli latents, the posterior ``q(z | x) = prod_i q_i^z_i (1 - q_i)^(1 - z_i)``.
* **Relaxation** (spike-and-exponential, equation 2 of the QBM-VAE paper, after Rolfe's discrete
  VAE): with ``rho ~ U(0, 1)``::

      zeta = (1 / beta) * log[(max(rho + q - 1, 0) / q) * (e^beta - 1) + 1]

  ``zeta = 0`` with probability ``1 - q`` (the spike) and otherwise follows the density
  ``beta e^(beta zeta) / (e^beta - 1)`` on ``(0, 1]``; so ``zeta in [0, 1]``, ``z = [zeta > 0]`` is
  exactly ``Bernoulli(q)``, ``E[zeta] = q * (e^beta / (e^beta - 1) - 1 / beta)``
  (:func:`relaxation_mean`), and ``d zeta / d q >= 0`` (nonzero off the spike) carries the
  gradient to the encoder. ``beta = 0.5`` by default. ``q`` is clamped away from 0 inside the division
  (where the spike makes ``zeta = 0`` anyway), so ``q -> 0`` and ``q -> 1`` give no NaN
  (:func:`spike_exp_relaxation`).
* **Prior** ``p(z) = exp(-E(z)) / Z`` over the binary latents, any
  :class:`~kpp_sdk.models.AbstractBoltzmannMachine` whose units are all latents (default a fully
  connected :class:`~kpp_sdk.models.BoltzmannMachine`), ``E(z) = -b^T z - 1/2 z^T W z + c``.
* **KL term** ``KL(q || p) = E_q[log q(z)] + E_q[E(z)] + log Z``. The first two are exact for a
  factorial ``q``: ``E_q[log q] = sum_i q_i log q_i + (1 - q_i) log(1 - q_i)`` and, as ``W`` has a
  zero diagonal, ``E_q[E(z)] = E(q)`` (the energy evaluated at the probabilities) — the positive
  phase, averaged over the posterior analytically. ``log Z`` depends on the prior only; its gradient
  ``-E_p[dE/dtheta]`` is the negative phase, estimated with samples of the prior drawn on a Device
  (:class:`~kpp_sdk.models.samplers.BoltzmannSampler`). :meth:`QBMVAE.loss` therefore uses the
  surrogate ``E_q[log q] + E(q) - mean_k E(z_k)`` (``z_k`` the device samples, detached), whose
  value is ``KL - log Z`` plus sampling noise and whose gradient is the KL gradient.
* **Decoder** (as scVI's): ``[zeta, onehot(s)] -> softmax`` over genes, times the cell's observed
  library size, gives the negative-binomial mean ``mu``; a gene-wise inverse dispersion ``theta``;
  with ``likelihood="zinb"`` also a zero-inflation probability per gene and cell. The batch
  one-hot enters every hidden layer of the decoder (not the encoder), so the latent space need
  not encode the batch.

``forward`` never calls a device: the negative phase is passed in (``negative_states``), so the
training loop (:mod:`kpp_sdk.models.single_cell`) decides where and how often samples are drawn.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import AbstractBoltzmannMachine
from .bm import BoltzmannMachine
from .errors import InvalidDataError

__all__ = [
    "QBMVAE",
    "CountDecoder",
    "GaussianVAE",
    "bernoulli_neg_entropy",
    "nb_log_likelihood",
    "posterior_energy",
    "relaxation_mean",
    "spike_exp_relaxation",
    "zinb_log_likelihood",
]

#: Smallest ``q`` used as a divisor in the relaxation; below it the spike gives ``zeta = 0``.
Q_EPS = 1e-6


# --- the functional pieces -------------------------------------------------------------------


def spike_exp_relaxation(q: torch.Tensor, rho: torch.Tensor | None = None, beta: float = 0.5,
                         *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``zeta = (1/beta) log[(max(rho + q - 1, 0) / q) (e^beta - 1) + 1]`` elementwise (module
    docstring), ``rho ~ U(0, 1)`` drawn here unless given. Differentiable in ``q``; finite values
    and gradients for every ``q`` in ``[0, 1]``, the end points included."""
    if not beta > 0:
        raise InvalidDataError(f"beta must be > 0, got {beta}")
    if rho is None:
        rho = torch.rand(q.shape, generator=generator, device=q.device, dtype=q.dtype)
    ratio = F.relu(rho + q - 1) / q.clamp_min(Q_EPS)
    # the clamp makes ratio <= 1 exact even when rounding in rho + q - 1 exceeds q
    ratio = ratio.clamp(max=1.0)
    return torch.log1p(ratio * math.expm1(beta)) / beta


def relaxation_mean(q: torch.Tensor | float, beta: float = 0.5):
    """``E[zeta] = q * (e^beta / (e^beta - 1) - 1 / beta)`` (the mean of the exponential part
    times the probability of leaving the spike)."""
    return q * (math.exp(beta) / math.expm1(beta) - 1.0 / beta)


def bernoulli_neg_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``E_q[log q(z)] = sum_i q_i log q_i + (1 - q_i) log(1 - q_i)`` per row, from logits
    (``log q = -softplus(-l)``, ``log(1 - q) = -softplus(l)``: stable at both ends)."""
    q = torch.sigmoid(logits)
    return -(q * F.softplus(-logits) + (1 - q) * F.softplus(logits)).sum(-1)


def posterior_energy(prior: AbstractBoltzmannMachine, q: torch.Tensor) -> torch.Tensor:
    """``E_q[E(z)]`` per row for factorial Bernoulli ``q`` over all of ``prior``'s units: equal to
    ``-b^T q - 1/2 q^T W q + c`` because ``W`` has a zero diagonal (independent units:
    ``E[z_i z_j] = q_i q_j`` for ``i != j``). Differentiable in ``q`` and the prior."""
    W, b, c = prior.quadratic_form()
    q = q.to(W.dtype)
    return -q @ b - 0.5 * ((q @ W) * q).sum(-1) + c


def nb_log_likelihood(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor,
                      eps: float = 1e-8) -> torch.Tensor:
    """``log NB(x; mean mu, inverse dispersion theta)`` elementwise:
    ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1) + theta log(theta / (theta + mu))
    + x log(mu / (theta + mu))``."""
    log_theta_mu = torch.log(theta + mu + eps)
    return (theta * (torch.log(theta + eps) - log_theta_mu)
            + x * (torch.log(mu + eps) - log_theta_mu)
            + torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1))


def zinb_log_likelihood(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor,
                        pi_logits: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero-inflated NB: ``x = 0`` with probability ``pi = sigmoid(pi_logits)``, else NB.
    ``log(pi + (1 - pi) NB(0))`` at zeros, ``log(1 - pi) + log NB(x)`` elsewhere."""
    nb = nb_log_likelihood(x, mu, theta, eps)
    log_pi = -F.softplus(-pi_logits)
    log_1m_pi = -F.softplus(pi_logits)
    zero = torch.logaddexp(log_pi, log_1m_pi + nb)
    return torch.where(x < 0.5, zero, log_1m_pi + nb)


# --- networks -----------------------------------------------------------------------------------


def _mlp(n_in: int, n_hidden: int, n_layers: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers += [nn.Linear(n_in if i == 0 else n_hidden, n_hidden),
                   nn.BatchNorm1d(n_hidden, momentum=0.01, eps=1e-3), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class CountDecoder(nn.Module):
    """``(latent, batch one-hot, library) -> (mu, theta, pi_logits or None)`` (module docstring):
    the batch one-hot is concatenated to the input of every hidden layer."""

    def __init__(self, n_latent: int, n_genes: int, n_batch: int, n_hidden: int = 128,
                 n_layers: int = 1, likelihood: str = "nb"):
        super().__init__()
        self.n_batch = n_batch
        self.layers = nn.ModuleList()
        for i in range(n_layers):
            self.layers.append(nn.Sequential(
                nn.Linear((n_latent if i == 0 else n_hidden) + n_batch, n_hidden),
                nn.BatchNorm1d(n_hidden, momentum=0.01, eps=1e-3), nn.ReLU()))
        self.scale = nn.Linear(n_hidden + n_batch, n_genes)
        self.dropout = nn.Linear(n_hidden + n_batch, n_genes) if likelihood == "zinb" else None
        #: log inverse dispersion per gene ("gene" dispersion, as scVI's default)
        self.log_theta = nn.Parameter(torch.zeros(n_genes))

    def forward(self, z: torch.Tensor, batch_onehot: torch.Tensor, library: torch.Tensor):
        h = z
        for layer in self.layers:
            h = layer(torch.cat([h, batch_onehot], -1) if self.n_batch else h)
        hb = torch.cat([h, batch_onehot], -1) if self.n_batch else h
        mu = library[:, None] * torch.softmax(self.scale(hb), -1)
        pi = self.dropout(hb) if self.dropout is not None else None
        return mu, self.log_theta.exp().clamp(1e-4, 1e4), pi


class _CountVAE(nn.Module):
    """Shared plumbing: input checks, the encoder trunk, the decoder, the reconstruction term."""

    LIKELIHOODS = ("nb", "zinb")

    def __init__(self, n_genes: int, n_latent: int, n_batch: int, n_hidden: int, n_layers: int,
                 dropout: float, likelihood: str):
        super().__init__()
        for name, v, lo in (("n_genes", n_genes, 1), ("n_latent", n_latent, 1),
                            ("n_batch", n_batch, 0), ("n_hidden", n_hidden, 1),
                            ("n_layers", n_layers, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise InvalidDataError(f"{name} must be an integer >= {lo}, got {v!r}")
        if likelihood not in self.LIKELIHOODS:
            raise InvalidDataError(
                f"likelihood must be one of {self.LIKELIHOODS}, got {likelihood!r}")
        if not 0 <= dropout < 1:
            raise InvalidDataError(f"dropout must be in [0, 1), got {dropout}")
        self.n_genes, self.n_latent, self.n_batch = n_genes, n_latent, n_batch
        self.likelihood = likelihood
        self.encoder = _mlp(n_genes, n_hidden, n_layers, dropout)
        self.decoder = CountDecoder(n_latent, n_genes, n_batch, n_hidden, n_layers, likelihood)

    def check_counts(self, x: Any, batch: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` as a float tensor ``(B, n_genes)`` of finite non-negative values and ``batch`` as a
        one-hot ``(B, n_batch)``; :class:`InvalidDataError` naming the problem otherwise.
        (Integrality is checked once per data set by the workflow, not per step.)"""
        p = next(self.parameters())
        x = torch.as_tensor(x).to(device=p.device, dtype=p.dtype)
        if x.ndim != 2 or x.shape[1] != self.n_genes:
            raise InvalidDataError(
                f"counts must have shape (cells, {self.n_genes}) for this model, got "
                f"{tuple(x.shape)}")
        bad = ~torch.isfinite(x) | (x < 0)
        if bad.any():
            r, c = (int(i) for i in torch.nonzero(bad)[0])
            raise InvalidDataError(
                f"counts[{r}, {c}] = {float(x[r, c])}; counts must be finite and >= 0")
        if self.n_batch == 0:
            return x, x.new_zeros(x.shape[0], 0)
        if batch is None:
            raise InvalidDataError(f"this model has {self.n_batch} batches: pass batch indices")
        b = torch.as_tensor(batch, device=x.device).long().reshape(-1)
        if b.shape[0] != x.shape[0] or b.min() < 0 or b.max() >= self.n_batch:
            raise InvalidDataError(
                f"batch must hold one index in [0, {self.n_batch}) per cell, got shape "
                f"{tuple(b.shape)} with range [{int(b.min())}, {int(b.max())}]")
        return x, F.one_hot(b, self.n_batch).to(x.dtype)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(torch.log1p(x))

    def reconstruction_nll(self, x: torch.Tensor, z: torch.Tensor,
                           onehot: torch.Tensor) -> torch.Tensor:
        """``-log p(x | z, batch)`` per cell (summed over genes)."""
        mu, theta, pi = self.decoder(z, onehot, x.sum(-1).clamp_min(1.0))
        if self.likelihood == "zinb":
            ll = zinb_log_likelihood(x, mu, theta, pi)
        else:
            ll = nb_log_likelihood(x, mu, theta)
        return -ll.sum(-1)

    @torch.no_grad()
    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The latent representation of the counts ``x`` (subclass's ``_represent``), computed in
        eval mode; the training mode is restored afterwards."""
        was = self.training
        self.eval()
        try:
            x, _ = self.check_counts(x, None if self.n_batch == 0 else
                                     torch.zeros(len(x), dtype=torch.long))
            return self._represent(x)
        finally:
            self.train(was)


class QBMVAE(_CountVAE):
    """A count VAE with Bernoulli latents, the spike-and-exponential relaxation and a
    Boltzmann-machine prior (the maths: module docstring).

    Parameters
    ----------
    n_genes : int
    n_latent : int, default 32
        Binary latents, i.e. spins of the prior's Ising problem.
    n_batch : int, default 0
        Batches (the decoder's covariate); 0 for none.
    prior : AbstractBoltzmannMachine, optional
        Default ``BoltzmannMachine(n_latent)`` (fully connected). Every unit is a latent, so
        ``prior.num_nodes`` must equal ``n_latent``; binary units only.
    beta : float, default 0.5
        The relaxation's sharpness (equation 2 of the paper).
    n_hidden, n_layers, dropout
        Width and depth of encoder and decoder (as scVI's defaults: 128, 1, 0.1).
    likelihood : "nb" or "zinb"
    generator : torch.Generator, optional
        Reproducible initialisation of the default prior.

    Shapes: ``x`` ``(B, n_genes)`` counts, ``batch`` ``(B,)`` ints in ``[0, n_batch)``.
    """

    def __init__(self, n_genes: int, n_latent: int = 32, n_batch: int = 0, *,
                 prior: AbstractBoltzmannMachine | None = None, beta: float = 0.5,
                 n_hidden: int = 128, n_layers: int = 1, dropout: float = 0.1,
                 likelihood: str = "nb", generator: torch.Generator | None = None):
        super().__init__(n_genes, n_latent, n_batch, n_hidden, n_layers, dropout, likelihood)
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
            raise InvalidDataError(f"beta must be a positive number, got {beta!r}")
        self.beta = float(beta)
        if prior is None:
            prior = BoltzmannMachine(n_latent, generator=generator)
        if not isinstance(prior, AbstractBoltzmannMachine) or not prior.binary_visible:
            raise InvalidDataError(
                "prior must be a binary AbstractBoltzmannMachine (BoltzmannMachine, "
                f"RestrictedBoltzmannMachine), got {type(prior).__name__}")
        if prior.num_nodes != n_latent:
            raise InvalidDataError(
                f"the prior has {prior.num_nodes} units but n_latent = {n_latent}; every unit of "
                "the prior is a latent, so they must agree")
        self.prior = prior
        self.logits = nn.Linear(n_hidden, n_latent)

    def extra_repr(self) -> str:
        return (f"n_genes={self.n_genes}, n_latent={self.n_latent}, n_batch={self.n_batch}, "
                f"beta={self.beta}, likelihood={self.likelihood!r}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior logits ``(B, n_latent)``; ``q = sigmoid(logits)``."""
        return self.logits(self._trunk(x))

    def forward(self, x: torch.Tensor, batch: Any = None, *,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Encode, relax, decode: ``logits``, ``q``, ``zeta`` and the per-cell ``reconstruction``
        (``-log p(x | zeta, batch)``). No device is called."""
        x, onehot = self.check_counts(x, batch)
        logits = self.encode(x)
        q = torch.sigmoid(logits)
        zeta = spike_exp_relaxation(q, beta=self.beta, generator=generator)
        return {"logits": logits, "q": q, "zeta": zeta,
                "reconstruction": self.reconstruction_nll(x, zeta, onehot)}

    def kl_terms(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E_q[log q], E_q[E(z)])`` per row: the exact, ``log Z``-free part of the KL."""
        return bernoulli_neg_entropy(logits), posterior_energy(self.prior, torch.sigmoid(logits))

    def kl_divergence(self, logits: torch.Tensor, log_partition: float) -> torch.Tensor:
        """``KL(q(z|x) || p(z))`` per row given ``log Z`` (exact for small priors:
        :func:`kpp_sdk.models.exact_log_partition`; an estimate otherwise:
        :func:`kpp_sdk.models.ais_log_partition`)."""
        neg_h, e = self.kl_terms(logits)
        return neg_h + e + float(log_partition)

    def log_partition_surrogate(self, negative_states: torch.Tensor,
                                weights: torch.Tensor | None = None) -> torch.Tensor:
        """``-mean_k E(z_k)`` over prior samples (detached; ``weights``: a weighted mean, e.g.
        every state with its exact probability): its gradient in the prior's parameters is
        ``-E_p[dE/dtheta] = d log Z / d theta``."""
        z = torch.as_tensor(negative_states).detach().to(self.prior.dtype)
        if z.ndim != 2 or z.shape[1] != self.n_latent:
            raise InvalidDataError(
                f"negative_states must have shape (num_samples, {self.n_latent}), got "
                f"{tuple(z.shape)}")
        e = posterior_energy(self.prior, z)
        if weights is None:
            return -e.mean()
        w = torch.as_tensor(weights, dtype=e.dtype, device=e.device)
        return -(e * w).sum() / w.sum()

    def loss(self, x: torch.Tensor, batch: Any = None, negative_states: torch.Tensor | None = None,
             *, kl_weight: float = 1.0,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The negative ELBO to minimise (mean over cells) and its parts.

        ``negative_states``: ``(K, n_latent)`` samples of the prior (the negative phase, e.g.
        ``BoltzmannSampler.negative(model.prior)``). Without them the prior is not trained (its
        ``log Z`` gradient is missing), which is what an evaluation pass wants.
        Returns ``loss``, ``reconstruction``, ``kl_minus_log_z`` (``E_q[log q] + E_q[E]``, mean),
        and the ``forward`` outputs.
        """
        out = self.forward(x, batch, generator=generator)
        neg_h, e = self.kl_terms(out["logits"])
        kl_part = (neg_h + e).mean()
        loss = out["reconstruction"].mean() + kl_weight * kl_part
        if negative_states is not None:
            loss = loss + kl_weight * self.log_partition_surrogate(negative_states)
        return {**out, "loss": loss, "reconstruction_mean": out["reconstruction"].mean(),
                "kl_minus_log_z": kl_part}

    def _represent(self, x: torch.Tensor) -> torch.Tensor:
        """The representation for clustering: the posterior probabilities ``q``."""
        return torch.sigmoid(self.encode(x))


class GaussianVAE(_CountVAE):
    """The baseline: the same encoder trunk, decoder and likelihood as :class:`QBMVAE`, with
    continuous latents ``z = mu + sigma eps`` and the prior ``N(0, I)`` (analytic KL); the
    latent representation is ``mu``."""

    def __init__(self, n_genes: int, n_latent: int = 32, n_batch: int = 0, *,
                 n_hidden: int = 128, n_layers: int = 1, dropout: float = 0.1,
                 likelihood: str = "nb"):
        super().__init__(n_genes, n_latent, n_batch, n_hidden, n_layers, dropout, likelihood)
        self.mean = nn.Linear(n_hidden, n_latent)
        self.log_var = nn.Linear(n_hidden, n_latent)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self._trunk(x)
        return self.mean(h), self.log_var(h).clamp(-12, 12)

    def loss(self, x: torch.Tensor, batch: Any = None, negative_states: Any = None, *,
             kl_weight: float = 1.0,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x, onehot = self.check_counts(x, batch)
        mu, log_var = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + (0.5 * log_var).exp() * eps
        rec = self.reconstruction_nll(x, z, onehot)
        kl = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(-1)
        return {"loss": rec.mean() + kl_weight * kl.mean(), "reconstruction": rec,
                "reconstruction_mean": rec.mean(), "kl": kl.mean(), "z": z}

    def _represent(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean ``mu``."""
        return self.encode(x)[0]
