"""Log-likelihoods and partition functions: exact by enumeration, AIS for larger models.

All computations run in float64 on the model's torch device. ``log Z`` is the log of
``Z = sum_x exp(-E(x))`` (an integral over real-valued visible units for Gaussian-Bernoulli RBMs,
whose log-likelihoods are log-densities). Log-likelihoods are in nats per example.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .base import MAX_ENUMERATION_UNITS, AbstractBoltzmannMachine, iter_binary_states
from .errors import InvalidDataError
from .rbm import RestrictedBoltzmannMachine

__all__ = ["exact_log_partition", "exact_log_likelihood", "exact_model_distribution",
           "ais_log_partition", "AISResult", "log_likelihood", "can_enumerate"]


def _f64(model: AbstractBoltzmannMachine):
    W, b, c = model.quadratic_form()
    c = float(c) if not torch.is_tensor(c) else float(c.detach())
    return W.detach().double(), b.detach().double(), c


def can_enumerate(model: AbstractBoltzmannMachine) -> bool:
    """Whether :func:`exact_log_partition` works for ``model`` (at most 2^24 terms)."""
    if isinstance(model, RestrictedBoltzmannMachine):
        return min(model.num_visible, model.num_hidden) <= MAX_ENUMERATION_UNITS
    return model.num_spins <= MAX_ENUMERATION_UNITS


def exact_log_partition(model: AbstractBoltzmannMachine) -> float:
    """``log Z`` by enumeration.

    RBMs enumerate the smaller layer and sum the other out analytically, so one layer of at
    most 24 units suffices; other models enumerate their :meth:`quadratic_form` units (at most
    24; for Gaussian-Bernoulli RBMs the hidden units, the visible ones integrated out).
    """
    with torch.no_grad():
        if isinstance(model, RestrictedBoltzmannMachine):
            Wvh = model.quadratic_coef.detach().double()
            a = model.visible_bias.detach().double()
            c = model.hidden_bias.detach().double()
            if model.num_visible <= model.num_hidden:
                terms = (v @ a + F.softplus(v @ Wvh + c).sum(-1)
                         for v in iter_binary_states(model.num_visible, device=Wvh.device))
            else:
                terms = (h @ c + F.softplus(h @ Wvh.t() + a).sum(-1)
                         for h in iter_binary_states(model.num_hidden, device=Wvh.device))
            return float(_logsumexp_stream(terms))
        W, b, c = _f64(model)
        terms = (x @ b + 0.5 * ((x @ W) * x).sum(-1) - c
                 for x in iter_binary_states(W.shape[0], device=W.device))
        return float(_logsumexp_stream(terms))


def _logsumexp_stream(chunks) -> torch.Tensor:
    acc = None
    for t in chunks:
        m = torch.logsumexp(t, dim=0)
        acc = m if acc is None else torch.logaddexp(acc, m)
    return acc


def _free_energy64(model: AbstractBoltzmannMachine, visible) -> torch.Tensor:
    """``F(v)`` in float64 (a float64 copy of the model evaluates it)."""
    v = model.check_visible(visible)
    return _as_float64(model).free_energy(v.double())


def _as_float64(model: AbstractBoltzmannMachine) -> AbstractBoltzmannMachine:
    """The model itself if it is float64, else a float64 copy (the model is left as it is)."""
    if model.dtype == torch.float64:
        return model
    return copy.deepcopy(model).double()


def exact_log_likelihood(model: AbstractBoltzmannMachine, visible, *,
                         log_z: float | None = None, reduction: str = "mean"):
    """``log p(v) = -F(v) - log Z`` per row (``reduction="none"``, a float64 tensor) or its mean
    (a float), with ``log Z`` from :func:`exact_log_partition` unless given."""
    with torch.no_grad():
        if log_z is None:
            log_z = exact_log_partition(model)
        ll = -_free_energy64(model, visible) - log_z
    return ll if reduction == "none" else float(ll.mean())


def exact_model_distribution(model: AbstractBoltzmannMachine):
    """Every state of a binary model and its probability: ``(states, p)`` with states of shape
    ``(2^N, N)`` (model dtype and device) and ``p`` float64. For exact gradients and tests."""
    if not model.binary_visible:
        raise InvalidDataError("exact_model_distribution needs binary units only")
    if model.num_nodes > MAX_ENUMERATION_UNITS:
        raise InvalidDataError(
            f"{model.num_nodes} units are too many to enumerate (at most {MAX_ENUMERATION_UNITS})")
    with torch.no_grad():
        states = torch.cat(list(iter_binary_states(model.num_nodes, device=model.device)))
        e = _as_float64(model).energy(states)
        logp = -e - torch.logsumexp(-e, dim=0)
    return states.to(model.dtype), logp.exp()


# --- annealed importance sampling ---------------------------------------------------------------


@dataclass(frozen=True)
class AISResult:
    """``log_z``: the estimate of ``log Z``; ``log_z_low``/``log_z_high``: ``log`` of the mean
    weight minus / plus three standard errors (``-inf`` when that goes below zero);
    ``log_weights``: the final log importance weights (plus ``log Z`` of the base model)."""

    log_z: float
    log_z_low: float
    log_z_high: float
    log_weights: np.ndarray = field(repr=False)
    num_chains: int
    num_betas: int

    @property
    def stderr(self) -> float:
        """A symmetric error bar on ``log_z`` (half the width of the 3-sigma interval / 3)."""
        if not math.isfinite(self.log_z_low):
            return float("inf")
        return (self.log_z_high - self.log_z_low) / 6.0


def _schedule(num_betas: int) -> torch.Tensor:
    """Inverse temperatures 0 -> 1 spaced as in Salakhutdinov & Murray (2008): coarse while
    the intermediate distributions are nearly uniform, fine near the target."""
    n1 = max(2, round(num_betas * 0.0345))
    n2 = max(2, round(num_betas * 0.2759))
    n3 = max(2, num_betas - n1 - n2)
    return torch.cat([torch.linspace(0.0, 0.5, n1 + 1)[:-1], torch.linspace(0.5, 0.9, n2 + 1)[:-1],
                      torch.linspace(0.9, 1.0, n3)]).double()


def _result(log_w: torch.Tensor, log_z_base: float, num_betas: int) -> AISResult:
    log_w = log_w + log_z_base
    m = log_w.shape[0]
    mx = float(log_w.max())
    r = torch.exp(log_w - mx)
    mean = float(r.mean())
    sd = float(r.std(unbiased=True)) / math.sqrt(m) if m > 1 else float("inf")
    low = mean - 3 * sd
    return AISResult(
        log_z=mx + math.log(mean),
        log_z_low=mx + math.log(low) if low > 0 else float("-inf"),
        log_z_high=mx + math.log(mean + 3 * sd),
        log_weights=log_w.cpu().numpy(),
        num_chains=m,
        num_betas=num_betas,
    )


def ais_log_partition(model: AbstractBoltzmannMachine, *, num_chains: int = 100,
                      num_betas: int = 1000, data=None, seed: int | None = 0) -> AISResult:
    """Annealed importance sampling estimate of ``log Z`` (Neal 2001; Salakhutdinov & Murray 2008).

    The chains anneal from a base model of independent units (log Z known) to the model through
    ``p_k ∝ p_base^(1 - beta_k) p^beta_k`` with Gibbs transitions. The base's visible biases
    match the mean of ``data`` when given (a much better start for trained models), else zero.
    RBMs anneal the visible layer with the hidden one summed out; other models anneal their
    :meth:`quadratic_form` units (hidden ones for Gaussian-Bernoulli RBMs, plus the Gaussian
    normaliser). ``E[exp(log_weights)] = Z``: log Z is underestimated on average for too few
    betas, never systematically overestimated.
    """
    if num_chains < 2 or num_betas < 10:
        raise InvalidDataError("AIS needs num_chains >= 2 and num_betas >= 10")
    betas = _schedule(int(num_betas))
    gen = torch.Generator(device=model.device)
    gen.manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]) if seed is not None
                    else int(torch.seed()))
    with torch.no_grad():
        if isinstance(model, RestrictedBoltzmannMachine):
            return _ais_rbm(model, betas, int(num_chains), data, gen)
        return _ais_quadratic(model, betas, int(num_chains), data, gen)


def _base_bias(data, n: int, device) -> torch.Tensor:
    if data is None:
        return torch.zeros(n, dtype=torch.float64, device=device)
    d = torch.as_tensor(data, dtype=torch.float64, device=device)
    if d.ndim != 2 or d.shape[1] != n:
        raise InvalidDataError(f"AIS base data must have shape (batch, {n}), got {tuple(d.shape)}")
    p = d.mean(0).clamp(0.02, 0.98)  # smoothed: a unit never on in the data may be on in the model
    return torch.log(p) - torch.log1p(-p)


def _ais_rbm(model, betas, m, data, gen) -> AISResult:
    Wvh = model.quadratic_coef.detach().double()
    a = model.visible_bias.detach().double()
    c = model.hidden_bias.detach().double()
    dev = Wvh.device
    a0 = _base_bias(data, model.num_visible, dev)
    # at beta = 0 the hidden units are free: 2^H configurations each of weight one
    log_z_base = float(F.softplus(a0).sum()) + model.num_hidden * math.log(2.0)

    def log_f(v, beta):  # unnormalised log p_k(v), the hidden layer summed out
        return ((1 - beta) * (v @ a0) + beta * (v @ a)
                + F.softplus(beta * (v @ Wvh + c)).sum(-1))

    v = (torch.rand(m, model.num_visible, generator=gen, device=dev, dtype=torch.float64)
         < torch.sigmoid(a0)).double()
    log_w = torch.zeros(m, dtype=torch.float64, device=dev)
    for k in range(1, betas.numel()):
        b_prev, b = float(betas[k - 1]), float(betas[k])
        log_w += log_f(v, b) - log_f(v, b_prev)
        # a Gibbs sweep that leaves p_k invariant
        ph = torch.sigmoid(b * (v @ Wvh + c))
        h = (torch.rand(ph.shape, generator=gen, device=dev, dtype=torch.float64) < ph).double()
        pv = torch.sigmoid((1 - b) * a0 + b * (h @ Wvh.t() + a))
        v = (torch.rand(pv.shape, generator=gen, device=dev, dtype=torch.float64) < pv).double()
    return _result(log_w, log_z_base, betas.numel())


def _ais_quadratic(model, betas, m, data, gen) -> AISResult:
    W, b, c = _f64(model)
    n = W.shape[0]
    dev = W.device
    b0 = torch.zeros(n, dtype=torch.float64, device=dev)
    if data is not None and model.binary_visible:
        b0[: model.num_visible] = _base_bias(data, model.num_visible, dev)
    log_z_base = float(F.softplus(b0).sum())

    def log_f(x, beta):
        return (1 - beta) * (x @ b0) + beta * (x @ b + 0.5 * ((x @ W) * x).sum(-1))

    x = (torch.rand(m, n, generator=gen, device=dev, dtype=torch.float64)
         < torch.sigmoid(b0)).double()
    log_w = torch.zeros(m, dtype=torch.float64, device=dev)
    for k in range(1, betas.numel()):
        b_prev, bk = float(betas[k - 1]), float(betas[k])
        log_w += log_f(x, bk) - log_f(x, b_prev)
        u = torch.rand(m, n, generator=gen, device=dev, dtype=torch.float64)
        for i in range(n):
            p = torch.sigmoid((1 - bk) * b0[i] + bk * (b[i] + x @ W[:, i]))
            x[:, i] = (u[:, i] < p).double()
    return _result(log_w - c, log_z_base, betas.numel())


def log_likelihood(model: AbstractBoltzmannMachine, visible, *, method: str = "auto",
                   num_chains: int = 100, num_betas: int = 1000, data=None,
                   seed: int | None = 0) -> dict:
    """Mean log-likelihood of ``visible``: exact where enumeration is possible (``"auto"``,
    ``"exact"``), else by AIS (``"ais"``). Returns ``{"log_likelihood", "log_z", "method",
    "stderr"}`` (``stderr`` 0 for exact values; for AIS the error of log Z, which shifts every
    example alike)."""
    if method not in ("auto", "exact", "ais"):
        raise InvalidDataError(f"method must be 'auto', 'exact' or 'ais', got {method!r}")
    if method == "exact" or (method == "auto" and can_enumerate(model)):
        log_z, stderr, used = exact_log_partition(model), 0.0, "exact"
    else:
        res = ais_log_partition(model, num_chains=num_chains, num_betas=num_betas,
                                data=visible if data is None else data, seed=seed)
        log_z, stderr, used = res.log_z, res.stderr, "ais"
    ll = exact_log_likelihood(model, visible, log_z=log_z)
    return {"log_likelihood": ll, "log_z": log_z, "method": used, "stderr": stderr}
