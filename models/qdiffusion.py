"""Q-Diffusion: a masked discrete diffusion language model reweighted by a Boltzmann energy.

The model (a residual energy-based diffusion model)
---------------------------------------------------
Sequences ``x0`` are ``L`` tokens from a vocabulary of ``V`` symbols; the absorbing ("mask")
forward process replaces tokens by the mask symbol ``V``. A small denoiser
:class:`MaskedDiffusion` gives the *proposal* ``mu_theta(x0 | x_t)``: independent categorical
distributions over the masked positions, the unmasked ones copied from ``x_t``. A Boltzmann
energy ``E_QBM(x0)`` reweights it::

    p(x0 | x_t) = mu_theta(x0 | x_t) * exp(-E_QBM(x0)) / Z(x_t).

``E_QBM`` is a fully visible :class:`~kpp_sdk.models.BoltzmannMachine` over the one-hot encoding
of ``x0`` (``L * V`` binary units, unit ``i * V + v`` is on when position ``i`` holds token
``v``), plus a scalar offset: pairwise couplings between the tokens of any two positions (a Potts
model written as an Ising model), exactly what the factorised proposal lacks.
:meth:`QDiffusion.energy_ising` is that energy as an :class:`~kpp_sdk.IsingProblem` (offset
included), so a device can evaluate or sample it.

Training
--------
* ``mu_theta`` (:func:`diffusion_loss`): cross-entropy on the masked positions of ``x_t``, with
  the number of masked positions uniform in ``1..L`` (the masked-diffusion objective, each
  sequence's loss averaged over its masked positions).
* ``E_QBM`` (:func:`nce_loss`, equation 5 of the seed paper): noise-contrastive estimation, a
  logistic loss in which ``-E`` is the log-odds that a sequence is real::

      loss = mean softplus(E(x+)) + mean softplus(-E(x-)),

  positives ``x+`` are data sequences, negatives ``x- ~ mu_theta(. | x_t)`` are the proposal's
  denoisings of the same sequences masked at the levels the sampler uses. At the optimum
  ``-E = log p_data / mu`` (the offset absorbs the normaliser).

Generation (:meth:`QDiffusion.generate`)
----------------------------------------
``T`` reverse steps over a random order of the positions; step ``k`` draws ``x0`` from
``p(x0 | x_t)`` by importance sampling: ``k`` candidates from ``mu_theta(. | x_t)``, one chosen
with probability ``exp(-E(x^j)) / sum_l exp(-E(x^l))`` (normalised by the local sum over the
candidates), and reveals the next ``L / T`` positions of the order. With ``E = 0`` this is exactly
ancestral sampling of the proposal.

Perplexity (:meth:`QDiffusion.nll_bound`)
-----------------------------------------
The ``T``-step reverse process above (reveal sets: consecutive blocks of a uniformly random order;
the model draws the reveal set with the same law as the forward process) has the evidence bound::

    -log p(x0) <= E_sigma sum_k -log p(x0[R_k] | x0[revealed before k]),

where ``p(x0[R] | x_t)`` is the marginal over the revealed block of the per-step model. Each term
is estimated from ``K`` samples ``z^1..z^K ~ mu(. | x_t)`` and ``y^m = (x0[R], z^m[rest])``
(the revealed block from the data, the other masked positions from ``z^m``), ``w = exp(-E)``.
Two estimators share these samples and energies:

* ``nll`` (the conservative one): the per-step model is taken to be the sampler that
  :meth:`QDiffusion.generate` runs with ``k = K`` candidates (sampling-importance-resampling,
  SIR), a proper distribution ``q_K``. With ``A_m = w(y^m) / ((w(y^m) + sum_{j != m} w(z^j)) / K)``,
  ``E[A_m] = q_K(x0[R] | x_t) / mu(x0[R] | x_t)`` exactly, so by Jensen
  ``E[log mean_m A_m] <= log q_K(x0[R] | x_t) - log mu(x0[R] | x_t)``: the estimate
  ``-log mu(x0[R]) - log mean_m A_m`` is an upper bound *in expectation* on the step's
  ``-log q_K``, for every ``K`` and every energy (the bound of Lawson et al., "Energy-Inspired
  Models", NeurIPS 2019, marginalised over the masked positions outside ``R``). ``q_K`` tends to
  the reweighted model ``mu * exp(-E) / Z`` as ``K`` grows; at ``K = 1`` it is the proposal.
* ``nll_is`` (the importance-sampling estimate of the ``K -> infinity`` model)::

      -log mu(x0[R] | x_t) - log mean_m w(y^m) + log mean_j w(z^j)

  consistent as ``K`` grows, but at finite ``K`` both log-means are biased low (Jensen): the
  first makes the estimate pessimistic, the second (the ``log Z`` term) optimistic, and in
  practice the second wins. ``log_z_bias`` is the delta-method size of the optimistic part,
  ``Var(w) / (2 K mean(w)^2)``.

With ``E = 0`` both reduce exactly to the ``T``-step masked-diffusion bound of ``mu_theta``
alone, which is how the baseline is computed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .bm import BoltzmannMachine
from .errors import InvalidDataError

__all__ = [
    "CharTokenizer",
    "MaskedDiffusion",
    "QDiffusion",
    "TextCorpus",
    "diffusion_loss",
    "fit_diffusion",
    "fit_energy",
    "importance_sample",
    "load_text_corpus",
    "nce_loss",
    "perplexity",
    "reveal_schedule",
]

#: Text corpora shipped with kpp-sdk (package data under ``kpp_sdk/data/``).
CORPORA = ("tinyshakespeare",)


# --- data -----------------------------------------------------------------------------------------


class CharTokenizer:
    """Characters <-> token ids ``0..V-1`` over a fixed alphabet (sorted, no duplicates)."""

    def __init__(self, alphabet: str):
        chars = sorted(set(alphabet))
        if len(chars) < 2:
            raise InvalidDataError(f"an alphabet needs at least 2 characters, got {alphabet!r}")
        self.alphabet = "".join(chars)
        self._index = {c: i for i, c in enumerate(chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (int64); a character outside the alphabet raises, naming it."""
        if text.isascii() and self.alphabet.isascii():  # the fast path: a lookup table
            lut = np.full(128, -1, dtype=np.int64)
            lut[np.frombuffer(self.alphabet.encode("ascii"), np.uint8)] = np.arange(
                self.vocab_size)
            ids = lut[np.frombuffer(text.encode("ascii"), np.uint8)]
            if ids.size == 0 or ids.min() >= 0:
                return ids
        try:
            return np.fromiter((self._index[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as exc:
            raise InvalidDataError(
                f"character {exc.args[0]!r} is not in the tokenizer's alphabet "
                f"{self.alphabet!r}; lowercase the text or build the tokenizer from it") from None

    def decode(self, ids: Any) -> str:
        ids = np.asarray(ids).ravel()
        return "".join(self.alphabet[int(i)] if 0 <= int(i) < self.vocab_size else "_"
                       for i in ids)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


@dataclass(frozen=True)
class TextCorpus:
    """A character corpus split by position: ``train``/``test`` are int64 token ids."""

    name: str
    tokenizer: CharTokenizer
    train: np.ndarray
    test: np.ndarray

    def windows(self, split: str, seq_len: int, num: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` random windows of ``seq_len`` tokens of ``split`` ("train" or "test")."""
        ids = self._split(split)
        if seq_len < 1 or seq_len > ids.size:
            raise InvalidDataError(f"seq_len must be in 1..{ids.size}, got {seq_len}")
        starts = torch.randint(0, ids.size - seq_len + 1, (num,), generator=generator)
        t = torch.from_numpy(ids)
        return t[starts[:, None] + torch.arange(seq_len)]

    def blocks(self, split: str, seq_len: int, max_blocks: int | None = None) -> torch.Tensor:
        """Consecutive non-overlapping windows of ``split`` (the held-out evaluation set)."""
        ids = self._split(split)
        n = ids.size // seq_len
        if n < 1:
            raise InvalidDataError(f"{split} holds fewer than seq_len={seq_len} tokens")
        if max_blocks is not None:
            n = min(n, int(max_blocks))
        return torch.from_numpy(ids[: n * seq_len].reshape(n, seq_len).copy())

    def _split(self, split: str) -> np.ndarray:
        if split not in ("train", "test"):
            raise InvalidDataError(f"split must be 'train' or 'test', got {split!r}")
        return self.train if split == "train" else self.test

    def __repr__(self) -> str:
        return (f"TextCorpus({self.name!r}, vocab_size={self.tokenizer.vocab_size}, "
                f"train={self.train.size:,} chars, test={self.test.size:,} chars)")


def load_text_corpus(name: str = "tinyshakespeare", *, lowercase: bool = True,
                     test_fraction: float = 0.1, text: str | None = None) -> TextCorpus:
    """A character corpus that loads offline.

    ``"tinyshakespeare"``: 1.1 MB of Shakespeare (karpathy/char-rnn, public domain), shipped in
    ``kpp_sdk/data/tinyshakespeare/`` with its ``SOURCE.txt``. ``lowercase`` (default) folds
    case: 39 symbols instead of 65. The first ``1 - test_fraction`` of the characters are the
    training split, the rest held out (the split SOURCE.txt suggests). ``text``: use this string
    instead of a shipped corpus (``name`` is then only a label).
    """
    if not 0 < test_fraction < 1:
        raise InvalidDataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if text is None:
        if name not in CORPORA:
            raise InvalidDataError(
                f"unknown corpus {name!r}; shipped corpora: {', '.join(CORPORA)} (or pass text=)")
        text = (resources.files("kpp_sdk") / "data" / name / "input.txt").read_text("utf-8")
    if lowercase:
        text = text.lower()
    tok = CharTokenizer(text)
    ids = tok.encode(text)
    cut = round(ids.size * (1 - test_fraction))
    return TextCorpus(name, tok, ids[:cut].copy(), ids[cut:].copy())


# --- the proposal: a masked diffusion denoiser -------------------------------------------------------


class MaskedDiffusion(nn.Module):
    """The denoiser ``mu_theta(x0 | x_t)`` of an absorbing-state diffusion over ``L`` tokens.

    Input: ``x_t`` of shape ``(B, L)`` with ids in ``0..V`` (``V`` = :attr:`mask_id`, the mask).
    Output of :meth:`forward`: logits ``(B, L, V)``; :meth:`log_probs` applies the carry-over
    rule (unmasked positions are certain). The network: a sum of per-position token embeddings
    (equivalently one linear layer on the one-hot input), ``num_layers`` residual MLP blocks of
    width ``hidden`` with layer norm, and a linear read-out to every position's logits. It needs
    no time input: the number of masks tells the noise level.
    """

    def __init__(self, seq_len: int, vocab_size: int, *, hidden: int = 512, num_layers: int = 2,
                 generator: torch.Generator | None = None):
        super().__init__()
        if seq_len < 1 or vocab_size < 2 or hidden < 1 or num_layers < 0:
            raise InvalidDataError(
                f"need seq_len >= 1, vocab_size >= 2, hidden >= 1, num_layers >= 0; got "
                f"{seq_len}, {vocab_size}, {hidden}, {num_layers}")
        self.seq_len, self.vocab_size, self.hidden = int(seq_len), int(vocab_size), int(hidden)
        self.num_layers = int(num_layers)
        self.embed = nn.EmbeddingBag(self.seq_len * (self.vocab_size + 1), hidden, mode="sum")
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 2 * hidden), nn.GELU(),
                          nn.Linear(2 * hidden, hidden)) for _ in range(self.num_layers))
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, self.seq_len * self.vocab_size)
        if generator is not None:
            with torch.no_grad():
                for p in self.parameters():
                    if p.ndim > 1:
                        p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(p.shape[-1]))
                self.embed.weight.copy_(
                    torch.randn(self.embed.weight.shape, generator=generator) * 0.02)

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    def config(self) -> dict:
        return {"seq_len": self.seq_len, "vocab_size": self.vocab_size, "hidden": self.hidden,
                "num_layers": self.num_layers}

    def check_tokens(self, x: Any, *, allow_mask: bool) -> torch.Tensor:
        x = torch.as_tensor(x)
        top = self.vocab_size + (1 if allow_mask else 0)
        if x.ndim != 2 or x.shape[1] != self.seq_len:
            raise InvalidDataError(
                f"token sequences must have shape (batch, {self.seq_len}), got {tuple(x.shape)}")
        if x.dtype.is_floating_point or x.dtype == torch.bool:
            raise InvalidDataError(f"token ids must be integers, got dtype {x.dtype}")
        if x.numel() and (x.min() < 0 or x.max() >= top):
            raise InvalidDataError(
                f"token ids must be in 0..{top - 1} ({'with' if allow_mask else 'without'} the "
                f"mask id {self.mask_id}), got values in {int(x.min())}..{int(x.max())}")
        return x.to(device=self.out.weight.device, dtype=torch.long)

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        xt = self.check_tokens(xt, allow_mask=True)
        offsets = torch.arange(self.seq_len, device=xt.device) * (self.vocab_size + 1)
        h = self.embed(xt + offsets)
        for block in self.blocks:
            h = h + block(h)
        return self.out(self.norm(h)).view(-1, self.seq_len, self.vocab_size)

    def log_probs(self, xt: torch.Tensor) -> torch.Tensor:
        """``log mu(x0_i = v | x_t)``, shape ``(B, L, V)``: log-softmax on masked positions,
        0 / -inf (the carried-over token) on unmasked ones."""
        xt = self.check_tokens(xt, allow_mask=True)
        logp = F.log_softmax(self(xt).float(), dim=-1)
        masked = xt == self.mask_id
        carry = torch.full_like(logp, -math.inf)
        carry.scatter_(-1, xt.clamp(max=self.vocab_size - 1)[..., None], 0.0)
        return torch.where(masked[..., None], logp, carry)


def _mask_random(x0: torch.Tensor, num_masked: torch.Tensor, mask_id: int,
                 generator: torch.Generator | None) -> torch.Tensor:
    """``x0`` with ``num_masked[b]`` uniformly chosen positions of row ``b`` masked."""
    keys = torch.rand(x0.shape, generator=generator, device=x0.device)
    rank = keys.argsort(dim=1).argsort(dim=1)
    return torch.where(rank < num_masked[:, None], torch.full_like(x0, mask_id), x0)


def diffusion_loss(model: MaskedDiffusion, x0: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean over sequences of the cross-entropy on the masked positions (averaged per sequence),
    with ``m ~ Uniform{1..L}`` positions masked: the masked-diffusion training loss."""
    x0 = model.check_tokens(x0, allow_mask=False)
    B, L = x0.shape
    m = torch.randint(1, L + 1, (B,), generator=generator, device=x0.device)
    xt = _mask_random(x0, m, model.mask_id, generator)
    logits = model(xt)
    ce = F.cross_entropy(logits.reshape(-1, model.vocab_size), x0.reshape(-1),
                         reduction="none").view(B, L)
    masked = (xt == model.mask_id).to(ce.dtype)
    return ((ce * masked).sum(1) / m.to(ce.dtype)).mean()


def _sample_categorical(logp: torch.Tensor, num: int,
                        generator: torch.Generator | None) -> torch.Tensor:
    """``num`` draws per row of ``logp`` ``(..., V)`` by the Gumbel-max trick -> ``(num, ...)``."""
    u = torch.rand((num, *logp.shape), generator=generator, device=logp.device,
                   dtype=logp.dtype).clamp_(1e-20, 1.0)
    return (logp[None] - torch.log(-torch.log(u))).argmax(-1)


# --- NCE and importance sampling (model-independent, tested on toy problems) ----------------------


def nce_loss(energy_pos: torch.Tensor, energy_neg: torch.Tensor) -> torch.Tensor:
    """Equation 5: ``mean softplus(E(x+)) + mean softplus(-E(x-))`` — the logistic loss of a
    classifier whose log-odds of "data" is ``-E``. With as many negatives (drawn from the noise
    ``q``) as positives, the minimiser over all functions is ``E = log q - log p_data``, the
    normaliser included (so ``E`` needs a free offset)."""
    return F.softplus(energy_pos).mean() + F.softplus(-energy_neg).mean()


def importance_sample(candidates: torch.Tensor, energies: torch.Tensor,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
    """Sampling-importance-resampling: for each row ``b``, one of ``candidates[b]`` (shape
    ``(B, k, ...)``, drawn from a proposal ``mu``) chosen with probability
    ``exp(-E_j) / sum_l exp(-E_l)`` (``energies``: ``(B, k)``). As ``k`` grows the choice follows
    ``mu * exp(-E)`` normalised; with ``E = 0`` it is a uniform pick, i.e. a draw of ``mu``.
    Returns the chosen rows ``(B, ...)`` and the effective sample size of each row's weights."""
    if candidates.shape[:2] != energies.shape:
        raise InvalidDataError(
            f"candidates {tuple(candidates.shape)} and energies {tuple(energies.shape)} must agree "
            "in their first two dimensions (batch, k)")
    w = torch.softmax(-energies.double(), dim=1)
    idx = torch.multinomial(w, 1, generator=generator)[:, 0]
    ess = 1.0 / (w * w).sum(1)
    return candidates[torch.arange(candidates.shape[0], device=candidates.device), idx], ess


def reveal_schedule(seq_len: int, steps: int) -> list[int]:
    """How many positions each of the ``steps`` reverse steps reveals (as even as possible, the
    larger blocks first); they sum to ``seq_len``."""
    if not 1 <= steps <= seq_len:
        raise InvalidDataError(f"steps must be in 1..seq_len={seq_len}, got {steps}")
    base, extra = divmod(seq_len, steps)
    return [base + (1 if k < extra else 0) for k in range(steps)]


def _logsumexp_leave_one_out(a: torch.Tensor) -> torch.Tensor:
    """``out[..., m] = log sum_{j != m} exp(a[..., j])`` over the last axis, without the
    cancellation of ``log(S - exp(a_m))``: prefix and suffix cumulative log-sums (``-inf`` for a
    single entry)."""
    pad = torch.full_like(a[..., :1], -math.inf)
    before = torch.cat([pad, torch.logcumsumexp(a, -1)[..., :-1]], -1)
    after = torch.cat([torch.logcumsumexp(a.flip(-1), -1).flip(-1)[..., 1:], pad], -1)
    return torch.logaddexp(before, after)


def perplexity(nll_per_sequence: torch.Tensor, seq_len: int) -> float:
    """``exp(mean NLL per token)``."""
    return float(math.exp(float(nll_per_sequence.double().mean()) / seq_len))


# --- the hybrid model ----------------------------------------------------------------------------


class QDiffusion(nn.Module):
    """Masked diffusion proposal times a Boltzmann energy (module docstring).

    Parameters
    ----------
    seq_len, vocab_size : int
    hidden, num_layers : int
        Size of the :class:`MaskedDiffusion` proposal.
    energy_init_std : float, default 0.0
        Initial couplings of the Boltzmann energy (0: the model starts as the proposal).
    generator : torch.Generator, optional
    """

    def __init__(self, seq_len: int, vocab_size: int, *, hidden: int = 512, num_layers: int = 2,
                 energy_init_std: float = 0.0, generator: torch.Generator | None = None):
        super().__init__()
        self.diffusion = MaskedDiffusion(seq_len, vocab_size, hidden=hidden,
                                         num_layers=num_layers, generator=generator)
        n = self.diffusion.seq_len * self.diffusion.vocab_size
        q = (torch.randn(n, n, generator=generator) * energy_init_std if energy_init_std
             else torch.zeros(n, n))
        #: ``E_QBM`` without its offset: a fully visible Boltzmann machine over the one-hot code.
        self.energy_model = BoltzmannMachine(n, 0, quadratic_coef=q)
        #: The NCE offset (absorbs the log-normaliser; cancels in ``p(x0 | x_t)``).
        self.energy_offset = nn.Parameter(torch.zeros(()))
        #: Multiplies the energy everywhere; 0 turns the model into the bare proposal.
        self.energy_scale = 1.0

    @property
    def seq_len(self) -> int:
        return self.diffusion.seq_len

    @property
    def vocab_size(self) -> int:
        return self.diffusion.vocab_size

    def config(self) -> dict:
        return {"class": "QDiffusion", **self.diffusion.config()}

    @staticmethod
    def parameter_shapes(seq_len: int, vocab_size: int, hidden: int = 512,
                         num_layers: int = 2) -> dict[str, tuple[int, ...]]:
        """The ``state_dict`` shapes of a model built with this configuration, computed
        without building it (a checkpoint's tensors are checked against them first)."""
        L, V, H = int(seq_len), int(vocab_size), int(hidden)
        shapes: dict[str, tuple[int, ...]] = {"energy_offset": (),
                                              "diffusion.embed.weight": (L * (V + 1), H)}
        for i in range(int(num_layers)):
            b = f"diffusion.blocks.{i}"
            shapes.update({f"{b}.0.weight": (H,), f"{b}.0.bias": (H,),
                           f"{b}.1.weight": (2 * H, H), f"{b}.1.bias": (2 * H,),
                           f"{b}.3.weight": (H, 2 * H), f"{b}.3.bias": (H,)})
        shapes.update({"diffusion.norm.weight": (H,), "diffusion.norm.bias": (H,),
                       "diffusion.out.weight": (L * V, H), "diffusion.out.bias": (L * V,),
                       "energy_model.quadratic_coef": (L * V, L * V),
                       "energy_model.linear_bias": (L * V,)})
        return shapes

    def parameters_energy(self) -> list[nn.Parameter]:
        return [*self.energy_model.parameters(), self.energy_offset]

    # --- the energy ------------------------------------------------------------------------------

    def one_hot(self, x0: torch.Tensor) -> torch.Tensor:
        """The binary code of sequences: ``(B, L * V)`` float, unit ``i * V + v`` = [x0_i == v]."""
        x0 = self.diffusion.check_tokens(x0, allow_mask=False)
        return F.one_hot(x0, self.vocab_size).reshape(x0.shape[0], -1).to(
            self.energy_model.dtype)

    def energy(self, x0: torch.Tensor) -> torch.Tensor:
        """``E_QBM(x0)`` per row of token ids ``(..., L)``, shape ``(...)``: the Boltzmann
        machine's energy of the one-hot code plus the offset, computed by gathering the ``L^2``
        couplings of the tokens present (equal to ``energy_model.energy(one_hot(x0)) +
        energy_offset``), times :attr:`energy_scale`."""
        lead = x0.shape[:-1]
        x = x0.reshape(-1, self.seq_len).to(device=self.energy_offset.device, dtype=torch.long)
        idx = x + torch.arange(self.seq_len, device=x.device) * self.vocab_size
        W = self.energy_model.symmetrized_quadratic_coef()
        b = self.energy_model.linear_bias
        pair = W[idx[:, :, None], idx[:, None, :]].sum((1, 2))
        e = -b[idx].sum(1) - 0.5 * pair + self.energy_offset
        return (self.energy_scale * e).reshape(lead)

    def energy_ising(self):
        """``E_QBM`` (offset included) as an :class:`~kpp_sdk.IsingProblem` over the
        ``L * V`` spins ``s = 2 * one_hot(x0) - 1``: what a device evaluates or samples."""
        from kpp_sdk.problem import IsingProblem

        p = self.energy_model.to_ising()
        s = float(self.energy_scale)
        return IsingProblem(p.J * s, p.h * s, (p.offset + float(self.energy_offset.detach())) * s)

    # --- sampling --------------------------------------------------------------------------------

    def _orders(self, batch: int, generator, device) -> torch.Tensor:
        return torch.rand(batch, self.seq_len, generator=generator, device=device).argsort(1)

    @torch.no_grad()
    def generate(self, num: int, *, steps: int = 4, k: int = 16,
                 generator: torch.Generator | None = None,
                 return_ess: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``num`` sequences by ``steps`` reverse steps, each drawing ``x0 ~ p(x0 | x_t)`` by
        :func:`importance_sample` over ``k`` proposal candidates and revealing the next block of a
        random order (module docstring). ``k=1`` or :attr:`energy_scale` 0 gives the bare
        proposal. With ``return_ess``, also the mean effective sample size per step."""
        if num < 1 or k < 1:
            raise InvalidDataError(f"num and k must be positive, got {num} and {k}")
        sizes = reveal_schedule(self.seq_len, steps)
        dev = self.energy_offset.device
        mask = self.diffusion.mask_id
        xt = torch.full((num, self.seq_len), mask, dtype=torch.long, device=dev)
        order = self._orders(num, generator, dev)
        rows = torch.arange(num, device=dev)[:, None]
        start, ess_log = 0, []
        for size in sizes:
            logp = self.diffusion.log_probs(xt)
            cand = _sample_categorical(logp, k, generator).transpose(0, 1)  # (num, k, L)
            if k > 1:
                x0, ess = importance_sample(cand, self.energy(cand), generator)
            else:
                x0, ess = cand[:, 0], torch.ones(num, dtype=torch.float64, device=dev)
            ess_log.append(float(ess.mean()))
            block = order[:, start:start + size]
            xt[rows, block] = x0[rows, block]
            start += size
        return (xt, torch.tensor(ess_log)) if return_ess else xt

    # --- the evidence bound ----------------------------------------------------------------------

    @torch.no_grad()
    def nll_bound(self, x0: torch.Tensor, *, steps: int = 4, num_samples: int = 64,
                  generator: torch.Generator | None = None, use_energy: bool = True,
                  batch_size: int = 256,
                  orders: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The ``steps``-step evidence bound on ``-log p(x0)`` per sequence (nats), one random
        order per sequence, estimated from ``num_samples`` (``K``) proposal samples per step
        (module docstring). ``use_energy=False`` runs the same code with ``E = 0``: the bound
        of the proposal alone (exact, both estimators agree).

        Returns, per sequence:

        * ``nll``: the conservative estimate, an upper bound in expectation on the NLL of the
          sampler :meth:`generate` runs with ``k = K`` candidates (quote this one);
        * ``nll_is``: the importance-sampling estimate of the ideal (``K -> infinity``) model's
          bound, optimistic at finite ``K`` in practice;
        * ``log_z_bias``: the delta-method size of ``nll_is``'s optimistic ``log Z`` bias,
          summed over steps;
        * ``ess``: mean effective sample size of the ``log Z`` weights.

        ``batch_size`` sequences are processed at once, fewer when ``batch_size * K`` exceeds
        65,536 candidate sequences (memory)."""
        x0 = self.diffusion.check_tokens(x0, allow_mask=False).to(self.energy_offset.device)
        sizes = reveal_schedule(self.seq_len, steps)
        if num_samples < 1 or batch_size < 1:
            raise InvalidDataError(f"num_samples and batch_size must be positive, got "
                                   f"{num_samples} and {batch_size}")
        if orders is None:
            orders = self._orders(x0.shape[0], generator, x0.device)
        orders = torch.as_tensor(orders, device=x0.device, dtype=torch.long)
        if orders.shape != x0.shape or not torch.equal(
                orders.sort(1).values, torch.arange(self.seq_len, device=x0.device).expand_as(x0)):
            raise InvalidDataError(
                f"orders must hold one permutation of 0..{self.seq_len - 1} per sequence, shape "
                f"{tuple(x0.shape)}")
        bs = max(1, min(int(batch_size), 65536 // num_samples))
        outs = [self._nll_bound_batch(x0[i:i + bs], orders[i:i + bs], sizes,
                                      num_samples, generator, use_energy)
                for i in range(0, x0.shape[0], bs)]
        return {key: torch.cat([o[key] for o in outs]) for key in outs[0]}

    def _nll_bound_batch(self, x0, order, sizes, K, generator, use_energy):
        mask = self.diffusion.mask_id
        rank = order.argsort(1)  # rank[b, i]: when position i is revealed
        nll = torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device)
        nll_is = torch.zeros_like(nll)
        bias = torch.zeros_like(nll)
        ess_sum = torch.zeros_like(nll)
        energy = self.energy if use_energy else (lambda x: x.new_zeros(x.shape[:-1],
                                                                       dtype=torch.float32))
        start = 0
        for size in sizes:
            revealed = rank < start
            block = (rank >= start) & (rank < start + size)
            rest = ~revealed & ~block
            xt = torch.where(revealed, x0, torch.full_like(x0, mask))
            logp = self.diffusion.log_probs(xt).double()
            log_mu_block = (logp.gather(-1, x0[..., None])[..., 0] * block).sum(1)
            z = _sample_categorical(logp, K, generator).transpose(0, 1)  # (B, K, L)
            y = torch.where(rest[:, None, :], z, x0[:, None, :])
            log_wy = -energy(y).double()   # log w(y^m)
            log_wz = -energy(z).double()   # log w(z^j)
            log_k = math.log(K)
            log_z = torch.logsumexp(log_wz, 1) - log_k
            nll_is -= log_mu_block + torch.logsumexp(log_wy, 1) - log_k - log_z
            # SIR: y^m competes with the other K - 1 candidates z^j, j != m
            log_den = torch.logaddexp(_logsumexp_leave_one_out(log_wz), log_wy) - log_k
            nll -= log_mu_block + torch.logsumexp(log_wy - log_den, 1) - log_k
            w = torch.softmax(log_wz, 1)
            ess = 1.0 / (w * w).sum(1)
            # Var(w) / (2 K mean(w)^2) with w normalised to mean 1: (K / ess - 1) / (2 K)
            bias += (K / ess - 1.0) / (2 * K)
            ess_sum += ess
            start += size
        return {"nll": nll, "nll_is": nll_is, "log_z_bias": bias, "ess": ess_sum / len(sizes)}

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """The energy ``E_QBM(x0)`` (``forward`` never samples)."""
        return self.energy(x0)


# --- training loops --------------------------------------------------------------------------------


def _bar(progress: Any, total: int, desc: str, initial: int = 0):
    if progress is True:
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=min(initial, total), desc=desc, unit="step")
    return progress or None


def _resume(state: Any, kind: str, g: torch.Generator, optimizers: dict, **expected: Any):
    """Restore a step loop from ``state`` (:func:`fit_diffusion`, :func:`fit_energy`): returns
    ``(steps done, seconds so far, history, running sums)``."""
    from .training import _check_state

    _check_state(state, kind, **expected)
    g.set_state(state["generator"])
    for name, opt in optimizers.items():
        opt.load_state_dict(state[name])
    return (int(state["step"]), float(state["seconds"]), [dict(r) for r in state["history"]],
            [float(v) for v in state["sums"]])


def _stop_here(stop, on_checkpoint, snapshot, step: int, steps: int, what: str) -> None:
    from .errors import TrainingInterrupted

    if stop is not None and stop():
        if on_checkpoint is not None:
            on_checkpoint(snapshot(step))
        raise TrainingInterrupted(f"stopped after step {step} of {steps} ({what})", epoch=step)


def fit_diffusion(model: QDiffusion | MaskedDiffusion, corpus: TextCorpus, *, steps: int = 2000,
                  batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                  progress: Any = False, log_every: int = 100,
                  callback: Callable[[int, float], None] | None = None,
                  state: dict | None = None, on_checkpoint: Callable[[dict], None] | None = None,
                  stop: Callable[[], bool] | None = None) -> list[dict]:
    """Train the proposal with :func:`diffusion_loss` (AdamW, cosine learning-rate decay) on
    random training windows; returns ``{"step", "loss", "seconds"}`` every ``log_every`` steps.

    ``state``, ``on_checkpoint`` (called at every logged step), ``stop`` (polled before every
    step): stop and resume with the results of an uninterrupted run, as in
    :func:`kpp_sdk.models.qgan.fit_qgan`."""
    net = model.diffusion if isinstance(model, QDiffusion) else model
    if steps < 0 or batch_size < 1:
        raise InvalidDataError(f"steps must be >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    if corpus.tokenizer.vocab_size != net.vocab_size:
        raise InvalidDataError(
            f"the corpus has {corpus.tokenizer.vocab_size} symbols but the model "
            f"{net.vocab_size}; build the model with vocab_size=corpus.tokenizer.vocab_size")
    g = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1))))
    expected = {"steps": steps, "batch_size": batch_size, "log_every": log_every}
    done, elapsed, history, (run,) = 0, 0.0, [], [0.0]
    if state is not None:
        done, elapsed, history, (run,) = _resume(state, "diffusion", g,
                                                 {"optimizer": opt, "scheduler": sched},
                                                 **expected)
    t0 = time.perf_counter() - elapsed

    def snapshot(step: int) -> dict:
        return {"kind": "diffusion", **expected, "step": step,
                "seconds": time.perf_counter() - t0, "generator": g.get_state(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "history": [dict(r) for r in history], "sums": [run]}

    bar = _bar(progress, steps, "diffusion", done)
    dev = net.out.weight.device
    for step in range(done + 1, steps + 1):
        _stop_here(stop, on_checkpoint, snapshot, step - 1, steps, "diffusion")
        x0 = corpus.windows("train", net.seq_len, batch_size, g).to(dev)
        loss = diffusion_loss(net, x0, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        run += float(loss.detach())
        if bar is not None:
            bar.update(1)
        if step % log_every == 0 or step == steps:
            n = step % log_every or log_every
            history.append({"step": step, "loss": run / n, "seconds": time.perf_counter() - t0})
            if bar is not None and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{run / n:.3f}")
            if callback is not None:
                callback(step, run / n)
            run = 0.0
            if on_checkpoint is not None:
                on_checkpoint(snapshot(step))
    if bar is not None and progress is True:
        bar.close()
    return history


def fit_energy(model: QDiffusion, corpus: TextCorpus, *, steps: int = 1000, batch_size: int = 128,
               lr: float = 3e-3, weight_decay: float = 1e-4, mask_steps: int = 4, seed: int = 0,
               progress: Any = False, log_every: int = 100, state: dict | None = None,
               on_checkpoint: Callable[[dict], None] | None = None,
               stop: Callable[[], bool] | None = None) -> list[dict]:
    """Train ``E_QBM`` by NCE (:func:`nce_loss`) with the proposal frozen: positives are training
    windows; each is masked at a level of the ``mask_steps``-step sampler (the number of still
    masked positions before one of its steps, chosen uniformly) and denoised by the proposal to
    give its negative. Adam on the energy's parameters; returns ``{"step", "loss", "accuracy",
    "seconds"}`` (accuracy: the logistic classifier's, 0.5 = chance).

    ``state``, ``on_checkpoint``, ``stop``: as in :func:`fit_diffusion`."""
    if steps < 0 or batch_size < 1:
        raise InvalidDataError(f"steps must be >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    sizes = reveal_schedule(model.seq_len, mask_steps)
    levels = torch.tensor([model.seq_len - sum(sizes[:k]) for k in range(len(sizes))])
    g = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters_energy(), lr=lr, weight_decay=weight_decay)
    expected = {"batch_size": batch_size, "log_every": log_every, "mask_steps": mask_steps}
    done, elapsed, history, (run, acc) = 0, 0.0, [], [0.0, 0.0]
    if state is not None:
        done, elapsed, history, (run, acc) = _resume(state, "energy", g, {"optimizer": opt},
                                                     **expected)
    t0 = time.perf_counter() - elapsed

    def snapshot(step: int) -> dict:
        return {"kind": "energy", **expected, "step": step, "seconds": time.perf_counter() - t0,
                "generator": g.get_state(), "optimizer": opt.state_dict(),
                "history": [dict(r) for r in history], "sums": [run, acc]}

    bar = _bar(progress, steps, "energy (NCE)", done)
    dev = model.energy_offset.device
    for step in range(done + 1, steps + 1):
        _stop_here(stop, on_checkpoint, snapshot, step - 1, steps, "energy")
        x0 = corpus.windows("train", model.seq_len, batch_size, g).to(dev)
        m = levels[torch.randint(0, len(levels), (batch_size,), generator=g)].to(dev)
        with torch.no_grad():
            xt = _mask_random(x0, m, model.diffusion.mask_id, g)
            neg = _sample_categorical(model.diffusion.log_probs(xt), 1, g)[0]
        e_pos, e_neg = model.energy(x0), model.energy(neg)
        loss = nce_loss(e_pos, e_neg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run += float(loss.detach())
        acc += 0.5 * float(((e_pos < 0).float().mean() + (e_neg > 0).float().mean()).detach())
        if bar is not None:
            bar.update(1)
        if step % log_every == 0 or step == steps:
            n = step % log_every or log_every
            history.append({"step": step, "loss": run / n, "accuracy": acc / n,
                            "seconds": time.perf_counter() - t0})
            if bar is not None and hasattr(bar, "set_postfix"):
                bar.set_postfix(nce=f"{run / n:.3f}", acc=f"{acc / n:.3f}")
            run, acc = 0.0, 0.0
            if on_checkpoint is not None:
                on_checkpoint(snapshot(step))
    if bar is not None and progress is True:
        bar.close()
    return history
