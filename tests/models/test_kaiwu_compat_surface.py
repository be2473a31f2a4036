"""The compat API surface kaiwu-torch-plugin 0.3.0's own tests rely on (names, keyword arguments,
state-dict keys), and the behaviour behind the names that the plugin's tests do not pin down."""

import inspect
import itertools

import kpp_sdk.models.kaiwu_compat as kc
import numpy as np
import torch
from kpp_sdk.models.samplers import BoltzmannSampler

import kpp_sdk
from kpp_sdk.interop.kaiwu import DeviceOptimizer


def _params(obj):
    return list(inspect.signature(obj).parameters)


def test_names_the_plugin_exports_exist():
    for name in ("RestrictedBoltzmannMachine", "BoltzmannMachine", "EnergyModel", "QVAE",
                 "UnsupervisedDBN", "QDiffusion", "QDiffusionConfig", "FeatureSelectionWrapper",
                 "QuadraticLinearSolver", "enable_usage_stats", "disable_usage_stats",
                 "is_usage_stats_enabled"):
        assert name in kc.__all__ and hasattr(kc, name)
    assert kc.QDiffusion.__name__ == "QDiffusion"
    assert kc.QDiffusionConfig.__name__ == "QDiffusionConfig"
    for removed in ("from_pretrained", "build", "load_backbone"):
        assert not hasattr(kc.QDiffusion, removed)
    assert callable(kc.plugin.solve_qubo)  # the module the plugin's tests monkeypatch


def test_constructor_and_method_keywords_are_the_plugins():
    assert _params(kc.RestrictedBoltzmannMachine)[:5] == [
        "num_visible", "num_hidden", "quadratic_coef", "linear_bias", "device"]
    assert _params(kc.BoltzmannMachine) == ["num_nodes", "quadratic_coef", "linear_bias",
                                            "device"]
    assert _params(kc.GaussianBernoulliRestrictedBoltzmannMachine) == [
        "num_visible", "num_hidden", "is_visible_gaussian", "eps", "dtype", "linear_bias",
        "quadratic_coef", "device"]
    assert _params(kc.QVAE) == ["input_dimension", "activation_fct", "config", "encoder",
                                "decoder", "bm", "sampler", "sampler_type"]
    assert _params(kc.EnergyModel) == ["bm_num_visible", "bm_num_hidden", "sampler"]
    assert _params(kc.QDiffusion)[:7] == ["proposal_model", "energy_model", "token_spec",
                                          "config", "dtype", "device", "freeze_proposal"]
    assert _params(kc.FeatureSelectionWrapper) == [
        "model", "feature_dim", "lambda_reg", "cardinality_k", "min_selected_features",
        "max_selected_features", "solver", "mask_update_epochs", "input_feature_axis",
        "solver_kwargs"]
    rbm = kc.RestrictedBoltzmannMachine(3, 2)
    assert _params(rbm.forward) == ["s_all"]
    assert _params(rbm.objective)[:2] == ["s_positive", "s_negative"]
    assert _params(rbm.get_hidden) == ["s_visible", "requires_grad", "bernoulli"]
    gb = kc.GaussianBernoulliRestrictedBoltzmannMachine(2, 2)
    assert _params(gb.gibbs_sample) == ["n_step", "n_burnin", "s_gaussian", "s_bernoulli",
                                        "sampler", "n_sample"]
    assert _params(gb.infer_from_gaussian) == ["s_gaussian", "binarize", "no_random"]
    assert _params(kc.QDiffusion.generate)[1:] == ["input_tokens", "max_steps", "partial_masks",
                                                   "temperature", "return_state"]


def test_state_dict_keys_are_the_plugins():
    assert list(kc.RestrictedBoltzmannMachine(3, 2).state_dict()) == ["quadratic_coef",
                                                                      "linear_bias"]
    assert list(kc.BoltzmannMachine(4).state_dict()) == ["quadratic_coef", "linear_bias"]
    assert list(kc.GaussianBernoulliRestrictedBoltzmannMachine(2, 3).state_dict()) == [
        "mu", "log_var", "quadratic_coef", "linear_bias"]
    dbn = kc.UnsupervisedDBN([5, 3]).create_rbm_layer(7)
    keys = list(dbn.state_dict())
    assert keys == ["rbm_layers.0.quadratic_coef", "rbm_layers.0.linear_bias",
                    "rbm_layers.1.quadratic_coef", "rbm_layers.1.linear_bias"]
    # a state dict written with the plugin's keys loads
    other = kc.UnsupervisedDBN([5, 3]).create_rbm_layer(7)
    other.load_state_dict({k: torch.randn_like(v) for k, v in dbn.state_dict().items()})
    assert not torch.equal(other.rbms[0].quadratic_coef, dbn.rbms[0].quadratic_coef)


def test_usage_statistics_names_never_enable_anything():
    kc.enable_usage_stats()
    assert kc.is_usage_stats_enabled() is False
    with kc.kpp_caller_context():
        pass


# --- behaviour behind the names ------------------------------------------------------------------


def test_hidden_to_ising_matrix_is_exact_when_hidden_units_are_coupled():
    """Every hidden configuration's Kaiwu energy differs from the model's energy by one constant
    (the plugin 0.3.0's field term was off by the hidden couplings' column sums / 8)."""
    torch.manual_seed(4)
    bm = kc.BoltzmannMachine(6)
    with torch.no_grad():
        bm.quadratic_coef.copy_(torch.randn(6, 6))
        bm.linear_bias.copy_(torch.randn(6))
    v = torch.tensor([1.0, 0.0, 1.0])
    M = bm._hidden_to_ising_matrix(v)
    assert M.shape == (4, 4) and isinstance(M, np.ndarray)
    diffs = []
    for h in itertools.product([0, 1], repeat=3):
        x = torch.tensor([[*v.tolist(), *h]])
        s = np.array([*(2 * np.array(h) - 1), 1.0])
        diffs.append(float(bm(x).detach()) - float(-s @ M @ s))
    assert np.ptp(diffs) < 1e-5


def test_condition_sample_on_an_empty_condition_samples_the_whole_model():
    bm = kc.BoltzmannMachine(5)
    with torch.no_grad():
        bm.linear_bias.copy_(torch.tensor([3.0, -3.0, 3.0, -3.0, 3.0]))
    optimizer = DeviceOptimizer(kpp_sdk.get_device("sa.cpu", num_threads=1), num_reads=2, seed=0)
    x = bm.condition_sample(optimizer, torch.ones(3, 0))
    assert x.shape == (6, 5)  # one solve per row, every returned row kept
    assert bool((x == torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])).all())
    assert bm.condition_sample(kpp_sdk.get_device("sa.cpu", num_threads=1),
                               torch.ones(4, 0)).shape == (4, 5)


def test_a_model_written_the_plugin_way_samples_on_optimizers_and_devices():
    class PluginStyle(kc.AbstractBoltzmannMachine):
        def __init__(self, n, device=None):
            super().__init__(device=device)
            self.num_nodes = n
            self.bias = torch.nn.Parameter(torch.linspace(-2, 2, n).to(self.device))

        def forward(self, s_all):
            return -s_all @ self.bias

        def _to_ising_matrix(self):
            M = np.zeros((self.num_nodes + 1, self.num_nodes + 1))
            M[:-1, -1] = M[-1, :-1] = self.bias.detach().numpy() / 4
            return M

    model = PluginStyle(4)
    assert model.device == torch.device("cpu") and model.num_nodes == 4
    optimizer = DeviceOptimizer(kpp_sdk.get_device("sa.cpu", num_threads=1), num_reads=8, seed=0)
    # an optimizer anneals: independent units with fields -2..2 end with the positive ones on
    x = model.sample(optimizer)
    assert x.shape == (8, 4) and bool((x == torch.tensor([0.0, 0.0, 1.0, 1.0])).all())
    # a device samples the model (E = -bias . x) through its Kaiwu matrix: p(x_i = 1) =
    # sigmoid(bias_i), which a wrong factor or sign in the matrix would break
    sampler = BoltzmannSampler("sa.cpu", num_reads=2000, num_sweeps=20, num_threads=1, seed=0)
    x = model.sample(sampler)
    torch.testing.assert_close(x.mean(0), torch.sigmoid(model.bias.detach()), atol=0.04, rtol=0)
    loss = model.objective(torch.ones(2, 4), x)
    loss.backward()
    assert model.bias.grad is not None


def test_gaussian_bernoulli_marginal_energy_is_the_exact_free_energy():
    torch.manual_seed(2)
    gb = kc.GaussianBernoulliRestrictedBoltzmannMachine(3, 4, dtype=torch.float64)
    with torch.no_grad():
        gb.quadratic_coef.copy_(torch.randn(3, 4, dtype=torch.float64))
    v = torch.randn(5, 3, dtype=torch.float64)
    hs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
    exact = torch.stack([-torch.logsumexp(-gb(torch.cat([vi.expand(16, 3), hs], 1)), 0)
                         for vi in v])
    torch.testing.assert_close(gb.marginal_energy(v), exact)


def test_gaussian_bernoulli_sample_gives_conditional_means_and_gibbs_keeps_the_plugins_rows():
    gb = kc.GaussianBernoulliRestrictedBoltzmannMachine(2, 3, dtype=torch.float64)
    optimizer = DeviceOptimizer(kpp_sdk.get_device("sa.cpu", num_threads=1), num_reads=6, seed=1)
    x = gb.sample(optimizer)
    assert x.shape == (6, 5)
    torch.testing.assert_close(x[:, :2], gb.mu + x[:, 2:] @ gb.quadratic_coef.t())
    x_dev = gb.sample(kpp_sdk.get_device("sa.cpu", num_threads=1))
    torch.testing.assert_close(x_dev[:, :2], gb.mu + x_dev[:, 2:] @ gb.quadratic_coef.t())
    assert gb.gibbs_sample(n_step=5, n_burnin=0, n_sample=3).shape == (15, 5)
    assert gb.gibbs_sample(n_step=5, n_burnin=3, n_sample=3).shape == (9, 5)
    swapped = kc.GaussianBernoulliRestrictedBoltzmannMachine(4, 2, is_visible_gaussian=False)
    assert (swapped.num_gaussian, swapped.num_bernoulli) == (2, 4)
