"""sa.gpu: the array code on NumPy (every CI run), the fused CUDA kernel under a CPU emulation of
its warps and with nvcc (when a compiler is there), and on a real GPU (tests marked ``gpu``)."""

import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
from kpp_sdk.devices import _sa_array, _sa_cuda
from kpp_sdk.devices.annealing import make_schedule, seed_streams
from kpp_sdk.devices.sa_gpu import CudaUnavailableError, SimulatedAnnealingGPU, require_cuda

import kpp_sdk
from kpp_sdk import InvalidOptionError, IsingProblem, MissingDependencyError
from kpp_sdk.exact import (
    boltzmann_distribution,
    empirical_distribution,
    ground_state,
    total_variation,
)
from kpp_sdk.instances import ground_energy, load_instance
from kpp_sdk.testing import DeviceConformance

NUMPY = _sa_array.numpy_module()


def integer_problem(n, seed, density=1.0, fields=True):
    """Couplings in {-3..3} and fields in {-2..2}: every field sum is exact in float64, so any
    two correct implementations with the same random numbers make the same decisions."""
    rng = np.random.default_rng(seed)
    W = rng.integers(-3, 4, size=(n, n)).astype(float) * (rng.random((n, n)) < density)
    J = np.triu(W, 1)
    h = rng.integers(-2, 3, size=n).astype(float) if fields else None
    return IsingProblem(J + J.T, h)


def reference_spins(J, h, betas, keys, *, gibbs, tile=64, init=None):
    S, F = _sa_array.initial_state(NUMPY, J, h, keys, init)
    return _sa_array.sweep_array(NUMPY, J, betas, keys, S, F, gibbs=gibbs, tile=tile)


# --- the device on NumPy ---------------------------------------------------------------------


class TestSAGPUOnNumpyConformance(DeviceConformance):
    fast_options = {"num_sweeps": 20}

    def make_device(self):
        return SimulatedAnnealingGPU(backend="numpy")


@pytest.fixture(scope="module")
def sa():
    return SimulatedAnnealingGPU(backend="numpy")


def test_philox_matches_random123_known_answers():
    # Random123's kat_vectors for philox4x32-10: counter (4 words), key (2 words) -> output
    kat = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
           ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
           ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in kat:
        out = _sa_array.philox4x32(np, tuple(np.array([c], np.uint32) for c in ctr),
                                   tuple(np.array([k], np.uint32) for k in key))
        assert [int(w[0]) for w in out] == list(want)


def test_uniforms_are_uniform_and_initial_spins_balanced():
    keys = _sa_array.read_keys(seed_streams(0, 64))
    u = _sa_array.uniforms(np, keys, 0, 8, 50).ravel()
    assert 0 < u.min() and u.max() < 1
    # 25,600 draws: mean 1/2 +- 0.0018, 10 equal bins each 10% +- 0.19%
    assert abs(u.mean() - 0.5) < 0.01
    assert np.all(np.abs(np.histogram(u, bins=10, range=(0, 1))[0] / u.size - 0.1) < 0.01)
    s = _sa_array.initial_spins(np, keys, 300)
    assert s.dtype == np.int8 and set(np.unique(s)) == {-1, 1}
    assert abs(s.mean()) < 0.02
    assert len({row.tobytes() for row in s}) == 64


# With 20,000 samples the total-variation distance of even a perfect sampler is not zero: at
# n = 10, beta = 0.5 it is ~0.036 (see test_sa_cpu.py), so TV < 0.05 leaves little room for bias.
_BOLTZMANN_CASES = [("metropolis", False, 10), ("metropolis", True, 10), ("gibbs", True, 10)]
_samples_cache: dict = {}


def boltzmann_samples(sa, acceptance, sparse, n):
    key = (acceptance, sparse, n)
    if key not in _samples_cache:
        p = IsingProblem.random_sk(n, seed=11, fields=True)
        p = p.to_sparse() if sparse else p
        ss = sa.sample(p, num_reads=20_000, seed=5, mode="sample", beta=0.5, num_sweeps=50,
                       acceptance=acceptance)
        _samples_cache[key] = (p, ss)
    return _samples_cache[key]


@pytest.mark.parametrize("acceptance,sparse,n", _BOLTZMANN_CASES)
def test_sample_mode_matches_exact_boltzmann_distribution(sa, acceptance, sparse, n):
    p, ss = boltzmann_samples(sa, acceptance, sparse, n)
    tv = total_variation(empirical_distribution(p.n, ss.spins), boltzmann_distribution(p, 0.5))
    assert tv < 0.05, f"TV = {tv:.3f}"


def test_a_wrong_temperature_is_detected(sa):
    """The TV check has teeth: samples at beta = 0.5 are far from the beta = 0.75 distribution."""
    p, ss = boltzmann_samples(sa, "metropolis", False, 10)
    emp = empirical_distribution(p.n, ss.spins)
    assert total_variation(emp, boltzmann_distribution(p, 0.75)) > 0.15


def test_dense_and_sparse_differ_only_by_rounding(sa):
    # integer couplings: the two field updates are exact, so every read is identical
    p = integer_problem(40, seed=3, density=0.3)
    a = sa.sample(p, num_reads=16, seed=2, num_sweeps=60)
    b = sa.sample(p.to_sparse(), num_reads=16, seed=2, num_sweeps=60)
    np.testing.assert_array_equal(a.spins, b.spins)
    # real couplings: the sums round differently, which may change a rare decision
    _, dense = boltzmann_samples(sa, "metropolis", False, 10)
    _, sparse = boltzmann_samples(sa, "metropolis", True, 10)
    assert np.mean(np.all(dense.spins == sparse.spins, axis=1)) > 0.99


@pytest.mark.parametrize("sparse", [False, True])
def test_tile_size_changes_no_decision(sparse):
    p = integer_problem(23, seed=4, density=0.5)
    J = p.sparse_J() if sparse else p.J
    keys = _sa_array.read_keys(seed_streams(9, 7))
    betas = make_schedule(p, num_sweeps=15)
    runs = [reference_spins(J, p.h, betas, keys, gibbs=sparse, tile=t) for t in (1, 5, 23, 64)]
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])


def test_reads_do_not_depend_on_num_reads_or_chunking(sa, monkeypatch):
    p = IsingProblem.random_sk(16, seed=2, fields=True)
    full = sa.sample(p, num_reads=12, seed=4, num_sweeps=30)
    head = sa.sample(p, num_reads=5, seed=4, num_sweeps=30)
    np.testing.assert_array_equal(head.spins, full.spins[:5])
    monkeypatch.setitem(SimulatedAnnealingGPU.CHUNK_ELEMENTS, "numpy", 3 * 16)  # 3 reads a chunk
    chunked = sa.sample(p, num_reads=12, seed=4, num_sweeps=30)
    np.testing.assert_array_equal(chunked.spins, full.spins)


@pytest.mark.parametrize("seed", range(4))
def test_anneal_finds_exact_ground_state_for_n_le_12(sa, seed):
    p = IsingProblem.random_sk(12, seed=100 + seed, fields=seed % 2 == 0)
    emin, _ = ground_state(p)
    ss = sa.sample(p, num_reads=20, seed=seed, num_sweeps=500,
                   acceptance="gibbs" if seed == 3 else "metropolis")
    assert ss.best_energy == pytest.approx(emin)


@pytest.mark.parametrize("family,n,index", [
    ("SK1", 20, 0), ("MC50", 30, 1), ("SK1", 50, 1), ("MC50", 60, 2),
    pytest.param("SK1", 100, 0, marks=pytest.mark.slow),
    pytest.param("MC50", 100, 1, marks=pytest.mark.slow),
])
def test_shipped_instances_reach_their_known_ground_energy(sa, family, n, index):
    p = load_instance(family, n, index)
    sweeps = 2000 if n >= 100 else 1000
    ss = sa.sample(p, num_reads=64, seed=0, num_sweeps=sweeps)
    assert ss.best_energy == pytest.approx(ground_energy(family, n, index))


def test_initial_states_and_custom_schedule(sa):
    p = IsingProblem.random_sk(8, seed=2)
    _, states = ground_state(p)
    # at a huge beta no uphill move is accepted, so a read started in the ground state stays there
    ss = sa.sample(p, num_reads=5, seed=0, beta_schedule=np.full(10, 1e6), initial_states=states[0])
    np.testing.assert_array_equal(ss.spins, np.broadcast_to(states[0], (5, 8)))
    # at beta = 0 every Metropolis move is accepted: one sweep flips every spin
    start = np.ones((3, 8), dtype=np.int8)
    ss = sa.sample(p, num_reads=3, seed=0, beta_schedule=[0.0], initial_states=start)
    np.testing.assert_array_equal(ss.spins, -start)
    with pytest.raises(InvalidOptionError, match="initial_states"):
        sa.submit(p, num_reads=2, initial_states=np.zeros((2, 8)))


def test_info_records_backend_and_kernel(sa):
    ss = sa.sample(IsingProblem.random_sk(6, seed=0), num_reads=2, seed=0, num_sweeps=3)
    assert ss.info["backend"] == "numpy" and ss.info["kernel"] == "array"
    assert ss.info["num_sweeps_run"] == 3


@pytest.mark.parametrize(
    "options,msg",
    [({"acceptance": "glauber"}, "acceptance"), ({"mode": "sample"}, "needs beta"),
     ({"mode": "sample", "beta": -1.0}, "beta must be a finite number > 0"), ({"beta_range": (1.0,)}, "pair"),
     ({"beta_schedule": "cosine"}, "beta_schedule"), ({"num_sweeps": 0}, "num_sweeps"),
     ({"beta": 1.0}, "mode='sample'"), ({"backend": "torch"}, "backend"),
     ({"kernel": "magic"}, "kernel"), ({"kernel": "fused"}, "needs backend='cupy'")],
)
def test_bad_option_values_are_rejected_at_submit(sa, options, msg):
    with pytest.raises(InvalidOptionError, match=msg):
        sa.submit(IsingProblem.random_sk(4, seed=0), **options)


def test_cpu_only_options_are_unknown(sa):
    with pytest.raises(kpp_sdk.UnknownOptionError, match="num_threads"):
        sa.submit(IsingProblem.random_sk(4, seed=0), num_threads=2)


# --- availability --------------------------------------------------------------------------


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # "import cupy" now raises ImportError


def test_without_cupy_asking_for_sa_gpu_names_the_gpu_extra(no_cupy):
    with pytest.raises(MissingDependencyError) as err:
        kpp_sdk.get_device("sa.gpu")
    assert err.value.extra == "gpu" and "pip install 'kpp-sdk[gpu]'" in str(err.value)
    with pytest.raises(MissingDependencyError):
        SimulatedAnnealingGPU()  # backend="cupy" is the default
    dev = SimulatedAnnealingGPU(backend="numpy")  # the reference runs anywhere
    with pytest.raises(MissingDependencyError, match=r"kpp-sdk\[gpu\]"):
        dev.submit(IsingProblem.random_sk(4, seed=0), backend="cupy")


def test_without_cupy_kpp_devices_lists_sa_gpu_as_unavailable(no_cupy, capsys):
    from kpp_sdk.cli import main

    row = next(r for r in kpp_sdk.list_devices() if r.name == "sa.gpu")
    assert not row.available and "pip install 'kpp-sdk[gpu]'" in row.reason
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("sa.gpu "))
    assert "unavailable" in line
    assert f"sa.gpu: {row.reason}" in out


def test_cupy_without_a_cuda_device_is_reported_as_unavailable(monkeypatch):
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(CudaUnavailableError) as err:
        require_cuda()
    assert isinstance(err.value, MissingDependencyError)
    assert "no CUDA-capable device" in str(err.value) and "pip install" in str(err.value)
    row = next(r for r in kpp_sdk.list_devices() if r.name == "sa.gpu")
    assert not row.available and "CUDA GPU" in row.reason


# --- the fused kernel without a GPU ---------------------------------------------------------

# The kernel source compiled as C++ with a shim: one std::thread per CUDA thread, blocks one after
# the other, warp intrinsics and __syncthreads as barriers. It checks the kernel's logic (indexing,
# random numbers, thresholds, ballots, the two field layouts, the CSR path), not CUDA itself.
_SHIM = r"""
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>
#include <math.h>

struct uint4 { unsigned int x, y, z, w; };
static inline uint4 make_uint4(unsigned int a, unsigned int b, unsigned int c, unsigned int d) {
    return uint4{a, b, c, d};
}
struct SaDim3 { unsigned int x = 0, y = 1, z = 1; };
thread_local SaDim3 threadIdx, blockIdx, blockDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__
static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
static inline int __ffs(unsigned int x) { return x ? __builtin_ctz(x) + 1 : 0; }
struct SaWarp { std::barrier<> bar{32}; int vote[32]; };
thread_local SaWarp* sa_warp_ctx;
thread_local std::barrier<>* sa_block_bar;
static inline unsigned int __ballot_sync(unsigned int mask, int pred) {
    if (mask != 0xffffffffu) std::abort();
    sa_warp_ctx->vote[threadIdx.x & 31] = pred ? 1 : 0;
    sa_warp_ctx->bar.arrive_and_wait();
    unsigned int r = 0;
    for (int l = 0; l < 32; ++l) r |= (unsigned int)sa_warp_ctx->vote[l] << l;
    sa_warp_ctx->bar.arrive_and_wait();
    return r;
}
static inline void __syncwarp(unsigned int mask = 0xffffffffu) {
    if (mask != 0xffffffffu) std::abort();
    sa_warp_ctx->bar.arrive_and_wait();
}
static inline void __syncthreads() { sa_block_bar->arrive_and_wait(); }
"""

_HARNESS = r"""
static const size_t SA_SMEM_DOUBLES = 1 << 16;
double sa_smem[SA_SMEM_DOUBLES];

template <class T> static std::vector<T> load(const std::string& path) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) { std::fprintf(stderr, "cannot read %s\n", path.c_str()); std::exit(3); }
    const std::streamsize size = in.tellg();
    in.seekg(0);
    std::vector<T> v(size / sizeof(T));
    in.read(reinterpret_cast<char*>(v.data()), size);
    return v;
}
template <class T> static void save(const std::string& path, const std::vector<T>& v) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

int main(int argc, char** argv) {
    if (argc != 12) return 2;
    const std::string dir = argv[1], name = argv[2];
    const int n = std::atoi(argv[3]), R = std::atoi(argv[4]), t0 = std::atoi(argv[5]);
    const int t1 = std::atoi(argv[6]), gibbs = std::atoi(argv[7]), in_shared = std::atoi(argv[8]);
    const int grid = std::atoi(argv[9]), block = std::atoi(argv[10]);
    const size_t smem = std::strtoull(argv[11], nullptr, 10);
    if (smem > sizeof(sa_smem) || block % 32) return 4;
    auto blocks = load<double>(dir + "/blocks.bin");
    auto betas = load<double>(dir + "/betas.bin");
    auto keys = load<unsigned int>(dir + "/keys.bin");
    auto spins = load<signed char>(dir + "/spins.bin");
    auto fields = load<double>(dir + "/fields.bin");
    std::vector<double> Jd;
    std::vector<float> Jf;
    std::vector<long long> indptr;
    std::vector<int> indices;
    std::function<void()> body;
    if (name == "sa_dense_f64") {
        Jd = load<double>(dir + "/J.bin");
        body = [&] { sa_dense_f64(Jd.data(), blocks.data(), betas.data(), keys.data(), spins.data(),
                                  fields.data(), n, R, t0, t1, gibbs, in_shared); };
    } else if (name == "sa_dense_f32") {
        Jf = load<float>(dir + "/J.bin");
        body = [&] { sa_dense_f32(Jf.data(), blocks.data(), betas.data(), keys.data(), spins.data(),
                                  fields.data(), n, R, t0, t1, gibbs, in_shared); };
    } else if (name == "sa_csr_f64") {
        indptr = load<long long>(dir + "/indptr.bin");
        indices = load<int>(dir + "/indices.bin");
        Jd = load<double>(dir + "/J.bin");
        body = [&] { sa_csr_f64(indptr.data(), indices.data(), Jd.data(), blocks.data(),
                                betas.data(), keys.data(), spins.data(), fields.data(), n, R, t0,
                                t1, gibbs, in_shared); };
    } else if (name == "sa_csr_f32") {
        indptr = load<long long>(dir + "/indptr.bin");
        indices = load<int>(dir + "/indices.bin");
        Jf = load<float>(dir + "/J.bin");
        body = [&] { sa_csr_f32(indptr.data(), indices.data(), Jf.data(), blocks.data(),
                                betas.data(), keys.data(), spins.data(), fields.data(), n, R, t0,
                                t1, gibbs, in_shared); };
    } else {
        return 5;
    }
    for (int b = 0; b < grid; ++b) {
        // shared memory starts as NaN: reading a slot nobody wrote poisons the fields
        for (size_t e = 0; e < SA_SMEM_DOUBLES; ++e) sa_smem[e] = std::nan("");
        std::barrier<> block_bar(block);
        std::vector<std::unique_ptr<SaWarp>> warps;
        for (int w = 0; w < block / 32; ++w) warps.push_back(std::make_unique<SaWarp>());
        std::vector<std::thread> threads;
        for (int t = 0; t < block; ++t)
            threads.emplace_back([&, t] {
                threadIdx.x = t;
                blockIdx.x = b;
                blockDim.x = block;
                sa_warp_ctx = warps[t / 32].get();
                sa_block_bar = &block_bar;
                body();
            });
        for (auto& th : threads) th.join();
    }
    save(dir + "/spins.bin", spins);
    save(dir + "/fields.bin", fields);
    return 0;
}
"""


def _cxx20_with_barrier(cxx, tmp):
    probe = tmp / "probe.cpp"
    probe.write_text("#include <barrier>\n"
                     "int main() { std::barrier<> b(1); b.arrive_and_wait(); }\n")
    r = subprocess.run([cxx, "-std=c++20", "-pthread", "-o", str(tmp / "probe"), str(probe)],
                       check=False, capture_output=True, timeout=120)
    return r.returncode == 0


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("clang++")
    tmp = tmp_path_factory.mktemp("sa_cuda_emulator")
    if cxx is None or not _cxx20_with_barrier(cxx, tmp):
        pytest.skip("no C++20 compiler with <barrier> (g++ >= 11) to emulate the CUDA kernel")
    src = tmp / "emulated_kernel.cpp"
    src.write_text(_SHIM + _sa_cuda.SOURCE + _HARNESS)
    exe = tmp / "emulated_kernel"
    r = subprocess.run([cxx, "-std=c++20", "-O1", "-pthread", "-Wno-unknown-pragmas",
                        "-o", str(exe), str(src)],
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"the kernel source does not compile as C++:\n{r.stderr[-3000:]}"
    return exe


def run_emulated(exe, workdir, name, J, betas, keys, S, F, *, gibbs, max_shared_bytes, warps):
    """Launch the kernel as FusedAnnealer.run does, on the CPU; returns (spins, fields, plan)."""
    R, n = S.shape
    plan = _sa_cuda.plan_launch(n, R, len(betas), max_shared_bytes=max_shared_bytes,
                                warps_per_block=warps)
    tj = np.float32 if name.endswith("f32") else np.float64
    _sa_array.diagonal_blocks(J, _sa_cuda.TILE).tofile(workdir / "blocks.bin")
    np.asarray(betas, dtype=np.float64).tofile(workdir / "betas.bin")
    keys.tofile(workdir / "keys.bin")
    S.tofile(workdir / "spins.bin")
    F.tofile(workdir / "fields.bin")
    if sp.issparse(J):
        Jc = sp.csr_matrix(J)
        Jc.indptr.astype(np.int64).tofile(workdir / "indptr.bin")
        Jc.indices.astype(np.int32).tofile(workdir / "indices.bin")
        Jc.data.astype(tj).tofile(workdir / "J.bin")
    else:
        np.ascontiguousarray(J, dtype=tj).tofile(workdir / "J.bin")
    for t0 in range(0, len(betas), plan.sweeps_per_launch):
        t1 = min(len(betas), t0 + plan.sweeps_per_launch)
        subprocess.run([str(exe), str(workdir), name, str(n), str(R), str(t0), str(t1),
                        str(int(gibbs)), str(int(plan.fields_in_shared)), str(plan.blocks),
                        str(32 * plan.warps_per_block), str(plan.shared_bytes)],
                       check=True, timeout=120)
    spins = np.fromfile(workdir / "spins.bin", dtype=np.int8).reshape(R, n)
    return spins, np.fromfile(workdir / "fields.bin").reshape(R, n), plan


# n = 45: one full tile and a partial one. 7 reads in blocks of 1, 2 or 4 warps: the last block has
# idle warps; 4 warps (128 threads) prefetch the whole tile block, fewer load part of it late.
# max_shared_bytes 48 KiB keeps the fields in shared memory, 8,300 B forces global memory.
@pytest.mark.parametrize("name,gibbs,max_shared,warps", [
    ("sa_dense_f64", False, 48 * 1024, 4), ("sa_dense_f32", True, 8300, 2),
    ("sa_csr_f64", True, 48 * 1024, 1), ("sa_csr_f32", False, 8300, 4),
])
def test_fused_kernel_matches_array_reference_in_cpu_emulation(emulator, tmp_path, name, gibbs,
                                                               max_shared, warps):
    sparse = name.startswith("sa_csr")
    p = integer_problem(45, seed=3, density=0.3 if sparse else 1.0)
    J = p.sparse_J() if sparse else p.J
    keys = _sa_array.read_keys(seed_streams(7, 7))
    betas = make_schedule(p, num_sweeps=8)
    S, F = _sa_array.initial_state(NUMPY, J, p.h, keys, None)
    want = _sa_array.sweep_array(NUMPY, J, betas, keys, S.copy(), F.copy(), gibbs=gibbs, tile=16)
    got, fields, plan = run_emulated(emulator, tmp_path, name, J, betas, keys, S, F, gibbs=gibbs,
                                     max_shared_bytes=max_shared, warps=warps)
    assert plan.fields_in_shared == (max_shared > 9000) and plan.warps_per_block == warps
    assert (got != S).sum() > 50, "too few flips for the comparison to mean anything"
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(fields, p.local_fields(got))  # the kernel's fields stay exact


def test_fused_kernel_source_compiles_with_nvcc(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found (the CUDA toolkit compiles the kernel without a GPU)")
    src = tmp_path / "sa.cu"
    src.write_text(_sa_cuda.SOURCE)
    r = subprocess.run([nvcc, "-arch=sm_80", "-cubin", "-Xptxas", "-warn-spills",
                        "-o", str(tmp_path / "sa.cubin"), str(src)],
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "spill" not in r.stderr.lower(), r.stderr


def test_launch_plan_fills_the_gpu_and_keeps_fields_in_shared_memory_while_they_fit():
    # 1,024 reads on 132 multiprocessors: 7 reads a block, 147 blocks, fields in (opt-in) shared
    # memory
    plan = _sa_cuda.plan_launch(1000, 1024, 1000, max_shared_bytes=227 * 1024, num_sms=132)
    assert plan.fields_in_shared and plan.warps_per_block == 7 and plan.blocks == 147
    assert plan.shared_bytes == 32 * 32 * 8 + 7 * (8 * 1000 + 8)
    assert plan.sweeps_per_launch == 1000
    # few reads: one per block, so they spread over the multiprocessors
    few = _sa_cuda.plan_launch(1000, 100, 10, max_shared_bytes=227 * 1024, num_sms=132)
    assert few.warps_per_block == 1 and few.blocks == 100
    # without opt-in shared memory, 48 KiB holds the tile block and 5 reads of n = 1000
    plan = _sa_cuda.plan_launch(1000, 10_000, 10, max_shared_bytes=48 * 1024, num_sms=100)
    assert plan.fields_in_shared and plan.warps_per_block == 5 and plan.shared_bytes <= 48 * 1024
    big = _sa_cuda.plan_launch(100_000, 4096, 3, max_shared_bytes=227 * 1024, num_sms=132)
    assert not big.fields_in_shared and big.warps_per_block == 8
    assert big.shared_bytes == 32 * 32 * 8 + 8 * 8
    many = _sa_cuda.plan_launch(1000, 100_000, 1000, max_shared_bytes=48 * 1024)
    assert many.sweeps_per_launch == _sa_cuda.LAUNCH_WORK // (100_000 * 1000)


def test_float32_couplings_are_used_only_when_exact():
    assert _sa_cuda.float32_exact(integer_problem(6, seed=0).J)
    assert _sa_cuda.float32_exact(integer_problem(6, seed=0).sparse_J())
    assert not _sa_cuda.float32_exact(IsingProblem.random_sk(6, seed=0).J)
    assert not _sa_cuda.float32_exact(np.array([[0.0, 1e300], [1e300, 0.0]]))


# --- the CuPy code path without a GPU --------------------------------------------------------

_C_TYPES = {"double*": "float64", "float*": "float32", "long long*": "int64", "int*": "int32",
            "unsigned int*": "uint32", "signed char*": "int8", "int": "int32"}


def kernel_signatures(source):
    """``{kernel: ["name:dtype", ...]}`` parsed from the CUDA source: the arguments, in order, that
    FusedAnnealer must pass."""
    common = re.search(r"#define SA_COMMON_PARAMS(.*?)\n#define", source, re.DOTALL).group(1)
    common = common.replace("\\", " ")
    out = {}
    for name, params in re.findall(r'extern "C" __global__ void (\w+)\((.*?)\)', source, re.DOTALL):
        sig = []
        for param in params.replace("SA_COMMON_PARAMS", common).split(","):
            words = param.replace("const", " ").replace("__restrict__", " ")
            words = words.replace("*", " * ").split()
            ctype = " ".join(words[:-1]).replace(" *", "*")
            sig.append(f"{words[-1]}:{_C_TYPES[ctype]}")
        out[name] = sig
    return out


_SIGNATURES = kernel_signatures(_sa_cuda.SOURCE)


def test_kernel_signatures_are_parsed():
    assert sorted(_SIGNATURES) == sorted(_sa_cuda.KERNEL_NAMES)
    assert _SIGNATURES["sa_csr_f32"][:4] == ["indptr:int64", "indices:int32", "data:float32",
                                             "blocks:float64"]
    assert _SIGNATURES["sa_dense_f64"][-7:] == ["fields:float64", "n:int32", "num_reads:int32",
                                                "t_begin:int32", "t_end:int32", "gibbs:int32",
                                                "fields_in_shared:int32"]


class _EmulatedKernel:
    """Stands in for a cupy.RawKernel: checks the arguments against the kernel's signature and runs
    the CPU emulation of the kernel on them, in place."""

    def __init__(self, exe, workdir, name):
        self.exe, self.workdir, self.name = exe, workdir, name
        self.max_dynamic_shared_size_bytes = 48 * 1024
        self.launches = []

    def __call__(self, grid, block, args, *, shared_mem=0):
        sig = _SIGNATURES[self.name]
        assert len(args) == len(sig), f"{self.name} takes {len(sig)} arguments, got {len(args)}"
        named = {}
        for spec, a in zip(sig, args):
            key, dtype = spec.split(":")
            assert np.dtype(a.dtype) == np.dtype(dtype), f"{key}: {a.dtype}, kernel wants {dtype}"
            named[key] = a
        assert shared_mem <= self.max_dynamic_shared_size_bytes, "shared memory over the limit"
        R, n = named["spins"].shape
        assert named["fields"].shape == (R, n) and named["keys"].shape == (R, 2)
        assert int(named["n"]) == n and int(named["num_reads"]) == R
        assert block[0] % 32 == 0 and grid[0] * (block[0] // 32) >= R
        named.setdefault("J", named.get("data"))  # the harness reads J or CSR data from J.bin
        for key in ("blocks", "betas", "keys", "spins", "fields", "J", "indptr", "indices"):
            if key in named:
                named[key].tofile(self.workdir / f"{key}.bin")
        subprocess.run([str(self.exe), str(self.workdir), self.name, str(n), str(R),
                        str(int(named["t_begin"])), str(int(named["t_end"])),
                        str(int(named["gibbs"])), str(int(named["fields_in_shared"])),
                        str(grid[0]), str(block[0]),
                        str(shared_mem)], check=True, timeout=120)
        named["spins"][...] = np.fromfile(self.workdir / "spins.bin", dtype=np.int8).reshape(R, n)
        named["fields"][...] = np.fromfile(self.workdir / "fields.bin").reshape(R, n)
        self.launches.append((grid, block, shared_mem))


@pytest.fixture
def numpy_as_cupy(monkeypatch, emulator, tmp_path):
    """A stand-in ``cupy`` whose arrays are NumPy arrays and whose RawModule runs the emulated
    kernel: drives every Python line of the CuPy path (device, array code, launcher)."""
    kernels = {}

    class FakeModule:
        def __init__(self, code):
            assert code == _sa_cuda.SOURCE

        def get_function(self, name):
            return kernels.setdefault(name, _EmulatedKernel(emulator, tmp_path, name))

    cupy = types.ModuleType("cupy")
    cupy.__getattr__ = lambda attr: getattr(np, attr)
    cupy.RawModule = lambda code, **kw: FakeModule(code)
    device = types.SimpleNamespace(id=0, attributes={"MaxSharedMemoryPerBlockOptin": 99 * 1024,
                                                     "MultiProcessorCount": 2})
    cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1,
                                      getDeviceProperties=lambda i: {"name": b"emulated"}),
        Device=lambda *a: device,
        get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None),
    )
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    cupyx.scipy.sparse = sp
    for name, mod in {"cupy": cupy, "cupyx": cupyx, "cupyx.scipy": cupyx.scipy,
                      "cupyx.scipy.sparse": sp}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    _sa_cuda._module.cache_clear()
    yield kernels
    _sa_cuda._module.cache_clear()


@pytest.mark.parametrize("sparse", [False, True])
def test_cupy_path_drives_the_fused_kernel_like_the_reference(numpy_as_cupy, sparse):
    p = integer_problem(40, seed=5, density=0.3 if sparse else 1.0)
    p = p.to_sparse() if sparse else p
    opts = {"num_reads": 5, "seed": 8, "num_sweeps": 6,
            "acceptance": "gibbs" if sparse else "metropolis"}
    want = SimulatedAnnealingGPU(backend="numpy").sample(p, **opts)
    dev = kpp_sdk.get_device("sa.gpu")  # backend="cupy": the stand-in passes the CUDA check
    ss = dev.sample(p, **opts)
    assert ss.info["backend"] == "cupy" and ss.info["kernel"] == "fused"
    assert ss.info["coupling_dtype"] == "float32" and ss.info["gpu"] == "emulated"
    np.testing.assert_array_equal(ss.spins, want.spins)
    (kernel,) = numpy_as_cupy.values()
    assert kernel.name == ("sa_csr_f32" if sparse else "sa_dense_f32")
    # 5 reads on 2 multiprocessors: 2 reads (warps) a block, 3 blocks
    assert kernel.launches == [((3,), (64,), 32 * 32 * 8 + 2 * (8 * 40 + 8))]
    np.testing.assert_array_equal(dev.sample(p, kernel="array", **opts).spins, want.spins)


def test_cupy_path_with_real_couplings_and_initial_states(numpy_as_cupy):
    p = IsingProblem.random_sk(12, seed=6, fields=True)
    opts = {"num_reads": 3, "seed": 0, "num_sweeps": 30, "initial_states": np.ones(12, np.int8)}
    ss = kpp_sdk.get_device("sa.gpu").sample(p, **opts)
    assert ss.info["coupling_dtype"] == "float64" and numpy_as_cupy["sa_dense_f64"].launches
    # fields are summed in another order than in the reference; only a tie within rounding
    # (probability ~1e-15 per decision) could change a decision
    want = SimulatedAnnealingGPU(backend="numpy").sample(p, **opts)
    np.testing.assert_array_equal(ss.spins, want.spins)


# --- on a GPU ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cuda():
    try:
        return require_cuda()
    except MissingDependencyError as exc:
        pytest.skip(f"no CUDA: {exc}")


@pytest.fixture(scope="module")
def sa_gpu(cuda):
    return kpp_sdk.get_device("sa.gpu")


@pytest.mark.gpu
class TestSAGPUOnCudaConformance(DeviceConformance):
    fast_options = {"num_sweeps": 50}

    def make_device(self):
        try:
            require_cuda()
        except MissingDependencyError as exc:
            pytest.skip(f"no CUDA: {exc}")
        return kpp_sdk.get_device("sa.gpu")


@pytest.mark.gpu
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("acceptance", ["metropolis", "gibbs"])
def test_gpu_fused_and_array_kernels_match_numpy_reference_bit_for_bit(sa_gpu, sparse, acceptance):
    p = integer_problem(150, seed=8, density=0.1 if sparse else 1.0)
    p = p.to_sparse() if sparse else p
    opts = {"num_reads": 37, "seed": 3, "num_sweeps": 40, "acceptance": acceptance}
    want = SimulatedAnnealingGPU(backend="numpy").sample(p, **opts)
    fused = sa_gpu.sample(p, kernel="fused", **opts)
    array = sa_gpu.sample(p, kernel="array", **opts)
    assert fused.info["kernel"] == "fused" and fused.info["coupling_dtype"] == "float32"
    np.testing.assert_array_equal(fused.spins, want.spins)
    np.testing.assert_array_equal(array.spins, want.spins)


def sparse_integer_problem(n, seed, per_row=6):
    rng = np.random.default_rng(seed)
    m = n * per_row // 2
    rows, cols = rng.integers(0, n, size=m), rng.integers(0, n, size=m)
    keep = rows != cols
    vals = rng.choice([-1.0, 1.0], size=keep.sum())
    W = sp.coo_matrix((vals, (rows[keep], cols[keep])), shape=(n, n)).tocsr()
    W.data[:] = np.sign(W.data)  # duplicate pairs were summed: back to +-1 (or 0)
    W.eliminate_zeros()
    J = sp.triu(W, 1)
    return IsingProblem((J + J.T).tocsr(), rng.integers(-2, 3, size=n).astype(float))


@pytest.mark.gpu
@pytest.mark.parametrize("n", [7_000, 40_000])
def test_gpu_large_problems_match_reference(sa_gpu, n):
    # n = 7,000: a read's fields (56 kB) need more than the default 48 kB of shared memory (opt-in);
    # n = 40,000 (320 kB) fit no GPU's shared memory: the fields live in global memory
    p = sparse_integer_problem(n, seed=1)
    opts = {"num_reads": 6, "seed": 1, "num_sweeps": 2}
    want = SimulatedAnnealingGPU(backend="numpy").sample(p, **opts)
    np.testing.assert_array_equal(sa_gpu.sample(p, **opts).spins, want.spins)


@pytest.mark.gpu
@pytest.mark.parametrize("acceptance", ["metropolis", "gibbs"])
def test_gpu_sample_mode_matches_exact_boltzmann_distribution(sa_gpu, acceptance):
    p = IsingProblem.random_sk(10, seed=11, fields=True)
    ss = sa_gpu.sample(p, num_reads=20_000, seed=5, mode="sample", beta=0.5, num_sweeps=100,
                       acceptance=acceptance)
    emp = empirical_distribution(10, ss.spins)
    assert total_variation(emp, boltzmann_distribution(p, 0.5)) < 0.05


@pytest.mark.gpu
@pytest.mark.parametrize("sparse", [False, True])
def test_gpu_energy_distribution_matches_sa_cpu(sa_gpu, sparse):
    from scipy.stats import ks_2samp

    p = IsingProblem.random_sk(64, seed=21, fields=True)
    p = p.to_sparse() if sparse else p
    opts = {"num_reads": 4000, "num_sweeps": 100}
    gpu = sa_gpu.sample(p, seed=1, **opts).energies
    cpu = kpp_sdk.get_device("sa.cpu").sample(p, seed=2, **opts).energies
    # the same annealer with different random numbers: one energy distribution
    assert ks_2samp(gpu, cpu).pvalue > 1e-3
    assert abs(gpu.mean() - cpu.mean()) < 4 * np.hypot(gpu.std(), cpu.std()) / np.sqrt(4000)


@pytest.mark.gpu
def test_gpu_same_seed_same_samples_and_reads_differ(sa_gpu):
    p = IsingProblem.random_sk(300, seed=5)
    a = sa_gpu.sample(p, num_reads=256, seed=9, num_sweeps=50)
    b = sa_gpu.sample(p, num_reads=256, seed=9, num_sweeps=50)
    c = sa_gpu.sample(p, num_reads=256, seed=10, num_sweeps=50)
    np.testing.assert_array_equal(a.spins, b.spins)
    assert not np.array_equal(a.spins, c.spins)
    assert len(a.unique()) == 256


@pytest.mark.gpu
def test_gpu_finds_ground_energy_of_shipped_instance(sa_gpu):
    p = load_instance("SK1", 100, 0)
    assert sa_gpu.sample(p, num_reads=256, seed=0, num_sweeps=2000).best_energy == pytest.approx(
        ground_energy("SK1", 100, 0))
