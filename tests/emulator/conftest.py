"""Shared helpers for the emulator tests: the benchmark instances the package ships
(kpp_sdk/data/cim_instances)."""

from __future__ import annotations

import numpy as np
import pytest

from kpp_sdk.instances import instance_root

INSTANCES = instance_root()


def load_instance(kind: str, n: int, i: int):
    """(J, ground_energy) of SK1_N=n_i or MC50_N=n_i, with J = -W (cim-optimizer convention)."""
    if not INSTANCES.is_dir():  # only in a broken installation: the package ships them
        pytest.fail(f"the package's instance data is missing ({INSTANCES}); reinstall kpp-sdk")
    if kind == "SK":
        W = np.load(INSTANCES / "SK" / f"SK1_N={n}_{i}.npz")
        g = np.load(INSTANCES / "SK" / f"SK1_N={n}_ground_energies.npz")["arr_0"][i]
    elif kind == "MC":
        W = np.load(INSTANCES / "MC50" / f"MC50_N={n}_{i}.npz")
        g = np.load(INSTANCES / "MC50" / f"MC50_N={n}_ground_energies.npz")[i - 1]
    else:
        raise ValueError(kind)
    return -np.asarray(W, dtype=np.float64), float(g)


def random_sk(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = rng.choice([-1.0, 1.0], size=(n, n))
    J = np.triu(A, 1)
    return J + J.T


@pytest.fixture
def instance():
    """Fixture: the :func:`load_instance` function."""
    return load_instance


@pytest.fixture
def sk_random():
    """Fixture: the :func:`random_sk` function."""
    return random_sk
