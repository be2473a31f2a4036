import json
import os

import numpy as np
import pytest
import scipy.sparse as sp

from kpp_sdk import IsingProblem, ProblemFormatError
from kpp_sdk.exact import all_states


@pytest.mark.parametrize("suffix", [".npz", ".json"])
@pytest.mark.parametrize("sparse", [False, True])
def test_save_load_round_trip(tmp_path, suffix, sparse):
    p = IsingProblem.random_sk(9, seed=2, fields=True)
    p = IsingProblem(p.J, p.h, offset=-1.25)
    if sparse:
        p = p.to_sparse()
    path = tmp_path / f"p{suffix}"
    p.save(path)
    q = IsingProblem.load(path)
    assert q == p
    assert q.is_sparse == sparse


def test_rudy_round_trip_and_maxcut_convention(tmp_path):
    W = np.zeros((5, 5))
    for i, j in [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0)]:
        W[i, j] = W[j, i] = 1
    path = tmp_path / "c5.txt"
    path.write_text("5 5\n1 2 1\n2 3 1\n3 4 1\n4 5 1\n5 1 1\n")
    p = IsingProblem.load(path)
    s = all_states(5)
    cut = np.array([sum(W[i, j] for i in range(5) for j in range(i + 1, 5) if a[i] != a[j]) for a in s])
    np.testing.assert_allclose((W.sum() / 2 - p.energy(s)) / 2, cut)
    assert cut.max() == 4  # odd cycle
    p.save(tmp_path / "again.rudy")
    assert IsingProblem.load(tmp_path / "again.rudy") == p


def test_shared_gset_files_load(cim_instances):
    for name, n, m in [("G1", 800, 19176), ("G2", 800, 19176), ("G42", 2000, 11779), ("G70", 10000, 9999)]:
        p = IsingProblem.load(cim_instances / "Gset" / f"{name}.txt")
        assert p.n == n and p.is_sparse
        assert p.J.nnz == 2 * m


def test_shared_npz_instances_use_cim_optimizer_convention(cim_instances):
    """SOURCE.txt: J = -W and the listed ground energies hold; verified by enumeration at n = 10."""
    for family, folder, index, ground_index in [("SK1", "SK", 0, 0), ("MC50", "MC50", 1, 0)]:
        p = IsingProblem.load(cim_instances / folder / f"{family}_N=10_{index}.npz")
        ground = np.load(cim_instances / folder / f"{family}_N=10_ground_energies.npz")
        ground = ground if isinstance(ground, np.ndarray) else ground["arr_0"]
        assert p.energy(all_states(10)).min() == pytest.approx(float(ground[ground_index]))


@pytest.mark.parametrize(
    "name,content,msg",
    [
        ("bad.txt", "3 2\n1 2 1\n", "header says 2 edges"),
        ("bad2.txt", "3 1\n1 9 1\n", "out of range"),
        ("bad3.txt", "x y\n", "header"),
        ("bad4.txt", "3 1\n1 1 1\n", "self-loop"),
        ("bad.json", "{not json", "not valid JSON"),
        ("bad2.json", json.dumps({"format": "other"}), "not a kpp problem"),
        ("bad3.json", json.dumps({"format": "kpp-ising", "version": 1, "n": 3, "J": {"upper": [1]}}),
         "needs 3"),
        ("bad.npz", "not a zip file", "not a readable"),
        ("p.csv", "1,2", "unknown problem file type"),
    ],
)
def test_malformed_files_raise_format_errors_naming_the_file(tmp_path, name, content, msg):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ProblemFormatError, match=msg) as info:
        IsingProblem.load(path)
    assert name in str(info.value)


def test_failed_save_leaves_no_partial_file(tmp_path):
    p = IsingProblem(np.zeros((2, 2)), [1.0, 0.0])
    target = tmp_path / "graph.txt"
    target.write_text("old content")
    with pytest.raises(Exception, match="fields"):
        p.save(target)  # a rudy edge list cannot hold fields
    assert target.read_text() == "old content"
    assert os.listdir(tmp_path) == ["graph.txt"]


def test_sparse_npz_keeps_sparsity(tmp_path):
    J = sp.random(50, 50, density=0.05, random_state=0)
    J = J + J.T
    J.setdiag(0)
    p = IsingProblem(J)
    p.save(tmp_path / "s.npz")
    assert IsingProblem.load(tmp_path / "s.npz").is_sparse
