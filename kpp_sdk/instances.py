"""Benchmark instances with known optima, shipped with the package.

The SK and MC50 sets of Hamerly et al. (Sci. Adv. 2019) and four Gset graphs, from the
cim-optimizer project (CC BY 4.0); see ``kpp_sdk/data/cim_instances/SOURCE.txt``. All load in the
kpp convention (``J = -W``), in which the stored ground energies hold as they are.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from .errors import ProblemFormatError
from .problem import IsingProblem

__all__ = ["instance_root", "load_instance", "ground_energy", "list_instances", "GSET_BEST_CUTS"]

#: Best known MAX-CUT values of the shipped Gset graphs (see SOURCE.txt).
GSET_BEST_CUTS = {"G1": 11624, "G2": 11620, "G42": 2481, "G70": 9595}

_FAMILIES = {"SK1": "SK", "MC50": "MC50"}


def instance_root() -> Path:
    return Path(str(resources.files("kpp_sdk") / "data" / "cim_instances"))


def _check(family: str) -> str:
    if family not in _FAMILIES:
        raise ProblemFormatError(f"unknown instance family {family!r}; known: SK1, MC50, Gset")
    return _FAMILIES[family]


def list_instances(family: str) -> list[tuple[int, int]]:
    """``(n, index)`` pairs available for ``family`` (``"SK1"`` or ``"MC50"``)."""
    folder = instance_root() / _check(family)
    out = []
    for f in folder.glob(f"{family}_N=*_*.npz"):
        n, idx = f.stem.split("=")[1].split("_", 1)
        if idx.isdigit():
            out.append((int(n), int(idx)))
    return sorted(out)


def load_instance(family: str, n: int | None = None, index: int | None = None) -> IsingProblem:
    """``load_instance("SK1", 100, 0)``, ``load_instance("MC50", 20, 1)``, ``load_instance("G1")``.

    SK1 indices start at 0, MC50 indices at 1 (as in the original files).
    """
    if family.startswith("G") and family[1:].isdigit():
        path = instance_root() / "Gset" / f"{family}.txt"
        if not path.exists():
            raise ProblemFormatError(f"Gset graph {family} is not shipped; have: {sorted(GSET_BEST_CUTS)}")
        return IsingProblem.load(path)
    path = instance_root() / _check(family) / f"{family}_N={n}_{index}.npz"
    if not path.exists():
        raise ProblemFormatError(
            f"no instance {family} n={n} index={index}; available: {list_instances(family)[:8]}..."
        )
    return IsingProblem.load(path)


def ground_energy(family: str, n: int, index: int) -> float:
    """The known ground energy of an SK1/MC50 instance (kpp convention)."""
    path = instance_root() / _check(family) / f"{family}_N={n}_ground_energies.npz"
    data = np.load(path)
    arr = data if isinstance(data, np.ndarray) else data["arr_0"]
    return float(np.ravel(arr)[index - 1 if family == "MC50" else index])
