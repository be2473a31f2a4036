"""Engines, determinism, readout modes, trajectories, fields, sparse input, accumulation."""

import numpy as np
import pytest
import scipy.sparse as sp
from kpp_sdk.emulator import (
    CIMParameters,
    ParameterError,
    get_profile,
    ising_energy,
    numba_available,
    sample,
    simulate,
)
from kpp_sdk.emulator.coupling import FLOAT32_EXACT_INT, accumulation_plan, quantize_couplings

pytestmark = pytest.mark.skipif(not numba_available(), reason="numba not installed")


@pytest.fixture(scope="module")
def sk20(request):
    rng = np.random.default_rng(3)
    A = rng.choice([-1.0, 1.0], size=(20, 20))
    J = np.triu(A, 1)
    return J + J.T


def test_same_seed_same_output(sk20):
    for engine in ("numba", "xp"):
        a = simulate(sk20, runs=50, seed=123, engine=engine)
        b = simulate(sk20, runs=50, seed=np.random.default_rng(123), engine=engine)
        c = simulate(sk20, runs=50, seed=124, engine=engine)
        assert a.spins.dtype == np.int8 and a.spins.shape == (50, 20)
        assert set(np.unique(a.spins)) <= {-1, 1}
        assert np.array_equal(a.spins, b.spins)
        assert not np.array_equal(a.spins, c.spins)
        assert np.allclose(a.energies, ising_energy(sk20, None, a.spins))


def test_numba_run_independent_of_batch_size(sk20):
    # counter-based noise: run r sees the same noise whatever the number of runs
    a = simulate(sk20, runs=10, seed=5, engine="numba", return_amplitudes=True)
    b = simulate(sk20, runs=40, seed=5, engine="numba", return_amplitudes=True)
    assert np.array_equal(a.spins, b.spins[:10])


def test_algorithmic_mode_engines_agree(sk20):
    par = CIMParameters(round_trips=150).algorithmic()
    assert par.g2 == 0 and par.coef_bits is None and par.adc_bits is None and par.latency == 0
    x0 = np.random.default_rng(0).uniform(-5e-4, 5e-4, size=(8, 20))
    a = simulate(sk20, params=par, runs=8, x0=x0, engine="numba", record_runs=8)
    b = simulate(sk20, params=par, runs=8, x0=x0, engine="xp", record_runs=8)
    assert np.array_equal(a.spins, b.spins)
    assert np.allclose(a.trajectories, b.trajectories, rtol=1e-4, atol=1e-5)
    c = simulate(sk20, params=par.replace(dtype="float64"), runs=8, x0=x0, engine="xp")
    assert np.array_equal(a.spins, c.spins)


def test_hardware_mode_engines_same_statistics(sk20):
    a = simulate(sk20, runs=400, seed=1, engine="numba")
    b = simulate(sk20, runs=400, seed=1, engine="xp")
    assert abs(a.energies.mean() - b.energies.mean()) < 0.05 * abs(a.energies.mean())


def test_trajectories_subset_only(sk20):
    r = simulate(sk20, runs=30, seed=1, params=CIMParameters(round_trips=100))
    assert r.trajectories is None and r.final_amplitudes is None
    r = simulate(
        sk20, runs=30, seed=1, params=CIMParameters(round_trips=100), record_runs=4, record_every=10
    )
    assert r.trajectories.shape == (11, 4, 20)
    assert list(r.trajectory_round_trips) == [0] + list(range(10, 101, 10))
    r2 = simulate(sk20, runs=30, seed=1, params=CIMParameters(round_trips=100), record_runs=[3, 7])
    assert r2.trajectories.shape == (101, 2, 20) and list(r2.trajectory_runs) == [3, 7]
    # recording does not change the physics
    assert np.array_equal(r.spins, r2.spins)
    assert np.array_equal(np.sign(r2.trajectories[-1]).astype(np.int8), r2.spins[[3, 7]])


def test_best_over_trajectory(sk20):
    par = CIMParameters(xi0=0.6).with_feedback("ahc")
    r = simulate(sk20, params=par, runs=100, seed=2, track_best=True)
    assert r.best_spins.shape == r.spins.shape and r.best_spins.dtype == np.int8
    assert np.all(r.best_energies <= r.energies + 1e-9)
    assert np.allclose(r.best_energies, ising_energy(sk20, None, r.best_spins))


@pytest.mark.parametrize("mode", ["cac", "cfc"])
def test_other_feedback_modes_run(sk20, mode):
    par = CIMParameters(xi0=0.6).with_feedback(mode)
    for engine in ("numba", "xp"):
        r = simulate(sk20, params=par, runs=100, seed=2, engine=engine, track_best=True)
        assert set(np.unique(r.spins)) <= {-1, 1}
        ground = min(r.best_energies.min(), r.energies.min())
        assert np.mean(r.best_energies <= ground + 1e-9) > 0.1


def test_field_through_ancilla():
    rng = np.random.default_rng(0)
    n = 30
    h = rng.choice([-1.0, 1.0], size=n) * rng.uniform(0.5, 1.0, size=n)
    r = simulate(np.zeros((n, n)), h, CIMParameters(), runs=40, seed=0)
    assert r.info["n_pulses"] == n + 1
    assert np.all(r.spins == np.sign(h).astype(np.int8))  # aligned after the gauge fix
    assert np.allclose(r.energies, -np.abs(h).sum())
    # with couplings: the gauge-fixed energies are those of the (N+1)-spin problem
    A = rng.choice([-1.0, 1.0], size=(n, n))
    J = np.triu(A, 1)
    J = J + J.T
    r = simulate(J, 0.5 * h, CIMParameters(), runs=50, seed=1)
    assert np.allclose(r.energies, ising_energy(J, 0.5 * h, r.spins))


def test_sparse_equals_dense(sk20):
    # exact integer accumulation: the sparse and dense products give identical results
    a = simulate(sk20, runs=64, seed=9)
    b = simulate(sp.csr_matrix(sk20), runs=64, seed=9)
    assert np.array_equal(a.spins, b.spins)


def test_exact_chunked_accumulation():
    rng = np.random.default_rng(0)
    n = 600
    A = rng.choice([-1.0, 1.0], size=(n, n))
    J = np.triu(A, 1)
    J = J + J.T
    Jq, _scale, _err = quantize_couplings(J, 8)  # all entries +-127
    chunks, dt = accumulation_plan(Jq, 512)  # 10-bit ADC codes
    assert dt == "float32" and len(chunks) == 3
    for a, b in chunks:
        assert np.abs(Jq[:, a:b]).sum(axis=1).max() * 512 <= FLOAT32_EXACT_INT
    codes = rng.integers(-512, 512, size=(50, n))
    codes[0] = np.where(Jq[0] > 0, 511, -512)  # worst case for row 0: |sum| = 127 * 511.5 * 599
    exact = codes.astype(np.int64) @ Jq.astype(np.int64)
    assert np.abs(exact).max() > FLOAT32_EXACT_INT  # a single float32 product would not be exact
    c32 = codes.astype(np.float32)
    J32 = Jq.astype(np.float32)
    total = sum(np.matmul(c32[:, a:b], J32[a:b, :]).astype(np.int64) for a, b in chunks)
    assert np.array_equal(total, exact)


def test_sample_on_profile(sk20):
    prof = get_profile("qboson-550")
    r = sample(prof, sk20, runs=20, seed=1, round_trips=200)
    assert r.info["profile"] == "qboson-550"
    expected = prof.task_overhead_s + 20 * (200 + prof.reset_round_trips) * prof.round_trip_time_s
    assert r.info["device_time_s"] == pytest.approx(expected)


def test_euler_integrator_is_reference_engine_only():
    J = np.array([[0.0, 1.0], [1.0, 0.0]])
    par = CIMParameters(round_trips=5, integrator="euler")
    with pytest.raises(ParameterError) as ei:
        simulate(J, None, par, runs=2, engine="numba")
    assert "integrator" in str(ei.value)
    assert simulate(J, None, par, runs=2).info["engine"] == "xp"  # auto picks the xp engine
    with pytest.raises(ParameterError):
        CIMParameters(integrator="rk4")


@pytest.mark.parametrize("rows,n", [(1, 1), (7, 5), (10, 37), (101, 550)])
def test_integer_fpga_product_exact(rows, n):
    from kpp_sdk.emulator import _fast

    rng = np.random.default_rng(n)
    width = -(-n // _fast.IGEMM_PAD) * _fast.IGEMM_PAD
    codes = np.zeros((rows, width), dtype=np.int16)
    codes[:, :n] = rng.integers(-512, 512, size=(rows, n))
    codes[0, :n] = 511  # the worst case of the accumulation bound for the first row
    A = rng.integers(-127, 128, size=(n, n))
    M = np.zeros((n, width), dtype=np.int16)
    M[:, :n] = A
    out = np.zeros((rows, n), dtype=np.int32)
    _fast.igemm(codes, M, out)
    assert np.array_equal(out, codes[:, :n].astype(np.int64) @ A.T.astype(np.int64))


@pytest.mark.parametrize("feedback", ["none", "ahc", "cac"])
def test_integer_product_same_dynamics_as_float_chunks(monkeypatch, feedback):
    # the int16 x int16 -> int32 product and the chunked float32 BLAS product are both exact:
    # the amplitudes must agree bit for bit (field through the ancilla, latency 2)
    from kpp_sdk.emulator import physics

    rng = np.random.default_rng(4)
    n = 45
    J = np.triu(rng.standard_normal((n, n)), 1)
    J = J + J.T
    h = 0.3 * rng.standard_normal(n)
    par = CIMParameters(round_trips=120, latency=2).with_feedback(feedback)
    kw = {"runs": 40, "seed": 3, "engine": "numba", "return_amplitudes": True}
    a = simulate(J, h, par, **kw)
    monkeypatch.setattr(physics, "_use_int_gemm", lambda *args: False)
    b = simulate(J, h, par, **kw)
    assert a.info["fpga_product"] == "int16x16->int32"
    assert b.info["fpga_product"] == "float32 chunks"
    assert np.array_equal(a.final_amplitudes, b.final_amplitudes)


@pytest.mark.parametrize(
    "n, changes",
    [
        (21, {}),  # odd pulse count: the last pulse has an injection pair of its own
        (21, {"pump_noise_per_pulse": True}),
        (20, {"sigma_inj": 0.0}),
        (21, {"feedback": "ahc"}),
        (20, {"track_quadrature": True}),
    ],
)
def test_numba_noise_variants_independent_of_batch_size(n, changes):
    # every kernel variant (per-pulse pump, no injection noise, error variables, odd N) keys
    # its noise on the global run index: run r gets the same amplitudes in any batch
    rng = np.random.default_rng(n)
    J = np.triu(rng.choice([-1.0, 1.0], size=(n, n)), 1)
    J = J + J.T
    par = CIMParameters(round_trips=60, **changes)
    kw = {"params": par, "seed": 7, "engine": "numba", "return_amplitudes": True}
    a = simulate(J, runs=6, **kw)
    # 1600 and 1700 runs: split into blocks (threads) at other run indices on a multi-core CPU
    b = simulate(J, runs=1600, **kw)
    c = simulate(J, runs=1700, **kw)
    assert np.array_equal(a.final_amplitudes, b.final_amplitudes[:6])
    assert np.array_equal(b.final_amplitudes, c.final_amplitudes[:1600])


def test_numba_injection_noise_is_standard_normal():
    # the injection normals (one Box-Muller pair per pulses i, i + N//2, own pair for the last
    # of an odd N): with zero feedback state and unit DAC-free feedback, x = dtau f (1 + s n)
    from kpp_sdk.emulator import _fast

    R, N = 400, 51
    x = np.zeros((R, N), np.float32)
    acc = np.ones((1, R, N), np.float32)
    code = np.zeros((R, N), np.int16)
    e = np.ones((R, N), np.float32)
    z = np.zeros(R, np.float32)
    f32 = np.float32
    _fast.inject(
        x, acc, False, code, e, 0, f32(1.0), f32(1.0), False, f32(1.0), f32(1.0), f32(-1.0),
        f32(1.0), f32(1.0), f32(1.0), f32(1.0), z, z, f32(0.01), f32(100.0),
        _fast.step_keys(11, 3, 8), 0,
    )  # fmt: skip
    n = (x - 1.0).astype(np.float64)
    flat = n.ravel()
    assert abs(flat.mean()) < 4.0 / np.sqrt(flat.size)
    assert abs(flat.var() - 1.0) < 0.03
    assert abs(np.mean(flat**4) - 3.0) < 0.15  # Gaussian kurtosis
    H = N // 2
    # the two halves of a pair are uncorrelated, and so are neighbouring pulses
    assert abs(np.corrcoef(n[:, :H].ravel(), n[:, H : 2 * H].ravel())[0, 1]) < 0.03
    assert abs(np.corrcoef(n[:, :-1].ravel(), n[:, 1:].ravel())[0, 1]) < 0.03


def test_cac_leleu_variant_is_reference_engine_only():
    J = np.array([[0.0, 1.0], [1.0, 0.0]])
    par = CIMParameters(round_trips=5, cac_variant="leleu").with_feedback("cac")
    with pytest.raises(ParameterError) as ei:
        simulate(J, None, par, runs=2, engine="numba")
    assert "cac_variant='leleu'" in str(ei.value) and "'xp'" in str(ei.value)
    assert simulate(J, None, par, runs=2).info["engine"] == "xp"  # auto picks the xp engine
    # the variant only concerns CAC: other modes keep the CPU engine
    ahc = par.with_feedback("ahc")
    assert simulate(J, None, ahc, runs=2, engine="auto").info["engine"] == "numba"
    with pytest.raises(ParameterError) as ei:
        CIMParameters(cac_variant="cim")
    assert "'fpga'" in str(ei.value) and "'leleu'" in str(ei.value)
