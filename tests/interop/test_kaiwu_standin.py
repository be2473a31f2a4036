"""kpp_sdk.kaiwu: Kaiwu SDK scripts run offline with `import kpp_sdk.kaiwu as kw`."""

import itertools

import numpy as np
import pytest

import kpp_sdk
import kpp_sdk.kaiwu as kw
from kpp_sdk import IsingProblem


def _kaiwu_energy(M, spins):
    s = np.asarray(spins, dtype=float)
    return -np.einsum("ki,ij,kj->k", s, M, s)


def _random_kaiwu(rng, n, integer=False):
    p = IsingProblem.random_sk(n, seed=int(rng.integers(1 << 30)), fields=True)
    M = p.to_kaiwu()
    if integer:
        M = np.round(M / np.abs(M).max() * 20)
    return M


def _ground_energy(M):
    n = M.shape[0] - 1
    states = np.array(list(itertools.product([-1, 1], repeat=n)))
    full = np.concatenate([states, np.ones((len(states), 1))], axis=1)
    return _kaiwu_energy(M, full).min()


def test_the_kaiwu_readme_example_runs_and_returns_distinct_low_solutions():
    matrix = -np.array([[0.0, 1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 1.0, 1.0],
                        [0.0, 0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0, 1.0],
                        [1.0, 1.0, 1.0, 1.0, 0.0]])
    opt = kw.classical.SimulatedAnnealingOptimizer(initial_temperature=100, alpha=0.99,
                                                   cutoff_temperature=0.001,
                                                   iterations_per_t=10, size_limit=10,
                                                   rand_seed=1)
    sols = opt.solve(matrix)
    assert sols.ndim == 2 and sols.shape[1] == 5 and 1 <= len(sols) <= 10
    assert (sols[:, -1] == 1).all() and np.isin(sols, (-1, 1)).all()
    assert len({tuple(r) for r in sols}) == len(sols)
    e = _kaiwu_energy(matrix, sols)
    assert np.all(np.diff(e) >= 0) and e[0] == pytest.approx(_ground_energy(matrix))


@pytest.mark.parametrize("seed", [101, 202, 303])
def test_simulated_annealing_finds_the_ground_state_of_fresh_instances(seed):
    M = _random_kaiwu(np.random.default_rng(seed), 12)
    opt = kw.classical.SimulatedAnnealingOptimizer(alpha=0.95, size_limit=20, rand_seed=seed)
    assert _kaiwu_energy(M, opt.solve(M))[0] == pytest.approx(_ground_energy(M))


def test_simulated_annealing_is_repeatable_through_numpy_or_rand_seed():
    M = _random_kaiwu(np.random.default_rng(7), 30)
    opt = kw.classical.SimulatedAnnealingOptimizer(alpha=0.9, size_limit=8)
    np.random.seed(3)
    a = opt.solve(M)
    np.random.seed(3)
    assert np.array_equal(a, opt.solve(M))
    b = kw.classical.SimulatedAnnealingOptimizer(alpha=0.9, size_limit=8, rand_seed=5).solve(M)
    c = kw.classical.SimulatedAnnealingOptimizer(alpha=0.9, size_limit=8, rand_seed=5).solve(M)
    assert np.array_equal(b, c)


def test_simulated_annealing_schedule_follows_the_documented_cooling():
    opt = kw.classical.SimulatedAnnealingOptimizer(initial_temperature=10, alpha=0.5,
                                                   cutoff_temperature=1, iterations_per_t=6)
    np.testing.assert_allclose(opt.temperatures(), [10, 5, 2.5, 1.25])
    betas = opt.betas(n=4)  # 4 temperatures x 6 flip attempts / 4 spins = 6 sweeps
    assert betas.size == 6 and betas[0] == pytest.approx(0.1) and betas[-1] == pytest.approx(0.8)


def test_init_solution_starts_the_reads_there():
    M = np.ones((6, 6)) - np.eye(6)  # ferromagnet: spins against the ancilla are a local minimum
    start = np.array([-1, -1, -1, -1, -1, 1])
    cold = kw.classical.SimulatedAnnealingOptimizer(initial_temperature=0.01, alpha=0.5,
                                                    cutoff_temperature=0.005, size_limit=4,
                                                    rand_seed=0)
    assert (cold.solve(M, init_solution=start) == start).all()


@pytest.mark.parametrize("kwargs,match", [
    ({"alpha": 1.0}, "alpha"), ({"alpha": 0}, "alpha"), ({"size_limit": 0}, "size_limit"),
    ({"iterations_per_t": 2.5}, "iterations_per_t"), ({"process_num": 0}, "process_num"),
    ({"cutoff_temperature": 200}, "cutoff_temperature"), ({"rand_seed": -1}, "rand_seed")])
def test_bad_optimizer_parameters_fail_at_construction(kwargs, match):
    with pytest.raises(kpp_sdk.KppError, match=match):
        kw.classical.SimulatedAnnealingOptimizer(**kwargs)


def test_a_non_square_matrix_is_refused_with_the_format_in_the_message():
    with pytest.raises(kpp_sdk.ProblemError, match="ancilla"):
        kw.classical.SimulatedAnnealingOptimizer().solve(np.zeros((3, 4)))


# --- the CIM ------------------------------------------------------------------------------------


def test_cim_refuses_what_the_machine_refuses_with_the_fix_in_the_message():
    cim = kw.cim.CIMOptimizer(task_name="t", wait=True, round_trips=100)
    M = _random_kaiwu(np.random.default_rng(1), 6)  # float entries
    with pytest.raises(kpp_sdk.ProblemError, match="PrecisionReducer"):
        cim.solve(M)
    with pytest.raises(kpp_sdk.ProblemError, match="8-bit"):
        cim.solve(np.round(M / np.abs(M).max() * 300))
    big = np.zeros((552, 552))
    big[0, 1] = big[1, 0] = 1
    with pytest.raises(kpp_sdk.ProblemTooLargeError, match="550"):
        cim.solve(big)
    reduced = kw.cim.PrecisionReducer(cim, precision=8).reduce(M)
    assert np.abs(reduced).max() == 127 and np.array_equal(reduced, np.round(reduced))


def test_cim_optimization_finds_the_ground_state_of_a_small_integer_problem():
    M = _random_kaiwu(np.random.default_rng(11), 10, integer=True)
    cim = kw.cim.CIMOptimizer(task_name="opt", task_mode=kw.cim.TaskMode.OPTIMIZATION,
                              sample_number=5, seed=2)
    sols = cim.solve(M)
    assert 1 <= len(sols) <= 5 and sols.shape[1] == 11 and (sols[:, -1] == 1).all()
    assert _kaiwu_energy(M, sols)[0] == pytest.approx(_ground_energy(M))


def test_cim_sampling_mode_returns_sample_number_runs_and_checks_the_range():
    M = _random_kaiwu(np.random.default_rng(12), 8, integer=True)
    cim = kw.cim.CIMOptimizer(task_name="s", task_mode="sample", sample_number=12, seed=0,
                              round_trips=200)
    assert cim.task_mode is kw.cim.TaskMode.SAMPLING and cim.solve(M).shape == (12, 9)
    for bad in (5, 2001):
        with pytest.raises(kpp_sdk.KppError, match="sample_number"):
            kw.cim.CIMOptimizer(task_mode=kw.cim.TaskMode.SAMPLING, sample_number=bad)
    with pytest.raises(kpp_sdk.KppError, match="sample_number"):
        kw.cim.CIMOptimizer(task_mode=kw.cim.TaskMode.SAMPLING)
    assert kw.cim.TaskMode.parse("quota") is kw.cim.TaskMode.OPTIMIZATION
    with pytest.raises(kpp_sdk.KppError, match="task_mode"):
        kw.cim.CIMOptimizer(task_mode="fast")


def test_a_kept_task_result_is_returned_again_for_the_same_name_and_matrix(tmp_path):
    M = _random_kaiwu(np.random.default_rng(13), 8, integer=True)
    kw.common.CheckpointManager.save_dir = str(tmp_path)
    try:
        first = kw.cim.CIMOptimizer(task_name="kept", task_mode="sampling", sample_number=10,
                                    round_trips=150).solve(M)
        again = kw.cim.CIMOptimizer(task_name="kept", task_mode="sampling", sample_number=10,
                                    round_trips=150).solve(M)
        other = kw.cim.CIMOptimizer(task_name="other", task_mode="sampling", sample_number=10,
                                    round_trips=150).solve(M)
    finally:
        kw.common.CheckpointManager.save_dir = None
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert len(list(tmp_path.glob("kept_*.npy"))) == 1


def test_precision_reducer_wraps_any_optimizer_and_keeps_its_solutions():
    M = _random_kaiwu(np.random.default_rng(14), 9)
    sa = kw.classical.SimulatedAnnealingOptimizer(alpha=0.9, size_limit=5, rand_seed=0)
    sols = kw.preprocess.PrecisionReducer(sa, precision=8).solve(M)
    assert sols.shape[1] == 10
    with pytest.raises(kpp_sdk.KppError, match="solve"):
        kw.cim.PrecisionReducer(object())


def test_set_up_lines_of_kaiwu_scripts_run():
    kw.license.init("user", "code")
    kw.common.set_log_level("DEBUG")
    kw.common.set_log_level("WARNING")
    kw.common.CheckpointManager.save_dir = None


def test_kaiwu_optimizers_drive_the_devices_and_models():
    from kpp_sdk.interop import as_device

    dev = as_device(kw.classical.SimulatedAnnealingOptimizer(alpha=0.9, size_limit=10))
    p = IsingProblem.random_sk(10, seed=4, fields=True)
    ss = dev.sample(p, num_reads=10, seed=1)
    np.testing.assert_allclose(ss.energies, p.energy(ss.spins))
