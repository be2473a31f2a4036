"""Bad input is rejected before any work, naming the problem and the fix; checkpoints round
trip and refuse another model's shape."""

import math

import numpy as np
import pytest
import torch
from kpp_sdk.models import (
    BoltzmannMachine,
    CheckpointError,
    DeepBeliefNetwork,
    GaussianBernoulliRBM,
    InvalidDataError,
    RestrictedBoltzmannMachine,
    fit,
    fit_dbn,
    load_checkpoint,
    save_checkpoint,
)
from kpp_sdk.models.samplers import BoltzmannSampler, ModelSampler

from kpp_sdk import Device, DeviceProperties, KppError, ProblemTooLargeError, RunResult


class CountingSampler(ModelSampler):
    """Counts every phase it is asked for: proves that checks come before any training."""

    def __init__(self):
        super().__init__(seed=0)
        self.calls = 0

    def positive(self, model, visible):
        self.calls += 1
        return super().positive(model, visible)

    def negative(self, model, visible=None):
        self.calls += 1
        return model.random_states(4)


class SmallDevice(Device):
    """A device with room for 20 spins that counts its jobs."""

    name = "test.small"
    OPTIONS: dict = {}

    def __init__(self, **kw):
        self.jobs = 0
        super().__init__(**kw)

    @property
    def properties(self):
        return DeviceProperties(max_spins=20)

    def _run(self, problem, *, num_reads, seed, options, ctx):
        self.jobs += 1
        return RunResult(spins=np.ones((num_reads, problem.n), dtype=np.int8))


@pytest.mark.parametrize("bad, match", [
    (np.array([[0, 1, 2, 0]], dtype=float), r"data\[0, 2\] = 2.0 .* \{0, 1\}"),
    (np.array([[0, 1, 0, 0], [0, -1, 1, 1]], dtype=float), r"data\[1, 1\] = -1.0"),
    (np.array([[0, 1, np.nan, 0]]), r"data\[0, 2\] = nan"),
    (np.array([[0.5, 1, 0, 0]]), r"binarise"),
    (np.zeros((3, 5)), r"shape \(batch, 4\)"),
])
def test_data_outside_0_1_or_of_the_wrong_width_is_rejected_before_training(bad, match):
    model = RestrictedBoltzmannMachine(4, 3)
    sampler = CountingSampler()
    with pytest.raises(InvalidDataError, match=match):
        fit(model, bad, sampler, epochs=1)
    assert sampler.calls == 0
    assert issubclass(InvalidDataError, KppError) and issubclass(InvalidDataError, ValueError)


def test_gaussian_visible_units_accept_real_data_but_not_infinities():
    model = GaussianBernoulliRBM(3, 2)
    assert model.check_visible(np.array([[0.3, -2.0, 7.5]])).shape == (1, 3)
    with pytest.raises(InvalidDataError, match="not finite"):
        model.check_visible(np.array([[0.3, np.inf, 7.5]]))


@pytest.mark.parametrize("model", [
    RestrictedBoltzmannMachine(16, 8),
    BoltzmannMachine(10, 12),
], ids=["rbm 24 spins", "bm 22 spins"])
def test_a_device_too_small_for_the_model_fails_before_any_job(model):
    dev = SmallDevice()
    data = np.zeros((4, model.num_visible))
    with pytest.raises(ProblemTooLargeError,
                       match=r"needs \d+ spins but test.small takes at most 20"):
        fit(model, data, BoltzmannSampler(dev, num_reads=2), epochs=1)
    assert dev.jobs == 0


def test_a_dbn_checks_every_layer_against_the_device_before_training_the_first():
    dev = SmallDevice()
    dbn = DeepBeliefNetwork([6, 8, 16])  # layer 1: 14 spins fits; layer 2: 24 does not
    with pytest.raises(ProblemTooLargeError, match="24 spins"):
        fit_dbn(dbn, np.zeros((4, 6)), BoltzmannSampler(dev, num_reads=2), epochs=1)
    assert dev.jobs == 0


@pytest.mark.parametrize("make", [
    lambda: RestrictedBoltzmannMachine(5, 3, generator=torch.Generator().manual_seed(1)),
    lambda: BoltzmannMachine(4, 2, generator=torch.Generator().manual_seed(2)),
    lambda: GaussianBernoulliRBM(3, 2, generator=torch.Generator().manual_seed(3)),
    lambda: DeepBeliefNetwork([6, 4, 3], generator=torch.Generator().manual_seed(4)),
], ids=["rbm", "bm", "gbrbm", "dbn"])
def test_checkpoint_round_trip_restores_class_shape_and_every_weight(tmp_path, make):
    model = make()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
    path = save_checkpoint(tmp_path / "m.pt", model, extra={"epochs": 3})
    rebuilt, extra = load_checkpoint(path)
    assert type(rebuilt) is type(model) and extra == {"epochs": 3}
    for (k, a), (k2, b) in zip(model.state_dict().items(), rebuilt.state_dict().items(),
                               strict=True):
        assert k == k2 and torch.equal(a, b)
    into = make()
    load_checkpoint(path, into)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                   into.state_dict().values(), strict=True))


def test_loading_a_checkpoint_of_another_shape_names_both_shapes(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", RestrictedBoltzmannMachine(64, 64))
    other = RestrictedBoltzmannMachine(64, 32)
    before = other.quadratic_coef.detach().clone()
    with pytest.raises(CheckpointError, match=r"quadratic_coef has shape \(64, 64\) in the "
                                              r"checkpoint and \(64, 32\) in the model"):
        load_checkpoint(path, other)
    assert torch.equal(other.quadratic_coef, before)
    with pytest.raises(CheckpointError, match="holds a RestrictedBoltzmannMachine.* but the model "
                                              "is a BoltzmannMachine"):
        load_checkpoint(path, BoltzmannMachine(64, 64))


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable kpp model checkpoint"):
        load_checkpoint(junk)
    torch.save({"some": "dict"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a kpp model checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_constructors_reject_impossible_shapes():
    with pytest.raises(InvalidDataError):
        RestrictedBoltzmannMachine(0, 3)
    with pytest.raises(InvalidDataError, match=r"quadratic_coef must be \(3, 2\)"):
        RestrictedBoltzmannMachine(3, 2, torch.zeros(2, 3))
    with pytest.raises(InvalidDataError, match="at least two"):
        DeepBeliefNetwork([5])
    with pytest.raises(InvalidDataError, match="init_var"):
        GaussianBernoulliRBM(2, 2, init_var=-1.0)
    assert math.isfinite(float(BoltzmannMachine(3).energy(torch.ones(1, 3)).detach()))
