"""The graph-restricted Boltzmann machine (dwave-pytorch-plugin's model on the SDK's contract)."""

import itertools

import numpy as np
import pytest
import torch
from kpp_sdk.models import GraphRestrictedBoltzmannMachine as GRBM
from kpp_sdk.models import exact_log_likelihood, fit
from kpp_sdk.models.errors import InvalidDataError
from kpp_sdk.models.samplers import BoltzmannSampler

dimod = pytest.importorskip("dimod")


def _random_graph(seed, n=8, p=0.4, hidden=("h0", "h1")):
    rng = np.random.default_rng(seed)
    nodes = [f"v{i}" for i in range(n)] + list(hidden)
    edges = [(a, b) for a, b in itertools.combinations(nodes, 2)
             if rng.random() < p and not (a in hidden and b in hidden)]
    model = GRBM(nodes, edges, hidden, generator=torch.Generator().manual_seed(seed),
                 init_std=1.0, dtype=torch.float64)
    return model, nodes, rng


@pytest.mark.parametrize("seed", [3, 4])
def test_energies_are_dimods_for_the_same_biases(seed):
    model, nodes, rng = _random_graph(seed)
    h, J = model.to_dimod_ising()
    bqm = dimod.BQM.from_ising(h, J)
    spins = rng.choice([-1, 1], size=(20, len(nodes)))  # construction order
    ours = model(model.spins_to_states(spins)).detach().numpy()
    theirs = bqm.energies((spins, nodes))
    np.testing.assert_allclose(ours, theirs, atol=1e-10)
    back = model.states_to_spins(model.spins_to_states(spins))
    assert np.array_equal(back.numpy(), spins)
    x = model.spins_to_states(spins)
    np.testing.assert_allclose(model.to_ising().energy((2 * x - 1).numpy().astype(np.int8)),
                               ours, atol=1e-10)


def test_free_energy_is_exact_when_hidden_nodes_are_uncoupled():
    model, _, rng = _random_graph(5)
    assert model.exact_hidden_conditional and model.num_hidden == 2
    v = torch.tensor(rng.integers(0, 2, (6, 8)), dtype=torch.float64)
    hs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)), dtype=torch.float64)
    exact = torch.stack([-torch.logsumexp(-model(torch.cat([r.expand(4, 8), hs], 1)), 0)
                         for r in v])
    torch.testing.assert_close(model.free_energy(v), exact)
    # the positive phase with hidden expectations is E_h[E] (linear in each hidden unit)
    p = model.hidden_expectation(v)[:, 8:]
    w = torch.stack([torch.prod(torch.where(hs[k] == 1, p, 1 - p), dim=1) for k in range(4)], 1)
    e_h = torch.stack([model(torch.cat([v, hs[k].expand(6, 2)], 1)) for k in range(4)], 1)
    torch.testing.assert_close(model(model.hidden_expectation(v)), (w * e_h).sum(1))


def test_coupled_hidden_nodes_switch_to_clamped_sampling():
    model = GRBM(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a")], hidden_nodes=["b", "c"])
    assert not model.exact_hidden_conditional
    with pytest.raises(NotImplementedError):
        model.hidden_expectation(torch.ones(1, 1))
    sampler = BoltzmannSampler("sa.cpu", num_reads=10, num_sweeps=5, num_threads=1, seed=0)
    pos = sampler.positive(model, torch.ones(4, 1))
    assert pos.shape == (4, 3) and bool((pos[:, 0] == 1).all())


def test_grbm_learns_on_a_sparse_graph_with_a_device():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ring = [f"v{i}" for i in range(8)]
    hidden = ["h0", "h1", "h2"]
    edges = [(ring[i], ring[(i + 1) % 8]) for i in range(8)] + [
        (h, ring[k]) for j, h in enumerate(hidden) for k in range(j, 8, 3)]
    model = GRBM(ring + hidden, edges, hidden, generator=torch.Generator().manual_seed(1))
    # data: runs of equal neighbours on the ring
    base = rng.integers(0, 2, (200, 1))
    data = torch.tensor(np.repeat(base, 8, axis=1) ^ (rng.random((200, 8)) < 0.05),
                        dtype=torch.float32)
    before = exact_log_likelihood(model, data)
    fit(model, data, BoltzmannSampler("sa.cpu", num_reads=100, num_sweeps=5, num_threads=1,
                                      seed=0), epochs=60, batch_size=50, lr=0.1, seed=0)
    after = exact_log_likelihood(model, data)
    assert after > before + 1.5


def test_bad_graphs_and_spins_are_refused():
    with pytest.raises(InvalidDataError, match="self-loop"):
        GRBM([0, 1], [(0, 0)])
    with pytest.raises(InvalidDataError, match="twice"):
        GRBM([0, 1], [(0, 1), (1, 0)])
    with pytest.raises(InvalidDataError, match="not among the nodes"):
        GRBM([0, 1], [(0, 1)], hidden_nodes=[7])
    model = GRBM([0, 1], [(0, 1)])
    with pytest.raises(InvalidDataError, match="spins"):
        model(torch.tensor([[-1.0, 1.0]]))
    with pytest.raises(InvalidDataError, match="edge"):
        model.set_quadratic({(0, 5): 1.0})
    model.set_quadratic({(1, 0): 2.0})
    model.set_linear({1: -1.0})
    h, J = model.to_dimod_ising(prefactor=0.5, quadratic_range=(-0.5, 0.5))
    assert J == {(0, 1): 0.5} and h[1] == -0.5
