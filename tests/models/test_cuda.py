"""Models on a CUDA torch device: device samples come back as CUDA tensors, evaluation runs
there, and results agree with the CPU."""

import pytest
import torch
from kpp_sdk.models import (
    BoltzmannMachine,
    RestrictedBoltzmannMachine,
    ais_log_partition,
    exact_log_likelihood,
    exact_log_partition,
    fit,
)
from kpp_sdk.models.datasets import load_bars_and_stripes
from kpp_sdk.models.samplers import BoltzmannSampler, PersistentContrastiveDivergence

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")
BAS = load_bars_and_stripes(3, 3)


def test_device_samples_land_on_the_models_cuda_device_and_training_runs_there():
    rbm = RestrictedBoltzmannMachine(9, 8, generator=torch.Generator().manual_seed(0)).to(CUDA)
    sampler = BoltzmannSampler("sa.cpu", num_reads=50, num_sweeps=2, num_threads=1, seed=0)
    neg = sampler.negative(rbm)
    assert neg.device.type == "cuda" and neg.dtype == rbm.dtype
    fit(rbm, BAS.train, sampler, epochs=20, batch_size=14, lr=0.1)
    assert rbm.quadratic_coef.device.type == "cuda"
    assert exact_log_likelihood(rbm, BAS.test) > -9 * 0.6932


def test_clamped_sampling_and_pcd_work_for_a_bm_on_cuda():
    bm = BoltzmannMachine(9, 2, generator=torch.Generator().manual_seed(1)).to(CUDA)
    v = torch.as_tensor(BAS.train, device=CUDA)
    pos = BoltzmannSampler("sa.cpu", num_reads=10, num_sweeps=5, seed=0).positive(bm, v)
    assert pos.device.type == "cuda" and torch.equal(pos[:, :9], v)
    neg = PersistentContrastiveDivergence(1, seed=0).negative(bm, v)
    assert neg.device.type == "cuda"


def test_evaluation_on_cuda_matches_the_cpu():
    gen = torch.Generator().manual_seed(2)
    cpu = RestrictedBoltzmannMachine(12, 10, init_std=0.5, generator=gen)
    gpu = RestrictedBoltzmannMachine(12, 10, cpu.quadratic_coef.detach(),
                                     cpu.linear_bias.detach()).to(CUDA)
    assert exact_log_partition(gpu) == pytest.approx(exact_log_partition(cpu), abs=1e-6)
    res = ais_log_partition(gpu, num_betas=500, seed=0)
    assert abs(res.log_z - exact_log_partition(cpu)) < max(3 * res.stderr, 0.05) + 0.05
