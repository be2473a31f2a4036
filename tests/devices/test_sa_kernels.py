"""Tests of the simulated-annealing kernels (``kpp_sdk.devices._sa_kernels``)."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
import scipy.sparse as sp
from kpp_sdk.devices import _sa_kernels as K
from kpp_sdk.devices._sa_kernels import anneal

ACCEPTANCES = ("metropolis", "gibbs")
_M64 = (1 << 64) - 1


# ----------------------------------------------------------------------------- helpers


def random_problem(n: int, seed: int, *, density: float = 1.0, field_scale: float = 0.5):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n)) * (rng.random((n, n)) < density)
    J = np.triu(A, 1)
    return J + J.T, field_scale * rng.standard_normal(n)


def integer_problem(n: int, seed: int, *, top: int = 3, field_denominator: int = 4):
    """Integer couplings in [-top, top], fields multiples of 1/field_denominator: the dense
    kernel runs these in float32, the sparse one on integer fields."""
    rng = np.random.default_rng(seed)
    J = np.triu(rng.integers(-top, top + 1, (n, n)).astype(np.float64), 1)
    return J + J.T, rng.integers(-4, 5, n) / field_denominator


def energies(J, h, spins):
    S = np.asarray(spins, dtype=np.float64)
    JS = np.asarray(J @ S.T).T
    return -0.5 * np.einsum("ki,ki->k", JS, S) - S @ h


def all_states(n: int) -> np.ndarray:
    return np.array(list(itertools.product((-1, 1), repeat=n)), dtype=np.int8)


def state_index(spins: np.ndarray) -> np.ndarray:
    """Row index of each state in :func:`all_states` (first spin = most significant bit)."""
    n = spins.shape[1]
    return ((spins > 0).astype(np.int64) << np.arange(n - 1, -1, -1)).sum(axis=1)


def seeds(num: int, seed: int = 0) -> np.ndarray:
    return np.random.SeedSequence(seed).generate_state(num, dtype=np.uint64)


def as_J(J, kind: str):
    return sp.csr_matrix(J) if kind == "sparse" else J


def _splitmix64(x: int) -> tuple[int, int]:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return x, z ^ (z >> 31)


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & _M64


def _reference_initial_spins(seed: int, n: int) -> np.ndarray:
    """splitmix64-seeded xoshiro256++ (written from the published algorithm), one bit per spin,
    least significant bit first: what the kernel must draw for a read's random start."""
    x, st = int(seed), []
    for _ in range(4):
        x, v = _splitmix64(x)
        st.append(v)
    s0, s1, s2, s3 = st
    spins = []
    bits = 0
    for i in range(n):
        if i % 64 == 0:
            bits = (_rotl((s0 + s3) & _M64, 23) + s0) & _M64
            t = (s1 << 17) & _M64
            s2 ^= s0
            s3 ^= s1
            s1 ^= s2
            s0 ^= s3
            s2 ^= t
            s3 = _rotl(s3, 45)
        spins.append(1 if bits & 1 else -1)
        bits >>= 1
    return np.array(spins, dtype=np.int8)


def _reference_greedy(J, h, s0: np.ndarray, sweeps: int, *, strict: bool) -> np.ndarray:
    """Zero-temperature sweeps in index order: flip when dE <= 0 (Metropolis) or dE < 0
    (heat bath, for which dE = 0 would be a coin toss; absent for Gaussian couplings)."""
    s = s0.astype(np.float64).copy()
    for _ in range(sweeps):
        for i in range(len(s)):
            de = 2.0 * s[i] * (J[i] @ s + h[i])
            if de < 0 or (de == 0 and not strict):
                s[i] = -s[i]
    return s.astype(np.int8)


# ----------------------------------------------------------------------------- random numbers


def test_splitmix64_known_answer():
    # the published splitmix64 outputs for state 1234567
    x, out = 1234567, []
    for _ in range(3):
        x, v = _splitmix64(x)
        out.append(v)
    assert out == [6457827717110365317, 3203168211198807973, 9817491932198370423]


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_random_initial_spins_follow_the_reference_generator(kind):
    n = 150  # crosses two 64-spin words
    J, h = random_problem(n, 0, density=0.1)
    sd = np.array([0, 1, 12345, 2**64 - 1, *seeds(4)], dtype=np.uint64)
    out = anneal(as_J(J, kind), h, np.empty(0), num_reads=len(sd), seed_streams=sd)
    assert out.dtype == np.int8 and out.shape == (len(sd), n)
    for r, seed in enumerate(sd):
        np.testing.assert_array_equal(out[r], _reference_initial_spins(int(seed), n))


def test_reads_differ_and_random_starts_are_balanced():
    n = 64
    J, h = random_problem(n, 1)
    start = anneal(J, h, np.empty(0), num_reads=500, seed_streams=seeds(500))
    assert len({row.tobytes() for row in start}) == 500
    assert abs(start.mean()) < 0.02  # 32,000 fair bits
    hot = anneal(J, h, np.full(20, 0.05), num_reads=200, seed_streams=seeds(200, 7))
    assert len({row.tobytes() for row in hot}) == 200


# ----------------------------------------------------------------------------- exact dynamics


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_metropolis_at_beta_zero_flips_every_spin(kind):
    J, h = random_problem(30, 2, density=0.3)
    init = np.where(np.random.default_rng(0).random((5, 30)) < 0.5, -1, 1).astype(np.int8)
    out = anneal(as_J(J, kind), h, [0.0], num_reads=5, seed_streams=seeds(5), initial_states=init)
    np.testing.assert_array_equal(out, -init)
    out = anneal(as_J(J, kind), h, [0.0, 0.0, 0.0], num_reads=5, seed_streams=seeds(5),
                 initial_states=init)
    np.testing.assert_array_equal(out, -init)


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("acceptance", ACCEPTANCES)
def test_zero_temperature_sweeps_match_reference_greedy_descent(kind, acceptance):
    n = 40
    J, h = random_problem(n, 3, density=0.4)
    rng = np.random.default_rng(5)
    init = np.where(rng.random((6, n)) < 0.5, -1, 1).astype(np.int8)
    out = anneal(as_J(J, kind), h, np.full(3, 1e12), num_reads=6, seed_streams=seeds(6),
                 acceptance=acceptance, initial_states=init)
    for r in range(6):
        ref = _reference_greedy(J, h, init[r], 3, strict=acceptance == "gibbs")
        np.testing.assert_array_equal(out[r], ref)


def test_zero_temperature_with_integer_couplings_uses_exact_float32():
    # dE = 0 moves are frequent here: Metropolis takes every one of them (deterministically)
    n = 40
    J, h = integer_problem(n, 4)
    Jk, _, _, unscale = K._dense_operands(J, h)
    assert Jk.dtype == np.float32 and unscale == 0.25
    rng = np.random.default_rng(6)
    init = np.where(rng.random((6, n)) < 0.5, -1, 1).astype(np.int8)
    out = anneal(J, h, np.full(3, 1e12), num_reads=6, seed_streams=seeds(6), initial_states=init)
    for r in range(6):
        np.testing.assert_array_equal(out[r], _reference_greedy(J, h, init[r], 3, strict=False))


def test_dense_operands_keep_float64_unless_float32_is_exact():
    J, h = random_problem(20, 0)
    assert K._dense_operands(J, h)[0].dtype == np.float64  # Gaussian couplings
    Ji, hi = integer_problem(20, 0)
    assert K._dense_operands(Ji, hi + 1e-3)[0].dtype == np.float64  # a non-dyadic field
    assert K._dense_operands(Ji * 2.0**22, hi * 0)[0].dtype == np.float64  # fields >= 2**24
    Jk, _, _, unscale = K._dense_operands(Ji / 8, hi)
    assert Jk.dtype == np.float32 and unscale == 0.125
    np.testing.assert_array_equal(Jk.astype(np.float64) * unscale, Ji / 8)


def _sparsify(J, keep: float, seed: int):
    mask = np.triu(np.random.default_rng(seed).random(J.shape) < keep, 1)
    return J * (mask | mask.T)


@pytest.mark.parametrize("acceptance", ACCEPTANCES)
@pytest.mark.parametrize("problem", ["gaussian", "integer"])
def test_every_kernel_makes_the_same_decisions(acceptance, problem):
    # the same problem on the dense kernel (float64 or exact float32), on a CSR kernel (float or
    # integer table) and as a mostly-zero dense array (run sparse): bit-identical reads
    n = 200
    if problem == "gaussian":
        J, h = random_problem(n, 8)
    else:
        J, h = integer_problem(n, 8, top=1, field_denominator=2)
    J = _sparsify(J, 0.3, 1)
    betas = np.geomspace(0.05, 3.0, 200)
    sd = seeds(24, 3)
    csr = sp.csr_matrix(J)
    expected = {"gaussian": ("dense", "sparse"), "integer": ("dense-float32", "sparse-int")}
    assert (K.kernel_for(J, h, betas, acceptance),
            K.kernel_for(csr, h, betas, acceptance)) == expected[problem]
    dense = anneal(J, h, betas, num_reads=24, seed_streams=sd, acceptance=acceptance)
    sparse = anneal(csr, h, betas, num_reads=24, seed_streams=sd, acceptance=acceptance)
    np.testing.assert_array_equal(dense, sparse)
    # a dense array with 3 % nonzeros runs on the sparse kernel, with the same reads
    Jt = _sparsify(J, 0.1, 2)
    assert K.kernel_for(Jt, h, betas, acceptance) == expected[problem][1]
    np.testing.assert_array_equal(
        anneal(Jt, h, betas, num_reads=24, seed_streams=sd, acceptance=acceptance),
        anneal(sp.csr_matrix(Jt), h, betas, num_reads=24, seed_streams=sd, acceptance=acceptance))
    # a non-canonical CSR (unsorted, 64-bit indptr) is the same matrix
    perm = sp.csr_matrix((csr.data.copy(), csr.indices.copy(), csr.indptr.copy()), shape=csr.shape)
    for i in range(n):
        a, b = perm.indptr[i], perm.indptr[i + 1]
        perm.indices[a:b] = perm.indices[a:b][::-1].copy()
        perm.data[a:b] = perm.data[a:b][::-1].copy()
    perm.has_sorted_indices = False
    perm.indptr = perm.indptr.astype(np.int64)
    again = anneal(perm, h, betas, num_reads=24, seed_streams=sd, acceptance=acceptance)
    np.testing.assert_array_equal(again, dense)


@pytest.mark.parametrize("acceptance", ACCEPTANCES)
def test_integer_couplings_too_wide_for_a_table_use_the_float_kernel_with_the_same_reads(
        acceptance):
    # fields up to ~1e6: a table of every s_i f_i would cost more than the sweeps
    n = 300
    J, h = integer_problem(n, 9, top=1, field_denominator=1)
    J = _sparsify(J * 100_000, 0.05, 3)
    csr = sp.csr_matrix(J)
    betas = np.geomspace(1e-6, 1e-3, 50)
    assert K.kernel_for(csr, h, betas, acceptance) == "sparse"
    assert K.kernel_for(csr / 100_000, h, betas * 100_000, acceptance) == "sparse-int"
    sd = seeds(8, 4)
    np.testing.assert_array_equal(
        anneal(csr, h, betas, num_reads=8, seed_streams=sd, acceptance=acceptance),
        anneal(J, h, betas, num_reads=8, seed_streams=sd, acceptance=acceptance))


def test_integer_threshold_test_equals_the_float_uniform_test():
    # u = (k + 1/2) 2**-52 < p  <=>  k < T(p), checked at the k where it changes, for p drawn
    # across the range (including values whose p 2**52 is within 1 of an integer)
    rng = np.random.default_rng(5)
    xs = np.concatenate([rng.uniform(0, 38, 2000), -np.log(rng.uniform(0.4, 1, 200)), [0.0, 38.0]])
    for x in xs:
        for gibbs in (False, True):
            # p as the kernel computes it (math.exp: NumPy's vectorised exp may differ by an ulp)
            x = float(x)
            p = 1.0 / (1.0 + math.exp(x)) if gibbs else math.exp(-x)
            T = int(K._threshold(x, gibbs))
            assert 0 <= T <= 2**52
            for k in (T - 2, T - 1, T, T + 1):
                if 0 <= k < 2**52:
                    assert (k < T) == ((k + 0.5) * 2.0**-52 < p), (x, gibbs, k, T)
    assert K._threshold(38.5, False) == K._threshold(38.5, True) == -1  # certain: keep
    assert K._threshold(-38.5, True) > 2**52  # certain: flip without a draw


@pytest.mark.parametrize("gibbs", [False, True])
def test_accept_with_cache_and_quick_rejection_decides_as_the_plain_threshold(gibbs):
    # the same flip and the same generator state after, for energy changes with and without
    # cache hits (integers repeat, Gaussians do not) and on both sides of the quick bound
    rng = np.random.default_rng(6)
    des = np.concatenate([rng.normal(0, 5, 3000), rng.integers(-8, 9, 3000).astype(float)])
    betas = rng.choice([0.05, 0.3, 1.0, 3.0, 20.0], des.size)
    cache_x, cache_t = np.full(64, np.nan), np.zeros(64, dtype=np.int64)
    state = tuple(np.uint64(v) for v in seeds(4, 9))
    ref = state
    quick = 0
    for de, beta in zip(des, betas):
        flip, *state = K._accept(de, beta, gibbs, *state, cache_x, cache_t)
        x = beta * (de if gibbs else max(de, 0.0))
        want, *ref = K._decide(K._threshold(x, gibbs), *ref)
        state, ref = (tuple(np.uint64(v) for v in st) for st in (state, ref))
        assert flip == want and tuple(state) == tuple(ref), (de, beta)
        quick += (not want) and 1.0 < x <= 38.0
    assert quick > 1000  # the quick rejection was exercised


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_results_do_not_depend_on_threads_chunking_or_repetition(kind):
    n = 50
    J, h = random_problem(n, 9, density=0.3)
    Jx = as_J(J, kind)
    betas = np.geomspace(0.1, 3.0, 100)
    sd = seeds(37, 11)
    ref = anneal(Jx, h, betas, num_reads=37, seed_streams=sd, num_threads=1)
    for kw in ({"num_threads": 1}, {"num_threads": 2}, {"num_threads": 3},
               {"num_threads": 2, "cancel_check": lambda: False}, {}):
        np.testing.assert_array_equal(anneal(Jx, h, betas, num_reads=37, seed_streams=sd, **kw),
                                      ref)
    # a read depends on its own seed only
    np.testing.assert_array_equal(
        anneal(Jx, h, betas, num_reads=5, seed_streams=sd[10:15], num_threads=2), ref[10:15])
    # and a different seed gives a different run
    other = anneal(Jx, h, betas, num_reads=37, seed_streams=seeds(37, 12))
    assert not np.array_equal(other, ref)


def test_initial_states_are_used_and_not_modified():
    n = 30
    J, h = random_problem(n, 10)
    init = np.ones((4, n), dtype=np.int8)
    keep = init.copy()
    out = anneal(J, h, np.empty(0), num_reads=4, seed_streams=seeds(4), initial_states=init)
    np.testing.assert_array_equal(out, init)
    anneal(J, h, np.full(5, 1.0), num_reads=4, seed_streams=seeds(4), initial_states=init)
    np.testing.assert_array_equal(init, keep)


# ----------------------------------------------------------------------------- statistics


def _boltzmann(J, h, beta):
    states = all_states(len(h))
    E = energies(J, h, states)
    p = np.exp(-beta * (E - E.min()))
    return p / p.sum()


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("acceptance", ACCEPTANCES)
def test_fixed_beta_samples_the_boltzmann_distribution(kind, acceptance):
    n, beta, reads = 8, 0.6, 20_000
    J, h = random_problem(n, 12, density=0.8)
    p = _boltzmann(J, h, beta)
    # the test has power: a chain at a 25% different temperature would fail it
    assert 0.5 * np.abs(_boltzmann(J, h, 1.25 * beta) - p).sum() > 0.1
    out = anneal(as_J(J, kind), h, np.full(200, beta), num_reads=reads, seed_streams=seeds(reads, 5),
                 acceptance=acceptance, num_threads=2)
    emp = np.bincount(state_index(out), minlength=2**n) / reads
    tv = 0.5 * np.abs(emp - p).sum()
    assert tv < 0.05, f"total variation {tv:.4f}"


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_fixed_beta_from_a_fixed_start_forgets_it(kind):
    # every read starts all-up; after 200 heat-bath sweeps the chain must have mixed
    n, beta, reads = 8, 0.6, 20_000
    J, h = random_problem(n, 13, density=0.8)
    p = _boltzmann(J, h, beta)
    out = anneal(as_J(J, kind), h, np.full(200, beta), num_reads=reads, seed_streams=seeds(reads, 6),
                 acceptance="gibbs", initial_states=np.ones((reads, n), dtype=np.int8))
    emp = np.bincount(state_index(out), minlength=2**n) / reads
    assert 0.5 * np.abs(emp - p).sum() < 0.05


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("acceptance", ACCEPTANCES)
def test_annealing_finds_the_exact_ground_state(kind, acceptance):
    n = 12
    states = all_states(n)
    for seed in range(3):
        J, h = random_problem(n, 100 + seed, density=0.7, field_scale=1.0)
        e0 = energies(J, h, states).min()
        out = anneal(as_J(J, kind), h, np.geomspace(0.1, 5.0, 1000), num_reads=16,
                     seed_streams=seeds(16, seed), acceptance=acceptance)
        e = energies(J, h, out)
        assert np.all(e >= e0 - 1e-9)
        assert np.isclose(e.min(), e0, rtol=0, atol=1e-9)
        # not every read: a low-lying local minimum behind a high barrier freezes in at moderate
        # beta with a finite share of the reads (physics, not a bug)
        assert np.mean(np.isclose(e, e0, rtol=0, atol=1e-9)) >= 0.25


# ----------------------------------------------------------------------------- cancellation


@pytest.mark.parametrize("threads", [1, 2])
def test_cancel_check_true_raises_interrupted(threads):
    J, h = random_problem(20, 14)
    with pytest.raises(InterruptedError):
        anneal(J, h, np.full(10, 1.0), num_reads=16, seed_streams=seeds(16), num_threads=threads,
               cancel_check=lambda: True)


def _long_problem(kind: str):
    """Operands for :func:`anneal` that run one of the three kernels for many seconds."""
    if kind == "dense":
        J, h = random_problem(300, 21)
        return J, h
    if kind == "sparse":
        J, h = random_problem(2000, 22, density=0.003)
        return sp.csr_matrix(J), h
    J, h = integer_problem(2000, 23)
    J[np.random.default_rng(0).random(J.shape) < 0.997] = 0
    J = np.triu(J, 1)
    return sp.csr_matrix(J + J.T), h


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["dense", "sparse", "sparse-int"])
def test_a_running_anneal_stops_within_a_second_of_cancel(kind, threads):
    # 4 reads of 2,000,000 sweeps (>= 2.4e9 spin updates: minutes of work) in one chunk per
    # thread: only a check inside the kernels can stop it early
    J, h = _long_problem(kind)
    betas = np.full(2_000_000, 0.5)
    assert K.kernel_for(J, h, betas) == kind
    started = time.perf_counter()
    told = []

    def check():
        if time.perf_counter() - started > 0.3:
            told.append(time.perf_counter())
            return True
        return False

    with pytest.raises(InterruptedError):
        anneal(J, h, betas, num_reads=4, seed_streams=seeds(4), num_threads=threads,
               cancel_check=check)
    latency = time.perf_counter() - told[0]
    assert latency < 1.0, f"stopped {latency:.2f} s after cancel"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_results_are_unchanged_by_a_cancel_check_that_never_fires(kind, threads, monkeypatch):
    import kpp_sdk.devices._sa_kernels as kernels

    # the polling path, polled often: a quick job would otherwise finish between two polls
    monkeypatch.setattr(kernels, "_INLINE_S", 0.0)
    monkeypatch.setattr(kernels, "POLL_S", 1e-4)
    J, h = random_problem(600, 24) if kind == "dense" else random_problem(3000, 24, density=0.003)
    Jx = as_J(J, kind)
    betas = np.geomspace(0.05, 3.0, 300)
    calls = []
    ref = anneal(Jx, h, betas, num_reads=6, seed_streams=seeds(6, 1), num_threads=threads)
    got = anneal(Jx, h, betas, num_reads=6, seed_streams=seeds(6, 1), num_threads=threads,
                 cancel_check=lambda: calls.append(1) and False)
    np.testing.assert_array_equal(got, ref)
    assert len(calls) >= 2  # polled while running, not only before


# ----------------------------------------------------------------------------- validation


def test_argument_validation():
    J, h = random_problem(6, 16)
    ok = {"num_reads": 2, "seed_streams": seeds(2)}
    with pytest.raises(ValueError, match="acceptance"):
        anneal(J, h, [1.0], acceptance="glauber", **ok)
    with pytest.raises(ValueError, match="seed_streams"):
        anneal(J, h, [1.0], num_reads=3, seed_streams=seeds(2))
    with pytest.raises(ValueError, match="h must"):
        anneal(J, h[:5], [1.0], **ok)
    with pytest.raises(ValueError, match="square"):
        anneal(J[:5], h, [1.0], **ok)
    Jd = J.copy()
    Jd[0, 0] = 1.0
    with pytest.raises(ValueError, match="diagonal"):
        anneal(Jd, h, [1.0], **ok)
    with pytest.raises(ValueError, match="diagonal"):
        anneal(sp.csr_matrix(Jd), h, [1.0], **ok)
    with pytest.raises(ValueError, match="initial_states"):
        anneal(J, h, [1.0], initial_states=np.zeros((2, 6)), **ok)
    with pytest.raises(ValueError, match="initial_states"):
        anneal(J, h, [1.0], initial_states=np.ones((3, 6)), **ok)
    with pytest.raises(ValueError, match="num_threads"):
        anneal(J, h, [1.0], num_threads=0, **ok)
    assert anneal(J, h, [1.0], num_reads=0, seed_streams=seeds(0)).shape == (0, 6)
