"""dimod interop (``pip install 'kpp-sdk[dimod]'``): any Device as a ``dimod.Sampler`` and
SampleSets to and from dimod's.

dimod's Ising convention is ``E = sum_i h_i s_i + sum_{i<j} J_ij s_i s_j + offset``; ours is
``E = -1/2 s^T J s - h^T s + offset``. So ``h_ours = -h_dimod`` and ``J_ours[i, j] = J_ours[j, i] =
-J_dimod[i, j]``; energies are equal, which the round-trip tests check.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import MissingDependencyError
from ..problem import IsingProblem
from ..sampleset import SampleSet

__all__ = ["problem_to_bqm", "problem_from_bqm", "to_dimod_sampleset", "from_dimod_sampleset",
           "DimodSampler", "as_dimod_sampler"]


def _dimod():
    try:
        import dimod
    except ImportError:
        raise MissingDependencyError("dimod", extra="dimod", feature="dimod interop") from None
    return dimod


def problem_to_bqm(problem: IsingProblem):
    """A SPIN ``dimod.BinaryQuadraticModel`` over variables ``0..n-1`` with equal energies."""
    dimod = _dimod()
    coo = sp.triu(problem.sparse_J(), k=1).tocoo()
    bqm = dimod.BinaryQuadraticModel.from_numpy_vectors(
        -problem.h, (coo.row, coo.col, -coo.data), problem.offset, dimod.SPIN
    )
    return bqm


def problem_from_bqm(bqm) -> tuple[IsingProblem, list]:
    """``(problem, variables)``: the Ising form of any BQM (BINARY is converted), with the variable
    order used for the columns of the spins."""
    dimod = _dimod()
    if bqm.vartype is not dimod.SPIN:
        bqm = bqm.change_vartype(dimod.SPIN, inplace=False)
    variables = list(bqm.variables)
    n = len(variables)
    lin, (row, col, quad), offset = bqm.to_numpy_vectors(variable_order=variables)
    J = sp.coo_matrix((np.r_[-quad, -quad], (np.r_[row, col], np.r_[col, row])), shape=(n, n)).tocsr()
    return IsingProblem(J, -np.asarray(lin, dtype=np.float64), float(offset)), variables


def to_dimod_sampleset(ss: SampleSet, variables: Sequence | None = None):
    """A ``dimod.SampleSet`` with the same spins, energies and occurrences; timing and info go to
    its ``info``."""
    dimod = _dimod()
    labels = list(range(ss.num_spins)) if variables is None else list(variables)
    return dimod.SampleSet.from_samples(
        (np.asarray(ss.spins), labels), vartype=dimod.SPIN, energy=ss.energies,
        num_occurrences=ss.num_occurrences,
        info={"timing": dict(ss.timing), "job_id": ss.job_id, **ss.info},
    )


def from_dimod_sampleset(dss, problem: IsingProblem, variables: Sequence | None = None) -> SampleSet:
    """Our SampleSet from a dimod one (SPIN or BINARY); energies are recomputed from ``problem``."""
    dimod = _dimod()
    if dss.vartype is not dimod.SPIN:
        dss = dss.change_vartype(dimod.SPIN, inplace=False)
    order = list(range(problem.n)) if variables is None else list(variables)
    idx = [dss.variables.index(v) for v in order]
    spins = np.asarray(dss.record.sample)[:, idx]
    return SampleSet(problem, spins, dss.record.num_occurrences, info=dict(dss.info))


def DimodSampler(device: Any):  # noqa: N802 - reads like the class it builds
    """Wrap a Device as a ``dimod.Sampler`` (``sample``, ``sample_ising``, ``sample_qubo``)."""
    return as_dimod_sampler(device)


def as_dimod_sampler(device: Any):
    dimod = _dimod()

    class _KppDimodSampler(dimod.Sampler):
        def __init__(self, dev):
            self.device = dev

        @property
        def parameters(self) -> dict:
            return {"num_reads": [], "seed": [], **{k: [] for k in self.device.OPTIONS}}

        @property
        def properties(self) -> dict:
            return {"device": self.device.name, **self.device.properties.to_dict()}

        def sample(self, bqm, **parameters):
            problem, variables = problem_from_bqm(bqm)
            ss = self.device.sample(problem, **parameters)
            out = to_dimod_sampleset(ss, variables)
            if bqm.vartype is not dimod.SPIN:
                out = out.change_vartype(bqm.vartype, inplace=False)
            return out

        def __repr__(self) -> str:
            return f"DimodSampler({self.device!r})"

    return _KppDimodSampler(device)
