"""The hybrid generative models' comparisons (a script, not a pytest-benchmark suite: it measures
model quality, not speed).

    python benchmarks/bench_generative.py --quick            # minutes on 2 cores, smoke-level
    python benchmarks/bench_generative.py --seeds 0 1 2      # the reported numbers
    python benchmarks/bench_generative.py --part qdiffusion  # one half

QGAN: the same GAN (generator, discriminator, optimiser, steps) with three latent priors: an RBM
sampled on ``--device`` and trained jointly, independent fair bits, a standard Gaussian.
Metrics (:mod:`kpp_sdk.models.sample_quality`) on as many samples as held-out digits: the
mean nearest-neighbour distance sample -> held-out (``sample_to_data_distance``) and held-out ->
sample (``data_to_sample_distance``), the classifier score; the same for training images as the
reference. A figure of samples per prior is written to ``--out``.

Q-Diffusion: the masked-diffusion proposal trained ``S`` steps, then the Boltzmann energy trained
``S_E`` NCE steps with the proposal frozen, against the proposal alone (the same network) and a
budget-matched proposal trained ``S + S_E`` steps from scratch. All three are evaluated with the
same code (:meth:`QDiffusion.nll_bound`, E = 0 for the proposals), the same held-out sequences and
the same reveal orders: the ``T``-step evidence bound per character, for ``K`` in 16, 64, 256,
1024 proposal samples per step. Two figures per ``K``: the conservative one (an upper bound in
expectation on the perplexity of the sampler that runs with ``K`` candidates) and the
importance-sampling estimate of the ideal ``K -> infinity`` model (optimistic at finite ``K``),
with the delta-method size of its log Z bias.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _qgan(seed: int, steps: int, device: str, out: Path) -> dict:
    from kpp_sdk.models.qgan import QGAN, fit_qgan, load_digits_grayscale, make_prior
    from kpp_sdk.models.sample_quality import DigitClassifier, sample_quality
    from kpp_sdk.models.samplers import BoltzmannSampler

    train, test, ytr, _ = load_digits_grayscale(seed=0)
    clf = DigitClassifier(train, ytr)
    rows = {"reference (training images)": sample_quality(train[: test.shape[0]], test,
                                                          classifier=clf)}
    images = {}
    for kind in ("boltzmann", "bernoulli", "gaussian"):
        torch.manual_seed(seed)
        sampler = (BoltzmannSampler(device, num_reads=64, num_sweeps=2, seed=seed)
                   if kind == "boltzmann" else None)
        prior = make_prior(kind, 16, sampler=sampler, num_hidden=16,
                           generator=torch.Generator().manual_seed(seed))
        gan = QGAN(prior)
        t0 = time.perf_counter()
        hist = fit_qgan(gan, train, steps=steps, batch_size=64, lr=1e-3, seed=seed,
                        log_every=max(1, steps // 10))
        secs = time.perf_counter() - t0
        x = gan.generate(test.shape[0], torch.Generator().manual_seed(seed + 1)).numpy()
        q = sample_quality(x, test, classifier=clf)
        q["train_seconds"] = secs
        if kind == "boltzmann":
            q["prior_code_entropy_bits"] = hist[-1]["prior_code_entropy"]
        rows[f"{kind} prior"] = q
        images[kind] = x[:50]
        np.save(out / f"qgan_samples_{kind}_seed{seed}.npy", x)
        print(f"  qgan seed {seed} {kind:9s}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in q.items() if isinstance(v, float)), flush=True)
    _figure(images, out / f"qgan_samples_seed{seed}.png", f"QGAN samples, {steps} steps, seed "
            f"{seed}")
    return rows


def _figure(images: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 2.4))
    for ax, (kind, x) in zip(axes, images.items()):
        grid = np.ones((5 * 9 - 1, 10 * 9 - 1)) * 0.5
        for k in range(min(50, x.shape[0])):
            i, j = divmod(k, 10)
            grid[i * 9: i * 9 + 8, j * 9: j * 9 + 8] = x[k].reshape(8, 8)
        ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{kind} prior", fontsize=9)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _qdiffusion(seed: int, steps: int, energy_steps: int, eval_sequences: int,
                eval_samples: list[int], seq_len: int, reverse_steps: int, hidden: int) -> dict:
    from kpp_sdk.models.qdiffusion import (
        QDiffusion,
        fit_diffusion,
        fit_energy,
        load_text_corpus,
        perplexity,
    )

    corpus = load_text_corpus()
    V = corpus.tokenizer.vocab_size
    test = corpus.blocks("test", seq_len, eval_sequences)
    orders = torch.rand(test.shape, generator=torch.Generator().manual_seed(1000 + seed))
    orders = orders.argsort(1)

    def build():
        return QDiffusion(seq_len, V, hidden=hidden, num_layers=1,
                          generator=torch.Generator().manual_seed(seed))

    def bound(model, K, use_energy):
        t0 = time.perf_counter()
        r = model.nll_bound(test, steps=reverse_steps, num_samples=K, orders=orders,
                            use_energy=use_energy,
                            generator=torch.Generator().manual_seed(2000 + seed))
        n = len(r["nll"])
        return {"perplexity": perplexity(r["nll"], seq_len),
                "nll_per_char": float(r["nll"].mean()) / seq_len,
                "nll_per_char_stderr": float(r["nll"].std()) / seq_len / n ** 0.5,
                "perplexity_is": perplexity(r["nll_is"], seq_len),
                "nll_is_per_char": float(r["nll_is"].mean()) / seq_len,
                "nll_is_per_char_stderr": float(r["nll_is"].std()) / seq_len / n ** 0.5,
                "log_z_bias_per_char": float(r["log_z_bias"].mean()) / seq_len,
                "ess": float(r["ess"].mean()), "K": K,
                "eval_seconds": time.perf_counter() - t0}

    model = build()
    t0 = time.perf_counter()
    fit_diffusion(model, corpus, steps=steps, seed=seed)
    t_mu = time.perf_counter() - t0
    base = bound(model, 1, False)
    t0 = time.perf_counter()
    hist = fit_energy(model, corpus, steps=energy_steps, mask_steps=reverse_steps, seed=seed + 1)
    t_e = time.perf_counter() - t0
    rows = {f"proposal ({steps} steps)": base | {"train_seconds": t_mu}}
    for K in eval_samples:
        rows[f"proposal + energy ({energy_steps} NCE steps), K={K}"] = (
            bound(model, K, True) | {"train_seconds": t_mu + t_e,
                                     "nce_accuracy": hist[-1]["accuracy"]})
    long = build()
    t0 = time.perf_counter()
    fit_diffusion(long, corpus, steps=steps + energy_steps, seed=seed)
    rows[f"proposal ({steps + energy_steps} steps, budget-matched)"] = (
        bound(long, 1, False) | {"train_seconds": time.perf_counter() - t0})
    for k, v in rows.items():
        print(f"  qdiffusion seed {seed} {k}: perplexity {v['perplexity']:.4f} (conservative), "
              f"{v['perplexity_is']:.4f} (IS estimate; log Z bias "
              f"{v['log_z_bias_per_char']:.5f} nats/char), {v['eval_seconds']:.1f} s", flush=True)
    return rows


def _qdiffusion_table(per_seed: dict) -> str:
    """Markdown: one row per model, per-seed conservative perplexity, mean, and for the energy
    rows the IS estimate and its log Z bias (means over seeds)."""
    seeds = list(per_seed)
    lines = ["| model | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean (conservative) | IS estimate (mean) | log Z bias, nats/char (mean) |",
             "|---" * (len(seeds) + 4) + "|"]
    for row in per_seed[seeds[0]]:
        vals = [per_seed[s][row] for s in seeds]
        ppl = [v["perplexity"] for v in vals]
        lines.append(f"| {row} | " + " | ".join(f"{p:.3f}" for p in ppl)
                     + f" | {np.mean(ppl):.3f} | {np.mean([v['perplexity_is'] for v in vals]):.3f}"
                     f" | {np.mean([v['log_z_bias_per_char'] for v in vals]):.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny budgets (a smoke run)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--part", choices=("all", "qgan", "qdiffusion"), default="all")
    ap.add_argument("--device", default="sa.cpu", help="device sampling the QGAN prior")
    ap.add_argument("--out", default="runs/bench-generative")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = ({"qgan_steps": 200, "steps": 200, "energy_steps": 100, "eval_sequences": 128,
               "eval_samples": [16]} if a.quick else
              {"qgan_steps": 3000, "steps": 4000, "energy_steps": 2000, "eval_sequences": 1024,
               "eval_samples": [16, 64, 256, 1024]})
    results = {"budget": budget, "seeds": a.seeds, "device": a.device, "qgan": {},
               "qdiffusion": {}}
    for seed in a.seeds:
        if a.part in ("all", "qgan"):
            results["qgan"][seed] = _qgan(seed, budget["qgan_steps"], a.device, out)
        if a.part in ("all", "qdiffusion"):
            results["qdiffusion"][seed] = _qdiffusion(
                seed, budget["steps"], budget["energy_steps"], budget["eval_sequences"],
                budget["eval_samples"], seq_len=16, reverse_steps=4, hidden=256)
        (out / "results.json").write_text(json.dumps(results, indent=2))
    if results["qdiffusion"]:
        table = _qdiffusion_table(results["qdiffusion"])
        (out / "qdiffusion.md").write_text(table)
        print(table)
    print(f"wrote {out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
