"""kaiwu-torch-plugin 0.3.0 code runs after changing one import."""

import numpy as np
import pytest
import torch
from kpp_sdk.models.datasets import load_bars_and_stripes
from kpp_sdk.models.kaiwu_compat import (
    AbstractBoltzmannMachine,
    BoltzmannMachine,
    RestrictedBoltzmannMachine,
    UnsupervisedDBN,
)
from kpp_sdk.models.samplers import ContrastiveDivergence
from torch.optim import SGD

import kpp_sdk
from kpp_sdk.interop.kaiwu import DeviceOptimizer


def _optimizer():
    """What kaiwu's SimulatedAnnealingOptimizer is to the plugin: an object with solve()."""
    return DeviceOptimizer(kpp_sdk.get_device("sa.cpu", num_sweeps=50, num_threads=1),
                           num_reads=12, seed=0)


@pytest.mark.parametrize("sampler", ["kaiwu optimizer", "kpp device"])
def test_the_plugin_readme_example_runs_one_training_step(sampler):
    torch.manual_seed(0)
    SAMPLE_SIZE, num_nodes, num_visible = 17, 50, 20
    x = torch.randint(0, 2, (SAMPLE_SIZE, num_visible)).float()
    rbm = RestrictedBoltzmannMachine(num_visible, num_nodes - num_visible)
    assert isinstance(rbm, AbstractBoltzmannMachine)
    opt_rbm = SGD(rbm.parameters())
    before = rbm.quadratic_coef.detach().clone()

    x = rbm.get_hidden(x)
    s = rbm.sample(_optimizer() if sampler == "kaiwu optimizer" else kpp_sdk.get_device("sa.cpu"))
    opt_rbm.zero_grad()
    objective = rbm.objective(x, s)
    objective.backward()
    expected = float((rbm.forward(x).mean() - rbm(s).mean()).detach())
    opt_rbm.step()

    assert x.shape == (17, 50) and s.shape[1] == 50 and set(s.unique().tolist()) <= {0.0, 1.0}
    assert float(objective.detach()) == pytest.approx(expected, abs=1e-6)
    assert not torch.equal(before, rbm.quadratic_coef.detach())


def test_objective_is_mean_data_energy_minus_mean_model_energy():
    rbm = RestrictedBoltzmannMachine(4, 3, generator=torch.Generator().manual_seed(1))
    a = (torch.rand(6, 7, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    b = (torch.rand(9, 7, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    expected = rbm(a).mean() - rbm(b).mean()
    assert float(rbm.objective(a, b).detach()) == pytest.approx(float(expected.detach()), abs=1e-6)


def test_get_hidden_and_get_visible_fill_the_other_layer():
    rbm = RestrictedBoltzmannMachine(3, 2, generator=torch.Generator().manual_seed(0))
    v = torch.tensor([[1.0, 0.0, 1.0]])
    full = rbm.get_hidden(v)
    assert torch.equal(full[:, :3], v)
    torch.testing.assert_close(full[:, 3:], rbm.hidden_probs(v))
    sampled = rbm.get_hidden(v, bernoulli=True)
    assert set(sampled[:, 3:].unique().tolist()) <= {0.0, 1.0}
    back = rbm.get_visible(torch.tensor([[1.0, 0.0]]))
    assert back.shape == (1, 5) and torch.equal(back[:, 3:], torch.tensor([[1.0, 0.0]]))


def test_compat_boltzmann_machine_keeps_the_plugin_signature_and_conditional_sampling():
    bm = BoltzmannMachine(6)
    assert bm.num_nodes == 6
    assert bm.hidden_bias(2).shape == (2,) and bm.visible_bias(4).shape == (4,)
    v = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    via_kaiwu = bm.condition_sample(_optimizer(), v)
    assert via_kaiwu.shape == (3 * 12, 6)  # every row the optimizer returns is kept
    assert torch.equal(via_kaiwu[:, :4], v.repeat_interleave(12, 0))
    via_device = bm.condition_sample(kpp_sdk.get_device("sa.cpu"), v)
    assert via_device.shape == (3, 6) and torch.equal(via_device[:, :4], v)
    g = bm.gibbs_sample(num_steps=3, s_visible=v)
    assert g.shape == (3, 6) and torch.equal(g[:, :4], v)
    assert bm.gibbs_sample(num_steps=2, num_sample=7).shape == (7, 6)
    with pytest.raises(ValueError):
        bm.gibbs_sample()
    bm.clip_parameters((-0.5, 0.5), (-0.25 / 64, 0.25 / 64))
    assert float(bm.quadratic_coef.detach().abs().max()) <= 0.25 / 64


def test_unsupervised_dbn_builds_trains_and_transforms_numpy_like_the_plugin():
    data = load_bars_and_stripes(3, 3, repeats=4).train
    dbn = UnsupervisedDBN([6, 4])
    dbn.create_rbm_layer(9)
    assert dbn.num_layers == 2 and dbn.output_dim == 4 and dbn.get_rbm_layer(5) is None
    with pytest.raises(ValueError, match="not trained"):
        dbn.forward(data)
    dbn.fit(data, ContrastiveDivergence(1, seed=0), epochs=2, batch_size=14)
    out = dbn.forward(data)
    assert isinstance(out, np.ndarray) and out.shape == (56, 4)
    np.testing.assert_allclose(dbn.transform(data), out)
    recon, err = dbn.reconstruct(data, layer_index=0)
    assert recon.shape == (56, 9) and err.shape == (56,) and np.all(err >= 0)
    with pytest.raises(ValueError, match="out of range"):
        dbn.reconstruct(data, layer_index=2)
    assert isinstance(dbn.rbm_layers[0], RestrictedBoltzmannMachine)


def test_untouched_unsupervised_dbn_reports_it_is_not_built():
    with pytest.raises(ValueError, match="create_rbm_layer"):
        UnsupervisedDBN().forward(np.zeros((1, 3)))
