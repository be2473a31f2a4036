"""Energy-guided masked diffusion over token sequences, with any proposal network and any energy
model (the interface of kaiwu-torch-plugin 0.3.0's ``QDiffusion``; :mod:`kpp_sdk.models.
kaiwu_compat` re-exports it under the plugin's names, and :mod:`kpp_sdk.models.qdiffusion` is
the SDK's own self-contained text model).

Training (:meth:`EnergyGuidedDiffusion.objective`): a clean sequence ``x0`` is corrupted by
masking each editable token with probability ``t / T`` (``t`` uniform in ``1..T``); the proposal
network's logits at the noisy sequence give negative reconstructions, and the energy model is
trained by noise contrast, ``softplus(E(x_t, x0)) + softplus(-E(x_t, x_neg))``. The proposal's
own cross-entropy is left to the caller (the dict has its logits, targets and mask).

Generation (:meth:`~EnergyGuidedDiffusion.generate`): start from every editable token masked;
each step the proposal fills the sequence ``num_candidates`` times, the energy model picks one
candidate per sequence (``softmax(-E / energy_temperature)``), and the least confident tokens
are masked again so that a fraction ``rate(t)`` of the editable tokens stays masked (``linear``:
``1 - t/T``, ``cosine``: ``cos(pi t / 2T)``), down to none at the last step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EnergyGuidedDiffusion", "EnergyModel", "GuidedDiffusionConfig", "SequenceTokenSpec"]


@dataclass(frozen=True)
class SequenceTokenSpec:
    """Special tokens: ``mask_id`` (the noise), ``pad_id``, ``bos_id``, ``eos_id`` (never
    edited), ``x_id`` (never proposed, optional) and an optional tokenizer."""

    mask_id: int
    pad_id: int
    bos_id: int
    eos_id: int
    x_id: int | None = None
    tokenizer: Any | None = None


@dataclass
class GuidedDiffusionConfig:
    """Training and decoding settings (module docstring).

    ``decoding_strategy`` is ``"reparam-<cond|uncond>-<deterministic|stochastic<s>>-
    <linear|cosine>"``: ``uncond`` re-masks the least confident editable tokens each step, ``cond``
    only those whose token did not change and whose confidence fell; ``stochastic<s>`` adds
    Gumbel noise of scale ``s * rate`` to the confidences before ranking."""

    num_diffusion_timesteps: int = 500
    use_coupled_sampling: bool = False
    num_candidates: int = 1
    proposal_temperature: float = 0.0
    proposal_noise_scale: float = 1.0
    energy_temperature: float = 1.0
    disable_resample: bool = False
    resample_ratio: float = 0.25
    resample_top_p: float = 0.95
    decoding_strategy: str = "reparam-uncond-deterministic-linear"

    def __post_init__(self):
        if int(self.num_diffusion_timesteps) < 1 or int(self.num_candidates) < 1:
            raise ValueError("num_diffusion_timesteps and num_candidates must be >= 1")
        if not self.energy_temperature > 0:
            raise ValueError(f"energy_temperature must be > 0, got {self.energy_temperature}")
        parse_strategy(self.decoding_strategy)


def parse_strategy(strategy: str) -> tuple[str, float | None, str]:
    """``(condition, noise_scale or None, schedule)`` of a decoding strategy string."""
    parts = str(strategy).split("-")
    if len(parts) != 4 or parts[0] != "reparam" or parts[1] not in ("cond", "uncond") \
            or parts[3] not in ("linear", "cosine"):
        raise ValueError(f"decoding_strategy must look like 'reparam-uncond-deterministic-linear',"
                         f" got {strategy!r}")
    mode = parts[2]
    if mode == "deterministic":
        return parts[1], None, parts[3]
    if mode.startswith("stochastic"):
        try:
            return parts[1], float(mode[len("stochastic"):]), parts[3]
        except ValueError:
            pass
    raise ValueError(f"the third part of decoding_strategy is 'deterministic' or "
                     f"'stochastic<scale>', got {mode!r}")


class EnergyModel(nn.Module):
    """Scores candidate sequences given the noisy one: subclasses implement
    :meth:`score_conditioned` (``[batch, 1]`` energies, lower is better).

    With ``bm_num_visible``, ``bm_num_hidden`` and a ``sampler`` it also carries a Boltzmann
    machine (``energy_bm``) whose visible units are conditioned on features of a candidate:
    :meth:`score_visible_logits` maps logits to visible probabilities, samples the hidden units
    given them (``sampler``: a Kaiwu optimizer, a kpp Device or sampler) and returns the mean
    energy per row.
    """

    def __init__(self, bm_num_visible: int | None = None, bm_num_hidden: int | None = None,
                 sampler: Any | None = None) -> None:
        super().__init__()
        self.bm_num_visible = bm_num_visible
        self.bm_num_hidden = bm_num_hidden
        self.sampler = sampler
        self._last_stats: dict[str, torch.Tensor] = {}
        if bm_num_visible is not None and bm_num_hidden is not None:
            from .bm import BoltzmannMachine

            self.energy_bm = BoltzmannMachine(int(bm_num_visible) + int(bm_num_hidden))

    def forward(self, noisy_tokens, candidate_tokens, attention_mask):
        return self.score_conditioned(noisy_tokens=noisy_tokens,
                                      candidate_tokens=candidate_tokens,
                                      attention_mask=attention_mask)

    def score_conditioned(self, noisy_tokens: torch.Tensor, candidate_tokens: torch.Tensor,
                          attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement score_conditioned()")

    def discretize_visible_state(self, visible_logits: torch.Tensor) -> torch.Tensor:
        """Visible conditions ``sigmoid(logits)`` (differentiable)."""
        return torch.sigmoid(visible_logits)

    def sample_hidden_state(self, visible_state: torch.Tensor):
        """``(states, split_sizes)``: hidden samples given each row of ``visible_state`` (full
        states, rows of one input together) and how many rows each input got."""
        if not hasattr(self, "energy_bm") or self.sampler is None:
            raise RuntimeError("hidden-state sampling needs bm_num_visible, bm_num_hidden and a "
                               "sampler")
        parts = [self.energy_bm.condition_sample(self.sampler, visible_state[i:i + 1],
                                                 dtype=visible_state.dtype)
                 for i in range(visible_state.shape[0])]
        sizes = torch.tensor([p.shape[0] for p in parts], device=visible_state.device)
        return torch.cat(parts), sizes

    def get_last_stats(self) -> dict[str, torch.Tensor]:
        """``sampling_mode``, ``visible_on_ratio``, ``hidden_on_ratio`` of the last scoring."""
        return dict(self._last_stats)

    def score_visible_logits(self, visible_logits: torch.Tensor) -> torch.Tensor:
        """Mean BM energy per row, ``[batch, 1]``."""
        if self.bm_num_visible is None:
            raise RuntimeError("score_visible_logits needs bm_num_visible")
        visible = self.discretize_visible_state(visible_logits)
        states, sizes = self.sample_hidden_state(visible)
        V = int(self.bm_num_visible)
        self._last_stats = {
            "sampling_mode": torch.tensor(1.0, dtype=visible.dtype, device=visible.device),
            "visible_on_ratio": states[:, :V].detach().mean(),
            "hidden_on_ratio": states[:, V:].detach().mean(),
        }
        energies = self.energy_bm(states).unsqueeze(-1)
        return torch.stack([e.mean(dim=0) for e in torch.split(energies, sizes.tolist())])


def _gumbel_like(x: torch.Tensor) -> torch.Tensor:
    u = torch.rand_like(x).clamp_(1e-10, 1 - 1e-10)
    return -torch.log(-torch.log(u))


class EnergyGuidedDiffusion(nn.Module):
    """A proposal network and an :class:`EnergyModel` (module docstring).

    Parameters
    ----------
    proposal_model : nn.Module
        ``proposal_model(tokens) -> logits [batch, length, vocab]``.
    energy_model : EnergyModel
    token_spec : SequenceTokenSpec
    config : GuidedDiffusionConfig, optional
    dtype, device : optional
        Move the modules there (default: where the parameters are).
    freeze_proposal : bool, default True
        Put the proposal in eval mode and stop its gradients.
    """

    config_class = GuidedDiffusionConfig

    def __init__(self, proposal_model: nn.Module, energy_model: EnergyModel,
                 token_spec: SequenceTokenSpec, config: GuidedDiffusionConfig | None = None,
                 dtype: torch.dtype = torch.float32, device: Any = None,
                 freeze_proposal: bool = True) -> None:
        super().__init__()
        self.proposal_model = proposal_model
        self.energy_model = energy_model
        self.token_spec = token_spec
        self.config = config or self.config_class()
        self.dtype = dtype
        if freeze_proposal:
            proposal_model.eval()
            for p in proposal_model.parameters():
                p.requires_grad = False
        self.tokenizer = token_spec.tokenizer
        self.mask_id, self.pad_id = token_spec.mask_id, token_spec.pad_id
        self.bos_id, self.eos_id, self.x_id = token_spec.bos_id, token_spec.eos_id, token_spec.x_id
        if device is None:
            first = next(self.parameters(), None)
            self.device = first.device if first is not None else torch.device("cpu")
        else:
            self.device = torch.device(device)
            self.to(device=self.device, dtype=self.dtype)

    def to(self, *args: Any, **kwargs: Any):
        out = super().to(*args, **kwargs)
        first = next(self.parameters(), None)
        if first is not None:
            self.device, self.dtype = first.device, first.dtype
        return out

    # --- the two models -----------------------------------------------------------------------

    def forward(self, noisy_tokens: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The proposal's logits at ``noisy_tokens``."""
        return self.proposal_model(noisy_tokens, **kwargs)

    def proposal(self, noisy_tokens: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.forward(noisy_tokens, **kwargs)

    def energy(self, noisy_tokens: torch.Tensor, candidate_tokens: torch.Tensor,
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[batch, 1]`` energies of ``candidate_tokens`` given ``noisy_tokens``."""
        if attention_mask is None:
            attention_mask = candidate_tokens.ne(self.pad_id)
        return self.energy_model.score_conditioned(noisy_tokens=noisy_tokens,
                                                   candidate_tokens=candidate_tokens,
                                                   attention_mask=attention_mask)

    # --- token bookkeeping --------------------------------------------------------------------

    def get_non_special_symbol_mask(self, output_tokens: torch.Tensor,
                                    partial_masks: torch.Tensor | None = None) -> torch.Tensor:
        """True where a token may be edited: not pad/bos/eos and not fixed by ``partial_masks``."""
        editable = (output_tokens.ne(self.pad_id) & output_tokens.ne(self.bos_id)
                    & output_tokens.ne(self.eos_id))
        if partial_masks is not None:
            editable &= ~partial_masks
        return editable

    def _mask_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Special tokens are never proposed."""
        logits = logits.clone()
        banned = [self.mask_id, self.pad_id, self.bos_id, self.eos_id]
        if self.x_id is not None:
            banned.append(self.x_id)
        logits[..., banned] = -math.inf
        return logits

    def _sample_candidates(self, logits: torch.Tensor, k: int):
        """``(tokens, scores)`` of shape ``[batch, k, length]``: greedy at
        ``proposal_temperature == 0``, else Gumbel-max draws at that temperature (noise scaled
        by ``proposal_noise_scale``); scores are the tokens' log-probabilities."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        expanded = logp.unsqueeze(1).expand(-1, k, -1, -1)
        cfg = self.config
        if cfg.proposal_temperature > 0:
            noisy = expanded / cfg.proposal_temperature + cfg.proposal_noise_scale * _gumbel_like(
                expanded)
            tokens = noisy.argmax(dim=-1)
        else:
            tokens = expanded.argmax(dim=-1)
        return tokens, expanded.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    def _score_candidates(self, noisy_tokens: torch.Tensor, candidates: torch.Tensor):
        """Energies ``[batch, k]`` of ``[batch, k, length]`` candidates."""
        B, k, L = candidates.shape
        flat_noisy = noisy_tokens.unsqueeze(1).expand(-1, k, -1).reshape(B * k, L)
        flat = candidates.reshape(B * k, L)
        return self.energy(flat_noisy, flat, flat.ne(self.pad_id)).view(B, k)

    def _energy_stats(self) -> dict:
        get = getattr(self.energy_model, "get_last_stats", None)
        return get() if callable(get) else {}

    # --- training -------------------------------------------------------------------------------

    def _corrupt(self, x0: torch.Tensor, t: torch.Tensor, maskable: torch.Tensor):
        T = self.config.num_diffusion_timesteps
        mask = (torch.rand(x0.shape, device=x0.device) < (t.float() / T)[:, None]) & maskable
        return x0.masked_fill(mask, self.mask_id), mask

    def objective(self, batch: dict, weighting: str = "constant") -> dict:
        """One training step's terms (module docstring): ``logits`` (the proposal's, detached),
        ``targets``, ``loss_mask`` (masked positions), ``weight`` ``[batch, 1]``
        (``"constant"`` or ``"linear"`` in ``t``), ``energy_objective`` ``[batch, 1]`` and the
        energy means and energy-model statistics."""
        if weighting not in ("constant", "linear"):
            raise ValueError(f"weighting must be 'constant' or 'linear', got {weighting!r}")
        x0 = batch["targets"]
        T = self.config.num_diffusion_timesteps
        t = torch.randint(1, T + 1, (x0.shape[0],), device=x0.device)
        maskable = self.get_non_special_symbol_mask(x0)
        noisy, mask = self._corrupt(x0, t, maskable)
        if self.config.use_coupled_sampling:
            # a second, less corrupted copy whose masked set lies inside the first one's
            t2 = torch.randint(1, T + 1, (x0.shape[0],), device=x0.device)
            hi, lo = torch.maximum(t, t2), torch.minimum(t, t2)
            noisy, mask = self._corrupt(x0, hi, maskable)
            keep = torch.rand(x0.shape, device=x0.device) < (lo.float() / hi.float())[:, None]
            mask2 = mask & keep
            noisy = torch.cat([noisy, x0.masked_fill(mask2, self.mask_id)])
            mask, t, x0 = torch.cat([mask, mask2]), torch.cat([hi, lo]), x0.repeat(2, 1)
        with torch.no_grad():
            logits = self.forward(noisy).detach()
        cand, _ = self._sample_candidates(self._mask_logits(logits), self.config.num_candidates)
        negatives = torch.where(mask.unsqueeze(1), cand, noisy.unsqueeze(1))
        pos = self.energy(noisy, x0, x0.ne(self.pad_id))
        pos_stats = self._energy_stats()
        neg = self._score_candidates(noisy, negatives).mean(dim=1, keepdim=True)
        neg_stats = self._energy_stats()
        weight = (torch.ones_like(t, dtype=torch.float) if weighting == "constant"
                  else (T - t + 1).float() / T)[:, None]
        out = {"logits": logits, "targets": x0, "loss_mask": mask, "weight": weight,
               "energy_objective": F.softplus(pos) + F.softplus(-neg),
               "positive_energy_mean": pos.mean().detach(),
               "negative_energy_mean": neg.mean().detach()}
        for prefix, stats in (("positive", pos_stats), ("negative", neg_stats)):
            out.update({f"{prefix}_{k}": v.detach() for k, v in stats.items()})
        return out

    # --- generation -----------------------------------------------------------------------------

    def initialize_state(self, input_tokens: torch.Tensor, partial_masks=None,
                         max_steps: int = 500, temperature: float = 1.0) -> dict:
        """The decoding state: every editable token masked, scores zero."""
        editable = self.get_non_special_symbol_mask(input_tokens, partial_masks)
        tokens = input_tokens.masked_fill(editable, self.mask_id)
        return {"output_tokens": tokens, "output_scores": torch.zeros_like(tokens, dtype=torch.float),
                "output_masks": editable.clone(), "step": 0, "max_steps": int(max_steps),
                "history": [tokens.clone()], "temperature": temperature,
                "partial_masks": partial_masks}

    def _resample_repeats(self, tokens: torch.Tensor, scores: torch.Tensor) -> None:
        """Tokens that fill more than ``resample_ratio`` of a sequence are masked and drawn again
        from the proposal's top-p set (in place)."""
        L = tokens.shape[1]
        counts = torch.zeros(tokens.shape[0], int(tokens.max()) + 1, device=tokens.device)
        counts.scatter_add_(1, tokens, torch.ones_like(tokens, dtype=torch.float))
        over = counts > L * self.config.resample_ratio
        repeat = over.gather(1, tokens)
        rows = repeat.any(dim=1)
        if not rows.any():
            return
        x = tokens[rows].masked_fill(repeat[rows], self.mask_id)
        logits = self._mask_logits(self.forward(x)).float()
        probs = torch.softmax(logits, dim=-1)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = (sorted_p.cumsum(-1) - sorted_p) > self.config.resample_top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        new_sorted = torch.multinomial(sorted_p.view(-1, sorted_p.shape[-1]), 1).view(x.shape)
        new = order.gather(-1, new_sorted.unsqueeze(-1)).squeeze(-1)
        new_scores = torch.log(probs.gather(-1, new.unsqueeze(-1)).squeeze(-1))
        x = torch.where(repeat[rows], new, tokens[rows])
        tokens[rows] = x
        scores[rows] = torch.where(repeat[rows], new_scores, scores[rows])

    def step(self, state: dict, partial_masks=None) -> dict:
        """One denoising step (module docstring); returns the new state."""
        partial_masks = partial_masks if partial_masks is not None else state.get("partial_masks")
        tokens, scores = state["output_tokens"], state["output_scores"]
        still_masked = state["output_masks"]
        editable = self.get_non_special_symbol_mask(tokens, partial_masks)
        logits = self._mask_logits(self.forward(tokens)).to(scores.dtype)
        cand, cand_scores = self._sample_candidates(logits, self.config.num_candidates)
        energies = self._score_candidates(tokens, cand)
        weights = torch.softmax(-energies / self.config.energy_temperature, dim=-1)
        pick = torch.multinomial(weights, 1).squeeze(-1)
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        step_tokens, step_scores = cand[rows, pick].clone(), cand_scores[rows, pick].clone()
        if not self.config.disable_resample:
            self._resample_repeats(step_tokens, step_scores)
        step_tokens = torch.where(editable, step_tokens, tokens)
        masks, new_tokens, new_scores = self._remask(tokens, scores, step_tokens, step_scores,
                                                     still_masked, editable, state["step"] + 1,
                                                     state["max_steps"])
        new = dict(state)
        new.update(output_tokens=new_tokens, output_scores=new_scores, output_masks=masks,
                   step=state["step"] + 1, history=state["history"] + [new_tokens.clone()],
                   partial_masks=partial_masks)
        return new

    def _remask(self, tokens, scores, step_tokens, step_scores, still_masked, editable, t, T):
        condition, noise, schedule = parse_strategy(self.config.decoding_strategy)
        rate = 1 - t / T if schedule == "linear" else math.cos(math.pi * t / (2 * T))
        rate = max(rate, 0.0)
        keep_masked_count = (editable.sum(1, keepdim=True).float() * rate).long()
        rank_by = step_scores.masked_fill(~editable, math.inf)
        if noise is not None and rate > 0:
            rank_by = rank_by + noise * rate * _gumbel_like(rank_by)
        order = rank_by.argsort(dim=1)
        lowest = torch.zeros_like(editable)
        lowest.scatter_(1, order, torch.arange(tokens.shape[1], device=tokens.device)
                        .expand_as(order) < keep_masked_count)
        lowest &= editable
        if condition == "cond":
            remask_decoded = (step_tokens == tokens) & (step_scores < scores) & lowest
        else:
            remask_decoded = lowest
        to_noise = (~still_masked & remask_decoded) | (still_masked & lowest)
        newly = still_masked & ~lowest
        out_tokens = torch.where(newly, step_tokens, tokens).masked_fill(to_noise, self.mask_id)
        out_scores = torch.where(newly, step_scores, scores).masked_fill(to_noise, -math.inf)
        return (still_masked | remask_decoded) & lowest, out_tokens, out_scores

    def generate(self, input_tokens: torch.Tensor, *, max_steps: int = 500,
                 partial_masks: torch.Tensor | None = None, temperature: float = 1.0,
                 return_state: bool = False):
        """``max_steps`` steps from fully masked; the tokens (or the whole state)."""
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        state = self.initialize_state(input_tokens, partial_masks, max_steps, temperature)
        with torch.no_grad():
            for _ in range(int(max_steps)):
                state = self.step(state, partial_masks)
        return state if return_state else state["output_tokens"]
