import json

import numpy as np
import pytest

from kpp_sdk import InvalidSpinsError, IsingProblem, SampleSet, SampleSetError, SizeMismatchError


@pytest.fixture
def problem():
    return IsingProblem.random_sk(6, seed=4, fields=True)


@pytest.fixture
def ss(problem):
    rng = np.random.default_rng(0)
    spins = rng.choice([-1, 1], size=(40, 6)).astype(np.int8)
    return SampleSet(problem, spins, timing={"device_s": 0.5}, info={"device": "x"}, job_id="j1")


def test_energies_are_recomputed_not_trusted(problem, ss):
    np.testing.assert_allclose(ss.energies, problem.energy(ss.spins))
    assert ss.spins.dtype == np.int8 and not ss.spins.flags.writeable


def test_truncate_sorts_and_keeps_duplicates(ss):
    low = ss.truncate(10)
    assert len(low) == 10
    assert np.all(np.diff(low.energies) >= 0)
    assert low.energies[0] == ss.energies.min()
    assert len(ss.truncate()) == len(ss)


def test_lowest_and_first_mean_what_they_mean_in_dimod(problem):
    dimod = pytest.importorskip("dimod")
    rng = np.random.default_rng(3)
    spins = rng.choice([-1, 1], size=(60, 6)).astype(np.int8)
    spins[[5, 17, 40]] = spins[np.argmin(problem.energy(spins))]  # several rows at the minimum
    ours = SampleSet(problem, spins)
    theirs = dimod.SampleSet.from_samples(spins, dimod.SPIN, energy=problem.energy(spins))
    assert sorted(ours.lowest().energies) == sorted(theirs.lowest().record.energy)
    assert len(ours.lowest()) == len(theirs.lowest()) >= 4
    assert ours.first.energy == theirs.first.energy
    agg = ours.aggregate()
    assert [tuple(r) for r in agg.spins] == [tuple(r) for r in
                                             theirs.aggregate().record.sample]
    with pytest.warns(DeprecationWarning, match="truncate"):
        assert len(ours.lowest(7)) == 7


def test_unique_sums_occurrences_and_top_k_deduplicates(problem):
    s = np.array([[1] * 6, [1] * 6, [-1] * 6, [1, -1, 1, -1, 1, -1]], dtype=np.int8)
    ss = SampleSet(problem, s, [2, 3, 1, 4])
    u = ss.unique()
    assert len(u) == 3 and u.num_reads == ss.num_reads == 10
    row = np.flatnonzero((u.spins == 1).all(axis=1))[0]
    assert u.num_occurrences[row] == 5
    assert np.all(np.diff(u.energies) >= 0)
    t = ss.top_k(2)
    assert len(t) == 2 and len(np.unique(t.spins, axis=0)) == 2
    assert t.energies[0] == ss.energies.min()


@pytest.mark.parametrize("compact", [True, False])
def test_dict_and_json_round_trip(problem, ss, compact):
    d = json.loads(json.dumps(ss.to_dict(compact=compact)))
    back = SampleSet.from_dict(d, problem)
    np.testing.assert_array_equal(back.spins, ss.spins)
    np.testing.assert_array_equal(back.energies, ss.energies)
    assert back.timing == ss.timing and back.info == ss.info and back.job_id == "j1"
    assert SampleSet.from_json(ss.to_json(), problem).num_reads == ss.num_reads


def test_from_dict_with_the_wrong_problem_is_caught(ss):
    other = IsingProblem.random_sk(6, seed=99, fields=True)
    with pytest.raises(SampleSetError, match="different problem"):
        SampleSet.from_dict(ss.to_dict(), other)
    with pytest.raises(SizeMismatchError, match="7"):
        SampleSet.from_dict(ss.to_dict(), IsingProblem.random_sk(7, seed=0))


def test_bad_spins_and_occurrences_rejected(problem):
    with pytest.raises(InvalidSpinsError):
        SampleSet(problem, np.zeros((2, 6)))
    with pytest.raises(SizeMismatchError):
        SampleSet(problem, np.ones((2, 6)), [1])
    with pytest.raises(SampleSetError, match=">= 1"):
        SampleSet(problem, np.ones((2, 6)), [1, 0])
    with pytest.raises(SampleSetError, match="nothing to concatenate"):
        SampleSet.concatenate([])


def test_binary_view(problem):
    ss = SampleSet(problem, np.array([[1, -1, 1, -1, 1, -1]]))
    np.testing.assert_array_equal(ss.binary(), [[1, 0, 1, 0, 1, 0]])
