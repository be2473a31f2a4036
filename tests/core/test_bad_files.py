"""Hostile and damaged problem files (issue 17, items 6 and 8): every defect is one line and exit
2 from ``kpp sample``, sizes a file claims are checked before anything is allocated, and nothing is
changed silently (fractional indices, duplicate or lower-triangle pairs, complex or overflowing
coefficients)."""

import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from kpp_sdk import IsingProblem, NonFiniteError, ProblemError
from kpp_sdk.cli import main
from kpp_sdk.io import MAX_ISOLATED_SPINS


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy_with_header(shape, data: bytes = b"") -> bytes:
    """An .npy whose header claims ``shape`` (float64) followed by ``data``."""
    buf = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + data


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _good_sparse_json() -> dict:
    return IsingProblem.random_sk(5, seed=1).to_sparse().to_json_dict()


def _json_with(**changes) -> str:
    d = _good_sparse_json()
    for path, value in changes.items():
        target = d
        keys = path.split("__")
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return json.dumps(d)


# (file name, bytes, text the one-line message must contain); each reproduced a traceback, an exit
# status 1, a silent change, or a huge allocation before this branch
BAD_FILES = [
    ("truncated.npz", _npz_bytes(J=np.zeros((4, 4)))[:-40], "not a readable .npz"),
    ("offset_array.npz", _npz_bytes(J=np.zeros((3, 3)), offset=np.arange(3.0)), "'offset'"),
    ("huge_index.txt", b"3 1\n1 99999999999999999999999 1\n", "vertex out of range"),
    ("deep.json", _nested(100_000).encode(), "nested too deeply"),
    ("huge_header.txt", b"100000000000 1\n1 2 1\n", "isolated vertices"),
    ("big_header.txt", b"200000000 1\n1 2 1\n", "isolated vertices"),
    ("claims_edges.txt", b"3 1000000\n1 2 1\n", "at most"),
    ("bare_huge.npy", _npy_with_header((100_000, 100_000)), "truncated or corrupt"),
    ("member_huge.npz", None, "truncated or corrupt"),  # built in the test: a lying .npy member
    ("csr_shape.npz", _npz_bytes(J_data=np.ones(0), J_indices=np.zeros(0, np.int32),
                                 J_indptr=np.zeros(3, np.int32),
                                 J_shape=np.array([10**9, 10**9])), "'J_indptr' has 3"),
    ("complex.npz", _npz_bytes(J=np.array([[0, 1 + 2j], [1 - 2j, 0]])), "complex"),
    ("fractional_n.json", _json_with(n=5.5).encode(), "n must be an integer"),
    ("fractional_index.json", _json_with(J__i=[0.7, 0, 0, 0, 1, 1, 1, 2, 2, 3]).encode(),
     "not an integer index"),
    ("lower.json", _json_with(J__i=[1], J__j=[0], J__v=[1.0]).encode(), "lower triangle"),
    ("duplicate.json", _json_with(J__i=[0, 0], J__j=[1, 1], J__v=[1.0, 2.0]).encode(),
     "listed twice"),
    ("duplicate_edge.txt", b"3 2\n1 2 1\n2 1 5\n", "listed again"),
    ("huge_n.json", _json_with(n=10**12, h=None).encode(), "corrupt file"),
    ("overflow.json", json.dumps({"format": "kpp-ising", "version": 1, "n": 2,
                                  "J": {"upper": [1e308]}, "h": [0, 0]}).encode(),
     "overflow float64"),
    ("nan_weight.txt", b"2 1\n1 2 nan\n", "not finite"),
    ("extra_field.txt", b"2 1\n1 2 1 7\n", "expected 'i j w'"),
    ("not_utf8.txt", b"2 1\n1 2 \xff\xfe\n", "malformed"),
]


def _lying_member() -> bytes:
    """A zip whose J.npy header claims 10^10 float64 but holds 8 bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("J.npy", _npy_with_header((100_000, 100_000), b"\0" * 8))
    return buf.getvalue()


@pytest.mark.parametrize("name,content,msg", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_kpp_sample_on_a_bad_file_is_one_line_exit_2_without_allocating(tmp_path, capsys, name,
                                                                       content, msg):
    path = tmp_path / name
    path.write_bytes(_lying_member() if content is None else content)
    tracemalloc.start()
    try:
        code = main(["sample", str(path), "--num-reads", "2", "-o", "num_sweeps=10"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert msg in err and name in err, err
    # the largest claim above is 10^10 doubles; nothing near that may be allocated
    assert peak < 64 * 2**20, f"{name}: {peak / 2**20:.0f} MiB allocated while refusing it"


def test_loader_errors_are_problem_errors(tmp_path):
    for name, content, _msg in BAD_FILES:
        path = tmp_path / name
        path.write_bytes(_lying_member() if content is None else content)
        with pytest.raises(ProblemError):
            IsingProblem.load(path)


def test_good_files_still_load_and_round_trip(tmp_path):
    p = IsingProblem.random_sk(7, seed=4, fields=True)
    for suffix, q in ((".npz", p), (".npz", p.to_sparse()), (".json", p), (".json", p.to_sparse())):
        path = tmp_path / f"p{suffix}"
        q.save(path)
        assert IsingProblem.load(path) == q
    path = tmp_path / "m.npy"
    np.save(path, np.ones((3, 3)) - np.eye(3))
    assert IsingProblem.load(path).n == 3
    # integral floats are integers (nothing is rounded); an isolated vertex is fine
    d = _good_sparse_json()
    d["n"] = 6.0
    d["h"] = None
    assert IsingProblem.from_json_dict(d).n == 6
    rudy = tmp_path / "g.txt"
    rudy.write_text(f"{MAX_ISOLATED_SPINS} 1\n1 2 1.5\n")
    assert IsingProblem.load(rudy).n == MAX_ISOLATED_SPINS


def test_complex_with_zero_imaginary_part_is_taken_and_nonzero_is_refused():
    J = np.array([[0, 2 + 0j], [2 + 0j, 0]])
    assert IsingProblem(J).J[0, 1] == 2.0
    with pytest.raises(ProblemError, match="imaginary"):
        IsingProblem(J + 1j * np.array([[0, 1], [1, 0]]))
    with pytest.raises(ProblemError, match="imaginary"):
        IsingProblem(sp.csr_matrix(J + 1j * np.array([[0, 1], [1, 0]])))
    with pytest.raises(ProblemError, match="h is complex"):
        IsingProblem(np.zeros((2, 2)), h=[0, 1j])


def test_coefficients_near_the_float_maximum_are_exact_or_refused():
    # symmetrising no longer overflows: a symmetric 1e300 stays 1e300 and its energy is finite
    p = IsingProblem(np.array([[0, 1e300], [1e300, 0]]))
    assert p.J[0, 1] == 1e300 and np.isfinite(p.energy([1, -1]))
    # within the symmetry tolerance, the average of the halves, not inf
    q = IsingProblem(np.array([[0.0, 1e300], [1e300 * (1 + 1e-12), 0.0]]))
    assert np.isfinite(q.J).all()
    for J in (np.array([[0, 9e307], [9e307, 0]]), np.array([[0, 1.7e308], [1.7e308, 0]])):
        with pytest.raises(NonFiniteError, match="overflow"):
            IsingProblem(J)
        with pytest.raises(NonFiniteError, match="overflow"):
            IsingProblem(sp.csr_matrix(J))


def test_energies_of_many_samples_are_computed_in_bounded_blocks():
    from kpp_sdk import problem as problem_module

    BLOCK_ELEMENTS = problem_module.BLOCK_ELEMENTS
    n = 1000
    A = sp.triu(sp.random(n, n, density=0.004, random_state=1, format="csr"), k=1)
    p = IsingProblem((A + A.T).tocsr())
    rng = np.random.default_rng(3)
    s = rng.choice(np.array([-1, 1], dtype=np.int8), size=(3000, n))
    ref = np.concatenate([p.energy(s[k:k + 100]) for k in range(0, 3000, 100)])
    tracemalloc.start()
    e = p.energy(s)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_allclose(e, ref, rtol=1e-12, atol=1e-9)
    # unblocked: the float64 spins, their transposed copy for the sparse product and J s are
    # 3 x 8 x 3000 x 1000 = 72 MB; in blocks of 2^20 spins, about 4 x 8 MiB
    assert BLOCK_ELEMENTS <= 1 << 20 and peak < 40 * 2**20, peak
