"""Binary data sets that load offline, for training Boltzmann machines.

Every loader returns a :class:`BinaryDataset` of float32 NumPy arrays with values in {0, 1}
(one example per row, images flattened row-major). Nothing is downloaded, ever:

* ``"digits"``: scikit-learn's 8x8 handwritten digits (1,797 images shipped inside
  scikit-learn), binarised at half intensity (pixel >= 8 of 0..16), split 80/20 at random
  (``seed``). Needs ``pip install 'kpp-sdk[models]'``.
* ``"bas"`` or ``"bas-RxC"``: bars and stripes on an R x C grid (default 3x3): every image whose
  rows are all constant or whose columns are all constant, ``2^R + 2^C - 2`` distinct patterns.
  The test set is the full set of patterns, i.e. the target distribution itself (uniform over
  the patterns), so the best possible mean test log-likelihood is ``-log(2^R + 2^C - 2)``.
* ``"mnist"``: no installable package ships MNIST, so it is read from files you already have:
  ``mnist.npz`` (arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``, as Keras saves it) or
  the four IDX files (``train-images-idx3-ubyte[.gz]`` etc., also in the ``MNIST/raw`` folder
  torchvision writes), found under ``root`` or ``$KPP_DATA_DIR``; binarised at 0.5.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kpp_sdk.errors import KppError, MissingDependencyError

__all__ = ["BinaryDataset", "DatasetNotAvailableError", "load_dataset", "load_digits",
           "load_bars_and_stripes", "bars_and_stripes", "load_mnist", "read_idx", "DATASETS"]

#: Names :func:`load_dataset` accepts (``bas-RxC`` for any grid size).
DATASETS = ("digits", "bas", "bas-RxC", "mnist")

_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


class DatasetNotAvailableError(KppError, LookupError):
    """A data set is unknown, or its files are not on this machine; the message says what to
    install or where to put the files."""


@dataclass(frozen=True)
class BinaryDataset:
    """``train``/``test``: ``(n, num_visible)`` float32 in {0, 1}; labels int64 or None;
    ``image_shape``: how a row reshapes into an image (for sample grids)."""

    name: str
    train: np.ndarray
    test: np.ndarray
    image_shape: tuple[int, int]
    train_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None

    @property
    def num_visible(self) -> int:
        return int(self.train.shape[1])

    def __repr__(self) -> str:
        return (f"BinaryDataset({self.name!r}, train={self.train.shape}, test={self.test.shape}, "
                f"image_shape={self.image_shape})")


def _split(x: np.ndarray, y: np.ndarray | None, test_fraction: float, seed: int):
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    k = round(x.shape[0] * test_fraction)
    te, tr = perm[:k], perm[k:]
    return x[tr], x[te], (None if y is None else y[tr]), (None if y is None else y[te])


def load_digits(*, threshold: float = 8.0, test_fraction: float = 0.2,
                seed: int = 0) -> BinaryDataset:
    """scikit-learn's 8x8 digits binarised as ``pixel >= threshold`` (pixels are 0..16)."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError:
        raise MissingDependencyError("scikit-learn", extra="models",
                                     feature="the 'digits' data set") from None
    d = _load()
    x = (d.data >= threshold).astype(np.float32)
    tr, te, ytr, yte = _split(x, d.target.astype(np.int64), test_fraction, seed)
    return BinaryDataset("digits", tr, te, (8, 8), ytr, yte)


def bars_and_stripes(rows: int = 3, cols: int = 3) -> np.ndarray:
    """Every distinct bars-and-stripes image on a ``rows x cols`` grid, flattened row-major,
    shape ``(2^rows + 2^cols - 2, rows * cols)`` float32: stripes (constant rows) first, then
    bars (constant columns) that are not also stripes."""
    if rows < 1 or cols < 1:
        raise ValueError(f"the grid must be at least 1x1, got {rows}x{cols}")
    if rows * cols > 24:
        raise ValueError(f"bars and stripes is limited to 24 pixels here, got {rows}x{cols}")
    out = []
    for k in range(2**rows):
        bits = (k >> np.arange(rows)) & 1
        out.append(np.repeat(bits[:, None], cols, axis=1).ravel())
    for k in range(1, 2**cols - 1):  # all-off and all-on are already stripes
        bits = (k >> np.arange(cols)) & 1
        out.append(np.repeat(bits[None, :], rows, axis=0).ravel())
    return np.asarray(out, dtype=np.float32)


def load_bars_and_stripes(rows: int = 3, cols: int = 3, *, repeats: int = 1) -> BinaryDataset:
    """Train: the patterns, each ``repeats`` times; test: each pattern once (module docstring)."""
    pats = bars_and_stripes(rows, cols)
    return BinaryDataset(f"bas-{rows}x{cols}", np.tile(pats, (int(repeats), 1)), pats.copy(),
                         (rows, cols))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (MNIST's format; ``.gz`` allowed) as a NumPy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetNotAvailableError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise DatasetNotAvailableError(f"{path}: unknown IDX data type 0x{data[2]:02x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DatasetNotAvailableError(
            f"{path} is truncated: the header announces {shape} but holds {arr.size} values")
    return arr.reshape(shape)


def _find_mnist(root: Path) -> dict[str, np.ndarray] | None:
    npz = root / "mnist.npz"
    if npz.is_file():
        with np.load(npz) as z:
            return {k: z[k] for k in _MNIST_FILES}
    for folder in (root, root / "MNIST" / "raw", root / "mnist"):
        found = {}
        for key, stem in _MNIST_FILES.items():
            for name in (stem, stem + ".gz"):
                if (folder / name).is_file():
                    found[key] = read_idx(folder / name)
                    break
        if len(found) == len(_MNIST_FILES):
            return found
    return None


def load_mnist(root: str | os.PathLike | None = None, *, threshold: float = 0.5) -> BinaryDataset:
    """MNIST from local files (module docstring), binarised as ``pixel / 255 >= threshold``."""
    roots = [Path(root)] if root is not None else []
    if os.environ.get("KPP_DATA_DIR"):
        roots.append(Path(os.environ["KPP_DATA_DIR"]))
    for r in roots:
        arrays = _find_mnist(r)
        if arrays is not None:
            def binarise(x):
                return (x.reshape(x.shape[0], -1).astype(np.float32) / 255.0 >= threshold).astype(
                    np.float32)

            return BinaryDataset("mnist", binarise(arrays["x_train"]), binarise(arrays["x_test"]),
                                 (28, 28), arrays["y_train"].astype(np.int64),
                                 arrays["y_test"].astype(np.int64))
    where = ", ".join(str(r) for r in roots) or "(no folder given and KPP_DATA_DIR is not set)"
    raise DatasetNotAvailableError(
        "MNIST is not shipped by kpp-sdk or by any package it can install, and kpp-sdk never "
        f"downloads at run time; looked in: {where}. Put mnist.npz (x_train, y_train, x_test, "
        "y_test) or the four IDX files (train-images-idx3-ubyte[.gz], ...) in a folder and pass "
        "it as root (kpp train --data-dir) or set KPP_DATA_DIR; e.g. `pip install torchvision` "
        "and run torchvision.datasets.MNIST(folder, download=True) once, or use the offline "
        "data sets 'digits' or 'bas'")


def load_dataset(name: str, *, seed: int = 0, root: str | os.PathLike | None = None,
                 **kwargs: Any) -> BinaryDataset:
    """A data set by name (:data:`DATASETS`; module docstring)."""
    key = name.strip().lower()
    if key == "digits":
        return load_digits(seed=seed, **kwargs)
    if key == "bas":
        return load_bars_and_stripes(**kwargs)
    m = re.fullmatch(r"bas-(\d+)x(\d+)", key)
    if m:
        return load_bars_and_stripes(int(m.group(1)), int(m.group(2)), **kwargs)
    if key == "mnist":
        return load_mnist(root, **kwargs)
    raise DatasetNotAvailableError(
        f"unknown data set {name!r}; available: digits, bas (3x3), bas-RxC (e.g. bas-4x4), mnist")
