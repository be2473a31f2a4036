"""Energy-guided masked diffusion (the plugin's QDiffusion interface): the schedule, the special
tokens, the energy's say in generation and the training terms."""

import math

import pytest
import torch
from kpp_sdk.models.guided_diffusion import (
    EnergyGuidedDiffusion,
    EnergyModel,
    GuidedDiffusionConfig,
    SequenceTokenSpec,
)
from torch import nn

PAD, BOS, EOS, MASK = 0, 1, 2, 3
V = 10
SPEC = SequenceTokenSpec(mask_id=MASK, pad_id=PAD, bos_id=BOS, eos_id=EOS)


class Peaked(nn.Module):
    """Proposes `target[j]` at position j with confidence decreasing along the sequence."""

    def __init__(self, target):
        super().__init__()
        self.target = target
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, tokens, **kwargs):
        B, L = tokens.shape
        logits = torch.zeros(B, L, V)
        conf = torch.linspace(6.0, 1.0, L)
        logits[:, torch.arange(L), self.target[:L]] = conf
        return logits + 0 * self.w


class Uniform(nn.Module):
    def forward(self, tokens, **kwargs):
        return torch.zeros(*tokens.shape, V)


class CountEnergy(EnergyModel):
    """Energy = -weight * (number of `token` in the candidate)."""

    def __init__(self, token, weight):
        super().__init__()
        self.token, self.weight = token, weight
        self.calls = 0

    def score_conditioned(self, noisy_tokens, candidate_tokens, attention_mask):
        self.calls += 1
        return -self.weight * (candidate_tokens == self.token).float().sum(1, keepdim=True)


def _model(proposal, energy, **cfg):
    return EnergyGuidedDiffusion(proposal, energy, SPEC, GuidedDiffusionConfig(**cfg),
                                 freeze_proposal=False)


def test_generation_keeps_special_and_fixed_tokens_and_fills_the_rest():
    target = torch.tensor([1, 4, 5, 6, 7, 8, 2, 0])
    model = _model(Peaked(target), CountEnergy(4, 0.0), disable_resample=True)
    start = torch.tensor([[1, 9, 9, 9, 9, 9, 2, 0], [1, 9, 9, 9, 9, 9, 2, 0]])
    fixed = torch.zeros_like(start, dtype=torch.bool)
    fixed[1, 2] = True
    out = model.generate(start, max_steps=4, partial_masks=fixed)
    assert torch.equal(out[0], target)
    assert int(out[1, 2]) == 9 and torch.equal(out[1, [0, 1, 3, 4, 5, 6, 7]],
                                               target[[0, 1, 3, 4, 5, 6, 7]])


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_the_number_of_masked_tokens_follows_the_schedule(schedule):
    target = torch.tensor([1, 4, 5, 6, 7, 8, 9, 4, 5, 2])
    T = 5
    model = _model(Peaked(target), CountEnergy(4, 0.0), disable_resample=True,
                   decoding_strategy=f"reparam-uncond-deterministic-{schedule}")
    state = model.initialize_state(torch.full((1, 10), 9).index_put_(
        (torch.tensor([0, 0]), torch.tensor([0, 9])), torch.tensor([1, 2])), max_steps=T)
    editable = int(state["output_masks"].sum())
    assert editable == 8
    for t in range(1, T + 1):
        state = model.step(state)
        rate = 1 - t / T if schedule == "linear" else math.cos(math.pi * t / (2 * T))
        assert int((state["output_tokens"] == MASK).sum()) == int(editable * max(rate, 0))


def test_the_energy_steers_generation():
    torch.manual_seed(0)
    start = torch.tensor([[1] + [9] * 12 + [2]] * 16)
    counts = []
    for weight in (0.0, 5.0):
        energy = CountEnergy(4, weight)
        model = _model(Uniform(), energy, num_candidates=8, proposal_temperature=1.0,
                       disable_resample=True)
        out = model.generate(start, max_steps=3)
        counts.append(float((out == 4).float().mean()))
        assert energy.calls == 3
    assert counts[0] < 0.25 and counts[1] > 2 * counts[0]


def test_objective_terms():
    torch.manual_seed(1)
    target = torch.tensor([1, 4, 5, 6, 7, 8, 2, 0])
    energy = CountEnergy(4, 1.0)
    model = _model(Peaked(target), energy, num_diffusion_timesteps=4, num_candidates=3)
    batch = target.repeat(6, 1)
    out = model.objective({"targets": batch})
    noisy_masked = out["loss_mask"]
    assert noisy_masked.dtype == torch.bool and not noisy_masked[:, [0, 6, 7]].any()
    assert out["weight"].shape == (6, 1) and out["energy_objective"].shape == (6, 1)
    pos = -1.0 * (batch == 4).float().sum(1, keepdim=True)
    assert float(out["positive_energy_mean"]) == pytest.approx(float(pos.mean()))
    assert bool((out["energy_objective"] >= torch.nn.functional.softplus(pos)).all())
    assert energy.calls == 2
    lin = model.objective({"targets": batch}, weighting="linear")["weight"]
    assert float(lin.min()) >= 0.25 - 1e-9 and float(lin.max()) <= 1.0
    coupled = _model(Peaked(target), CountEnergy(4, 1.0), use_coupled_sampling=True)
    both = coupled.objective({"targets": batch})
    first, second = both["loss_mask"][:6], both["loss_mask"][6:]
    assert both["targets"].shape == (12, 8) and not (second & ~first).any()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="decoding_strategy"):
        GuidedDiffusionConfig(decoding_strategy="greedy")
    with pytest.raises(ValueError, match="energy_temperature"):
        GuidedDiffusionConfig(energy_temperature=0)
    with pytest.raises(ValueError, match="weighting"):
        _model(Uniform(), CountEnergy(4, 0.0)).objective({"targets": torch.ones(1, 3).long()},
                                                         weighting="cubic")


def test_energy_model_scores_visible_logits_with_a_boltzmann_machine_on_a_device():
    import kpp_sdk

    em = EnergyModel(bm_num_visible=3, bm_num_hidden=2,
                     sampler=kpp_sdk.get_device("sa.cpu", num_sweeps=20, num_threads=1))
    logits = torch.tensor([[3.0, -3.0, 0.0], [0.0, 1.0, -1.0]])
    e = em.score_visible_logits(logits)
    assert e.shape == (2, 1) and set(em.get_last_stats()) == {"sampling_mode",
                                                              "visible_on_ratio",
                                                              "hidden_on_ratio"}
    with pytest.raises(NotImplementedError):
        em(torch.ones(1, 2), torch.ones(1, 2), torch.ones(1, 2))
