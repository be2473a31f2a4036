"""QGAN: a GAN whose generator draws its latent code from a Boltzmann machine sampled on a device.

The model
---------
A generator ``G`` maps a latent code ``z`` to an image; a discriminator ``D`` scores images
(logit of "real"). The latent code comes from a *prior*:

* :class:`BoltzmannPrior`: binary ``z`` = the visible units of a Boltzmann machine
  (:class:`~kpp_sdk.models.RestrictedBoltzmannMachine` by default), drawn by a
  :class:`~kpp_sdk.models.samplers.BoltzmannSampler` on any Device (persistent chains on devices with
  a Boltzmann sampling mode). The prior is trained jointly with the GAN.
* :class:`BernoulliPrior`: independent fair bits (the same binary code, untrained);
* :class:`GaussianPrior`: ``N(0, I)``.

Losses (non-saturating GAN): ``D`` minimises ``softplus(-D(x)) + softplus(D(G(z)))``; ``G``
minimises ``l(z) = softplus(-D(G(z)))`` per sample.

Training the Boltzmann prior
----------------------------
``z`` is discrete, so no gradient flows through it; the prior minimises
``J = E_{z ~ p}[l(z)] - lambda * H(p)`` with the score-function gradient. For a Boltzmann machine
``log p(z) = -F(z) - log Z`` (``F``: free energy of the visible units), so
``grad log p(z) = -grad F(z) + E_p[grad F]`` and, with samples ``z_i`` of the prior,

    grad J = -Cov(l(z) + lambda * log p(z), grad F(z))
           ~= grad of  -mean_i (c_i - mean c) * F(z_i),   c_i = l(z_i) - lambda * F(z_i)

(``c`` detached; the unknown ``log Z`` is a constant that the centring removes). The centred
cost needs no ``Z`` and uses only the prior's samples — exactly what a device provides.
``lambda`` (``entropy_weight``) keeps the prior from collapsing onto a few codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import AbstractBoltzmannMachine
from .errors import InvalidDataError

__all__ = [
    "PRIORS",
    "QGAN",
    "BernoulliPrior",
    "BoltzmannPrior",
    "GaussianPrior",
    "fit_qgan",
    "load_digits_grayscale",
    "make_prior",
]

#: Prior names :func:`make_prior` accepts.
PRIORS = ("boltzmann", "bernoulli", "gaussian")


def load_digits_grayscale(*, test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's 8x8 digits as grayscale in ``[0, 1]`` (pixel / 16), split at random as
    :func:`kpp_sdk.models.datasets.load_digits` splits them (same ``seed``, same rows): returns
    ``(train, test, train_labels, test_labels)``, float32 and int64 arrays."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        from kpp_sdk.errors import MissingDependencyError

        raise MissingDependencyError("scikit-learn", extra="models",
                                     feature="the 'digits' data set") from None
    if not 0 < test_fraction < 1:
        raise InvalidDataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    k = round(x.shape[0] * test_fraction)
    te, tr = perm[:k], perm[k:]
    return x[tr], x[te], y[tr], y[te]


# --- priors --------------------------------------------------------------------------------------


class GaussianPrior(nn.Module):
    """``z ~ N(0, I)`` of dimension ``latent_dim``; nothing to train."""

    trainable = False

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = _positive(latent_dim, "latent_dim")

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(num, self.latent_dim, generator=generator)

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}"


class BernoulliPrior(nn.Module):
    """Independent bits ``z_i ~ Bernoulli(1/2)`` in ``{0, 1}``; nothing to train."""

    trainable = False

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = _positive(latent_dim, "latent_dim")

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return (torch.rand(num, self.latent_dim, generator=generator) < 0.5).float()

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}"


class BoltzmannPrior(nn.Module):
    """Binary latent codes from a Boltzmann machine sampled by ``sampler``.

    Parameters
    ----------
    model : AbstractBoltzmannMachine
        Its visible units are the code (``latent_dim = model.num_visible``); it needs a free
        energy (RBM, or BM with at most 24 hidden units).
    sampler : ModelSampler, Device or device name
        Draws the codes (:func:`kpp_sdk.models.samplers.as_sampler`); a
        :class:`~kpp_sdk.models.samplers.BoltzmannSampler` runs the device. Each draw is one
        ``negative`` phase, so the number of codes per draw is the sampler's ``num_reads``
        (persistent chains keep mixing across draws).
    """

    trainable = True

    def __init__(self, model: AbstractBoltzmannMachine, sampler: Any):
        super().__init__()
        from kpp_sdk.models.samplers import as_sampler

        if not isinstance(model, AbstractBoltzmannMachine):
            raise InvalidDataError(
                f"BoltzmannPrior needs a kpp_sdk.models Boltzmann machine, got "
                f"{type(model).__name__}")
        if not model.binary_visible:
            raise InvalidDataError("the latent code must be binary; use an RBM or a BM")
        self.model = model
        self.sampler = as_sampler(sampler)
        self.sampler.check(model)

    @property
    def latent_dim(self) -> int:
        return self.model.num_visible

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` codes (``(num, latent_dim)`` in {0, 1}) from as many sampler draws as needed.
        ``generator`` is unused: the sampler owns its randomness (its ``seed``)."""
        num = _positive(num, "num")
        V, parts, have = self.model.num_visible, [], 0
        while have < num:
            z = self.sampler.negative(self.model)[:, :V].detach()
            parts.append(z)
            have += z.shape[0]
        return torch.cat(parts)[:num].float()

    def log_prob_unnormalised(self, z: torch.Tensor) -> torch.Tensor:
        """``-F(z) = log p(z) + log Z`` (differentiable in the model's parameters)."""
        return -self.model.free_energy(z.to(self.model.dtype))

    def surrogate_loss(self, z: torch.Tensor, cost: torch.Tensor,
                       entropy_weight: float) -> torch.Tensor:
        """The score-function surrogate of the module docstring: its gradient is an unbiased
        (up to the centring) estimate of ``grad E[cost] - entropy_weight * grad H(p)``."""
        logp = self.log_prob_unnormalised(z)
        c = cost.detach().to(logp.dtype) + entropy_weight * logp.detach()
        return ((c - c.mean()) * logp).mean()


def make_prior(kind: str, latent_dim: int, *, sampler: Any = None, num_hidden: int = 16,
               generator: torch.Generator | None = None) -> nn.Module:
    """A prior by name (:data:`PRIORS`); ``"boltzmann"`` builds an RBM with ``latent_dim``
    visible and ``num_hidden`` hidden units drawn by ``sampler`` (default: ``sa.cpu`` through a
    BoltzmannSampler with 64 reads, 2 sweeps per draw)."""
    from .rbm import RestrictedBoltzmannMachine

    if kind == "gaussian":
        return GaussianPrior(latent_dim)
    if kind == "bernoulli":
        return BernoulliPrior(latent_dim)
    if kind == "boltzmann":
        if sampler is None:
            from kpp_sdk.models.samplers import BoltzmannSampler

            sampler = BoltzmannSampler("sa.cpu", num_reads=64, num_sweeps=2, seed=0)
        rbm = RestrictedBoltzmannMachine(latent_dim, num_hidden, generator=generator)
        return BoltzmannPrior(rbm, sampler)
    raise InvalidDataError(f"unknown prior {kind!r}; choose one of {', '.join(PRIORS)}")


# --- the GAN -----------------------------------------------------------------------------------


def _mlp(sizes: list[int], out_act: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2))
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


class QGAN(nn.Module):
    """A GAN with a pluggable latent prior (module docstring).

    Parameters
    ----------
    prior : BoltzmannPrior, BernoulliPrior or GaussianPrior
    data_dim : int, default 64
        Pixels per image (8x8 digits), values in ``[0, 1]`` (the generator ends in a sigmoid).
    hidden : int, default 128
        Width of the two hidden layers of the generator and of the discriminator (LeakyReLU).
    """

    def __init__(self, prior: nn.Module, data_dim: int = 64, *, hidden: int = 128):
        super().__init__()
        if not callable(getattr(prior, "sample", None)) or not hasattr(prior, "latent_dim"):
            raise InvalidDataError(
                f"prior must have sample(num) and latent_dim (see kpp_sdk.models.qgan), got "
                f"{type(prior).__name__}")
        self.prior = prior
        self.data_dim = _positive(data_dim, "data_dim")
        self.hidden = _positive(hidden, "hidden")
        d = prior.latent_dim
        self.generator = _mlp([d, hidden, hidden, self.data_dim], nn.Sigmoid())
        self.discriminator = _mlp([self.data_dim, hidden, hidden, 1], None)

    def config(self) -> dict:
        return {"class": "QGAN", "prior": type(self.prior).__name__,
                "latent_dim": self.prior.latent_dim, "data_dim": self.data_dim,
                "hidden": self.hidden}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``G(z)``: images from latent codes (never samples the prior)."""
        return self.generator(z)

    @torch.no_grad()
    def generate(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` images ``G(z)``, ``z`` drawn from the prior (a device, for BoltzmannPrior)."""
        return self.generator(self.prior.sample(num, generator).float())


def fit_qgan(gan: QGAN, data: Any, *, steps: int = 3000, batch_size: int = 64,
             lr: float = 2e-4, prior_lr: float = 1e-2, entropy_weight: float = 0.1,
             seed: int = 0, progress: Any = False, log_every: int = 100,
             state: dict | None = None, on_checkpoint: Callable[[dict], None] | None = None,
             stop: Callable[[], bool] | None = None) -> list[dict]:
    """Train ``gan`` on ``data`` (``(N, data_dim)`` in ``[0, 1]``, checked first): per step one
    discriminator and one generator update (Adam, betas (0.5, 0.999)) on ``batch_size`` real
    images and as many codes from the prior; a :class:`BoltzmannPrior` is updated in the same
    step with the score-function surrogate (SGD, ``prior_lr``, ``entropy_weight``).

    Returns every ``log_every`` steps: ``step``, ``d_loss``, ``g_loss``, ``seconds`` and, for a
    Boltzmann prior, ``prior_device_s`` (device time of the last draw) and
    ``prior_code_entropy`` (plug-in entropy in bits of the codes of the last draws).

    ``on_checkpoint(state)`` is called at every logged step with the loop's complete state
    (optimisers, random streams, the prior sampler's chains, the history); ``stop()`` is
    polled before every step and, when True, the state is handed over and
    :class:`~kpp_sdk.models.TrainingInterrupted` raised. A saved ``state`` passed back (with
    the weights from the same checkpoint and the same settings) continues the run with the
    results of one that never stopped (as :func:`kpp_sdk.models.fit`)."""
    from .errors import TrainingInterrupted
    from .training import _check_state

    x = torch.as_tensor(np.asarray(data, dtype=np.float32))
    if x.ndim != 2 or x.shape[1] != gan.data_dim:
        raise InvalidDataError(
            f"data must have shape (N, {gan.data_dim}), got {tuple(x.shape)}")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise InvalidDataError("data must be finite and in [0, 1] (scale pixels first)")
    if steps < 0 or batch_size < 1:
        raise InvalidDataError(f"steps must be >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    g = torch.Generator().manual_seed(int(seed))
    opt_d = torch.optim.Adam(gan.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(gan.generator.parameters(), lr=lr, betas=(0.5, 0.999))
    boltzmann = isinstance(gan.prior, BoltzmannPrior)
    opt_p = (torch.optim.SGD(gan.prior.model.parameters(), lr=prior_lr, momentum=0.5)
             if boltzmann else None)
    history: list[dict] = []
    sums, done, elapsed = [0.0, 0.0], 0, 0.0
    codes: list[torch.Tensor] = []
    if state is not None:
        _check_state(state, "qgan", num_examples=int(x.shape[0]), batch_size=batch_size,
                     log_every=log_every, prior=type(gan.prior).__name__)
        done, elapsed = int(state["step"]), float(state["seconds"])
        g.set_state(state["generator"])
        opt_d.load_state_dict(state["opt_d"])
        opt_g.load_state_dict(state["opt_g"])
        if boltzmann:
            opt_p.load_state_dict(state["opt_p"])
            gan.prior.sampler.load_state_dict(state["sampler"], gan.prior.model)
        history = [dict(r) for r in state["history"]]
        sums, codes = [float(v) for v in state["sums"]], list(state["codes"])

    def snapshot(step: int, seconds: float) -> dict:
        st = {"kind": "qgan", "step": step, "seconds": seconds, "num_examples": int(x.shape[0]),
              "batch_size": batch_size, "log_every": log_every,
              "prior": type(gan.prior).__name__, "generator": g.get_state(),
              "opt_d": opt_d.state_dict(), "opt_g": opt_g.state_dict(),
              "history": [dict(r) for r in history], "sums": list(sums),
              "codes": [c.clone() for c in codes]}
        if boltzmann:
            st["opt_p"] = opt_p.state_dict()
            st["sampler"] = gan.prior.sampler.state_dict(gan.prior.model)
        return st

    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=min(done, steps),
                   desc=f"qgan ({type(gan.prior).__name__})", unit="step")
    elif progress:
        bar = progress
    t0 = time.perf_counter() - elapsed
    for step in range(done + 1, steps + 1):
        if stop is not None and stop():
            if on_checkpoint is not None:
                on_checkpoint(snapshot(step - 1, time.perf_counter() - t0))
            raise TrainingInterrupted(f"stopped after step {step - 1} of {steps}",
                                      epoch=step - 1)
        real = x[torch.randint(0, x.shape[0], (batch_size,), generator=g)]
        z = gan.prior.sample(batch_size, g).float()
        fake = gan.generator(z)
        d_loss = (F.softplus(-gan.discriminator(real)).mean()
                  + F.softplus(gan.discriminator(fake.detach())).mean())
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        per_sample = F.softplus(-gan.discriminator(fake))[:, 0]
        g_loss = per_sample.mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if boltzmann:
            p_loss = gan.prior.surrogate_loss(z, per_sample.detach(), entropy_weight)
            opt_p.zero_grad(set_to_none=True)
            p_loss.backward()
            opt_p.step()
            codes.append(z)
            codes = codes[-20:]
        sums[0] += float(d_loss.detach())
        sums[1] += float(g_loss.detach())
        if bar is not None:
            bar.update(1)
        if step % log_every == 0 or step == steps:
            n = step % log_every or log_every
            row = {"step": step, "d_loss": sums[0] / n, "g_loss": sums[1] / n,
                   "seconds": time.perf_counter() - t0}
            if boltzmann:
                row["prior_device_s"] = float(gan.prior.sampler.last.get("device_s", 0.0))
                row["prior_code_entropy"] = code_entropy_bits(torch.cat(codes))
            history.append(row)
            if bar is not None and hasattr(bar, "set_postfix"):
                bar.set_postfix(d=f"{row['d_loss']:.3f}", g=f"{row['g_loss']:.3f}")
            sums = [0.0, 0.0]
            if on_checkpoint is not None:
                on_checkpoint(snapshot(step, time.perf_counter() - t0))
    if bar is not None and progress is True:
        bar.close()
    return history


def code_entropy_bits(z: torch.Tensor) -> float:
    """Plug-in entropy (bits) of the empirical distribution of binary codes (rows of ``z``); at
    most ``log2(num rows)``."""
    z = (torch.as_tensor(z) > 0.5).to(torch.int8)
    _, counts = torch.unique(z, dim=0, return_counts=True)
    p = counts.double() / counts.sum()
    return float(-(p * torch.log2(p)).sum())


def _positive(x: Any, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1:
        raise InvalidDataError(f"{what} must be a positive integer, got {x!r}")
    return int(x)

