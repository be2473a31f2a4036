"""Shared helpers for the emulator tests: the benchmark instances of shared/data/cim-instances."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


def _instances_dir() -> Path:
    env = os.environ.get("KPP_CIM_INSTANCES")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared" / "data" / "cim-instances"


INSTANCES = _instances_dir()


def load_instance(kind: str, n: int, i: int):
    """(J, ground_energy) of SK1_N=n_i or MC50_N=n_i, with J = -W (cim-optimizer convention)."""
    if not INSTANCES.is_dir():
        pytest.skip(f"benchmark instances not found at {INSTANCES}")
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
