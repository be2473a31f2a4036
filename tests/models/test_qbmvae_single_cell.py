"""The single-cell workflow around QBM-VAE: AnnData checks, simulated batches, the bundled PBMC
counts, the latent representation in obsm, and the scIB-style metric subset."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from kpp_sdk.models import InvalidDataError
from kpp_sdk.models.single_cell_metrics import scib_style_scores


def _adata(n_cells=60, n_genes=20, seed=0):
    anndata = pytest.importorskip("anndata")
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    types = np.arange(n_cells) % 3
    profiles = rng.gamma(0.5, 4.0, size=(3, n_genes))
    X = rng.poisson(profiles[types]).astype(np.float32)
    obs = pd.DataFrame({"cell_type": [f"t{t}" for t in types],
                        "batch": [f"b{i % 2}" for i in range(n_cells)]},
                       index=[f"c{i}" for i in range(n_cells)])
    ad = anndata.AnnData(X=sp.csr_matrix(X), obs=obs)
    ad.var_names = [f"g{i}" for i in range(n_genes)]
    ad.layers["counts"] = ad.X.copy()
    return ad


def _model(**kw):
    from kpp_sdk.models.samplers import BoltzmannSampler
    from kpp_sdk.models.single_cell import SingleCellVAE

    kw.setdefault("sampler", BoltzmannSampler("sa.cpu", num_reads=16, num_sweeps=1, seed=0))
    return SingleCellVAE(4, n_hidden=16, seed=0, **kw)


# --- bad input, before any training -------------------------------------------------------------


def test_missing_batch_key_names_the_columns_there_are():
    ad = _adata()
    with pytest.raises(InvalidDataError, match=r"batch_key='donor'.*\['cell_type', 'batch'\]"):
        _model().setup(ad, batch_key="donor", layer="counts")
    with pytest.raises(InvalidDataError, match="labels_key='label'"):
        _model().setup(ad, batch_key="batch", labels_key="label")
    with pytest.raises(InvalidDataError, match=r"no layer 'raw'.*\['counts'\]"):
        _model().setup(ad, batch_key="batch", layer="raw")


def test_non_integer_negative_and_nan_counts_are_rejected_with_the_entry():
    import scipy.sparse as sp

    for value, what in ((0.5, "not an integer"), (-1.0, "negative"), (np.nan, "not finite")):
        ad = _adata()
        X = ad.layers["counts"].toarray()
        X[3, 7] = value
        ad.layers["counts"] = sp.csr_matrix(X)
        with pytest.raises(InvalidDataError, match=rf"counts\[3, 7\] = .* {what}.*layer="):
            _model().setup(ad, batch_key="batch", layer="counts")
    ad = _adata()
    ad.X = np.log1p(ad.X.toarray())  # log-normalised values in X
    with pytest.raises(InvalidDataError, match="raw integer counts"):
        _model().setup(ad, batch_key="batch")


def test_all_zero_genes_are_dropped_with_a_warning_or_rejected():
    import scipy.sparse as sp

    ad = _adata()
    X = ad.layers["counts"].toarray()
    X[:, [2, 5]] = 0
    ad.layers["counts"] = sp.csr_matrix(X)
    with pytest.warns(UserWarning, match=r"dropping 2 genes.*'g2', 'g5'"):
        m = _model().setup(ad, batch_key="batch", layer="counts")
    assert m.module.n_genes == 18
    with pytest.raises(InvalidDataError, match="2 genes have zero counts.*filter_genes"):
        _model(zero_genes="error").setup(ad, batch_key="batch", layer="counts")


def test_train_before_setup_and_bad_arguments_are_rejected():
    with pytest.raises(InvalidDataError, match="setup"):
        _model().train(1)
    with pytest.raises(InvalidDataError, match="prior"):
        _model(prior="laplace")
    with pytest.raises(InvalidDataError, match="AnnData"):
        _model().setup(np.zeros((3, 3)))


# --- the workflow ----------------------------------------------------------------------------


def test_train_writes_the_latent_representation_to_obsm_reproducibly():
    ad = _adata()
    state = torch.random.get_rng_state()
    reps = []
    for _ in range(2):
        m = _model().setup(ad, batch_key="batch", labels_key="cell_type", layer="counts")
        hist = m.train(3, batch_size=25, progress=False)
        assert [h["epoch"] for h in hist] == [1, 2, 3]
        assert all(np.isfinite(h["loss"]) for h in hist)
        assert hist[0]["kl_weight"] == 0 and 0 < hist[2]["kl_weight"] < 1
        reps.append(m.get_latent_representation())
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    assert ad.obsm["X_qbmvae"].shape == (60, 4)
    assert np.array_equal(reps[0], reps[1])
    assert reps[0].min() >= 0 and reps[0].max() <= 1
    assert "SingleCellVAE" in repr(m) and "trained 3 epochs" in repr(m)


def test_gaussian_baseline_and_latent_of_another_anndata():
    ad = _adata()
    m = _model(prior="gaussian").setup(ad, batch_key="batch", layer="counts")
    m.train(2, batch_size=32, progress=False)
    other = _adata(seed=1)
    z = m.get_latent_representation(other)
    assert z.shape == (60, 4) and "X_vae" in other.obsm
    with pytest.raises(InvalidDataError, match="same genes"):
        m.get_latent_representation(_adata(n_genes=19))


def test_training_separates_cell_types_better_than_chance():
    ad = _adata(n_cells=150, n_genes=40, seed=3)
    m = _model().setup(ad, batch_key="batch", labels_key="cell_type", layer="counts")
    m.train(25, batch_size=50, lr=3e-3, progress=False)
    s = scib_style_scores(m.get_latent_representation(), ad.obs["cell_type"], ad.obs["batch"],
                          n_neighbors=10)
    assert s["nmi"] > 0.5


# --- simulated batches and the bundled data ------------------------------------------------


def test_simulated_batches_apply_the_documented_effects():
    from kpp_sdk.models.single_cell import simulate_batches

    ad = _adata(n_cells=3000, n_genes=30, seed=4)
    sim = simulate_batches(ad, n_batches=3, library_scale=(1.0, 0.5, 2.0), gene_noise_sd=0.0,
                           extra_dropout=(0.0, 0.0, 0.5), seed=0)
    X = ad.layers["counts"].toarray()
    Y = sim.layers["counts"].toarray()
    assert np.array_equal(Y, np.round(Y)) and (Y >= 0).all()
    b = sim.obs["batch"].astype(str).to_numpy()
    assert set(b) == {"sim0", "sim1", "sim2"}
    ratio = {k: Y[b == k].sum() / X[b == k].sum() for k in ("sim0", "sim1", "sim2")}
    # Poisson resampling keeps the mean; the library scale multiplies it; dropout 0.5 halves it
    assert ratio["sim0"] == pytest.approx(1.0, rel=0.03)
    assert ratio["sim1"] == pytest.approx(0.5, rel=0.03)
    assert ratio["sim2"] == pytest.approx(1.0, rel=0.05)
    assert sim.uns["simulated_batches"]["library_scale"] == [1.0, 0.5, 2.0]
    with pytest.raises(InvalidDataError, match="one value per batch"):
        simulate_batches(ad, n_batches=2)


def test_gene_noise_is_multiplicative_per_batch_and_gene():
    from kpp_sdk.models.single_cell import simulate_batches

    ad = _adata(n_cells=3000, n_genes=30, seed=5)
    sim = simulate_batches(ad, n_batches=2, library_scale=(1.0, 1.0), gene_noise_sd=0.5,
                           extra_dropout=(0.0, 0.0), seed=1)
    X, Y = ad.layers["counts"].toarray(), sim.layers["counts"].toarray()
    b = sim.obs["batch"].astype(str).to_numpy() == "sim0"
    f0 = Y[b].sum(0) / X[b].sum(0)
    f1 = Y[~b].sum(0) / X[~b].sum(0)
    assert np.std(np.log(f0)) == pytest.approx(0.5, rel=0.35)
    assert abs(np.corrcoef(np.log(f0), np.log(f1))[0, 1]) < 0.6  # independent per batch


def test_pbmc68k_counts_are_integers_that_reproduce_the_shipped_normalisation():
    pytest.importorskip("scanpy")
    import scanpy as sc
    from kpp_sdk.models.single_cell import load_pbmc68k_counts

    ad = load_pbmc68k_counts()
    src = sc.datasets.pbmc68k_reduced()
    C = ad.layers["counts"].toarray()
    assert ad.shape == (700, 765) and np.array_equal(C, np.round(C)) and C.min() >= 0
    lognorm = np.log1p(C / src.obs["n_counts"].to_numpy()[:, None] * 1e4)
    raw = src.raw.X.toarray() if hasattr(src.raw.X, "toarray") else src.raw.X
    assert np.abs(lognorm - raw).max() < 0.05
    assert ad.obs["cell_type"].nunique() == 10


# --- the metric subset ----------------------------------------------------------------------


def test_scib_style_scores_reward_mixed_batches_and_separated_types():
    rng = np.random.default_rng(0)
    n = 300
    lab = np.arange(n) % 3
    bat = rng.integers(2, size=n)
    centers = np.array([[0, 0], [10, 0], [0, 10]], dtype=float)
    good = centers[lab] + rng.normal(size=(n, 2))
    bad = centers[lab] + rng.normal(size=(n, 2)) + np.c_[bat * 4.0, np.zeros(n)]
    random = rng.normal(size=(n, 2))
    g = scib_style_scores(good, lab, bat, n_neighbors=15)
    b = scib_style_scores(bad, lab, bat, n_neighbors=15)
    r = scib_style_scores(random, lab, bat, n_neighbors=15)
    assert g["nmi"] > 0.95 and g["ari"] > 0.95 and r["nmi"] < 0.1
    assert g["silhouette_label"] > r["silhouette_label"] and g["clisi"] > 0.9 > r["clisi"]
    assert g["ilisi"] > 0.7 and b["ilisi"] < 0.2
    assert g["silhouette_batch"] > b["silhouette_batch"]
    assert g["batch"] > b["batch"] and g["total"] > b["total"] > 0
    assert g["bio"] == pytest.approx(np.mean([g[k] for k in ("nmi", "ari", "silhouette_label",
                                                                "clisi")]))
    assert g["total"] == pytest.approx(0.6 * g["bio"] + 0.4 * g["batch"])
    with pytest.raises(InvalidDataError, match="one entry per cell"):
        scib_style_scores(good, lab[:10], bat)
