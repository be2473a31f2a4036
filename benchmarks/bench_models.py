"""Sampler variants on the same models: distance to the exact distribution where the model can
be enumerated, AIS test log-likelihood after training where it cannot, time and device time.
A script (it measures sample and model quality; timings are within this process).

    python benchmarks/bench_models.py --quick          # minutes on 2 cores, smoke-level
    python benchmarks/bench_models.py --part kl        # the KL table only
    python benchmarks/bench_models.py --part ais       # digits RBM 64 x 64, 20 epochs
    python benchmarks/bench_models.py --part ais --hidden 128
    python benchmarks/bench_models.py --part variance  # gradient noise: model samples vs CD-1

KL part. Two fixed models: an RBM 9 x 16 trained on bars and stripes 3x3 (200 full-batch epochs
of sa.cpu Boltzmann sampling, 5 sweeps; seed 0) and a fully visible 12-unit Boltzmann machine
trained on bars and stripes 3x4 with exact gradients (enumeration). Each sampler is called as
training calls it (``negative``, ``num_reads`` 100 per call): ``--warm`` calls to settle (the
thermostat turns the emulator's knob), then ``--calls`` calls whose visible states are pooled.
Reported: KL(q || p) in nats from the pooled samples' empirical distribution q to the model's
exact visible distribution p (the RBM's by its free energy), the same KL of as many exact
samples (the floor that finite sampling sets), and the device time per call (``device_s``:
what the machine would spend, from its timing model) and the wall time per call in this process.

AIS part. Every sampler trains the same initial RBM (seed 0, visible biases from the data) on
binarised 8x8 digits for ``--epochs`` epochs of SGD (batch 50, lr 0.1, momentum 0.5, weight
decay 1e-4), 50 samples per negative phase; test log-likelihood by AIS (3000 temperatures, 200
chains, base rates from the training data) with a 3-sigma error bar; seconds per epoch (median
over epochs, wall, this process) and device seconds per epoch (the emulator's timing model).

Samplers (``kpp_sdk.models.samplers``): CD-1 (``cdK``: CD-k); PCD-1 (50 chains); sa.cpu in Boltzmann
sampling mode (persistent chains, 1 or 5 sweeps per job); cim.emulator as it comes (``cold``: knob
0, beta 1, no correction); ``thermostat`` (beta="estimate": the knob turned until the pseudo-
likelihood beta of the samples is 1, no reweighting); ``thermostat+iw`` (plus importance resampling
with exp((beta_hat - 1) E)); ``topk``: the cloud's de-duplicated Top-K of ``--topk-runs`` runs per
job, states resampled by their counts (the paper's method) or, ``topk+iw``, by exp(-E) (importance
weights from the model energy); ``thermostat+topk+iw``: the same at the knob the thermostat turns
(KL part; not a default row); ``hybrid-k``: thermostat+iw states as the starts of k Gibbs sweeps
in torch; ``random-start-k``: k Gibbs sweeps from uniformly random states (the hybrid's control:
what its Gibbs sweeps do without the device). Trailing words: ``rN`` draws N samples per negative
phase instead of 50; ``refreshF`` (hybrids) keeps the Gibbs chains between negative phases and
replaces a fraction F of them by device states per call (``BoltzmannSampler(refresh=F)``).
``--tail K`` also evaluates each of the last K epochs (AIS 1000 x 100; training unchanged) and
reports their mean: one epoch's test LL moves by up to ~1.4 nats from the next one's.

Variance part. The W-gradient noise at the model CD-1 reaches after ``--epochs`` - 1 epochs: over
400 random batches of 50, the summed variance of the positive statistic (data), of the negative
statistic from 50 independent model samples (20000 Gibbs chains, 1000 sweeps), of their
difference (what any sampler of the model gives), and of CD-1's difference (its chains start at
the batch, so its negative statistic is correlated with the positive one).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import numpy as np
import torch

from kpp_sdk.models import (
    BoltzmannMachine,
    RestrictedBoltzmannMachine,
    exact_model_distribution,
    fit,
    log_likelihood,
)
from kpp_sdk.models.datasets import load_dataset
from kpp_sdk.models.samplers import (
    BoltzmannSampler,
    ContrastiveDivergence,
    ExactSampler,
    ModelSampler,
    PersistentContrastiveDivergence,
)

EMULATOR_VARIANTS = ("cim cold", "cim thermostat", "cim thermostat+iw", "cim topk", "cim topk+iw",
                     "cim hybrid-1", "cim hybrid-5", "cim hybrid-20")
#: The hybrid's controls: the same Gibbs sweeps from uniform states, and CD-5.
CONTROLS = ("random-start-5", "random-start-20", "cd5")


def make_sampler(method: str, num_reads: int, seed: int, topk_runs: int = 2000,
                 emulator_params: dict | None = None):
    """The sampler a row of the tables names (a last word ``rN`` sets N samples per call);
    ``emulator_params`` overrides CIMParameters fields of the emulator's profile (its device
    option ``params``)."""
    words = method.split()
    refresh = 1.0
    while len(words) > 1:  # trailing "rN" (N samples per call), "refreshF" (hybrid's refresh)
        if words[-1][0] == "r" and words[-1][1:].isdigit():
            num_reads = int(words.pop()[1:])
        elif words[-1].startswith("refresh"):
            refresh = float(words.pop()[len("refresh"):])
        else:
            break
    method = " ".join(words)
    if method == "cd1":
        return ContrastiveDivergence(1, seed=seed)
    if method.startswith("cd") and method[2:].isdigit():
        return ContrastiveDivergence(int(method[2:]), seed=seed)
    if method.startswith("random-start-"):  # the hybrid's control: Gibbs from uniform states
        return RandomStartGibbs(int(method.split("-")[-1]), num_reads, seed=seed)
    if method == "pcd":
        return PersistentContrastiveDivergence(1, num_chains=num_reads, seed=seed)
    if method.startswith("sa.cpu"):
        sweeps = int(method.split("x")[-1]) if "x" in method else 1
        return BoltzmannSampler("sa.cpu", num_reads=num_reads, num_sweeps=sweeps,
                                num_threads=1, seed=seed)
    variant = method.split()[-1]
    kw: dict = {}
    if variant == "cold":
        kw = dict(beta=1.0)
    elif variant == "thermostat":
        kw = dict(reweight=False)
    elif variant == "thermostat+iw":
        kw = {}
    elif variant == "topk":
        kw = dict(beta=1.0, topk_runs=topk_runs, reweight=False)
    elif variant == "topk+iw":
        kw = dict(beta=1.0, topk_runs=topk_runs)
    elif variant == "thermostat+topk+iw":  # the knob turned by the thermostat, then Top-K
        kw = dict(topk_runs=topk_runs)
    elif variant.startswith("hybrid-"):
        kw = dict(gibbs_steps=int(variant.split("-")[1]), refresh=refresh)
    else:
        raise ValueError(f"unknown sampler {method!r}")
    if emulator_params:
        kw["params"] = dict(emulator_params)
    return BoltzmannSampler("cim.emulator", num_reads=num_reads, mode="anneal", seed=seed, **kw)


class RandomStartGibbs(ModelSampler):
    """``k`` Gibbs sweeps from uniformly random states each call: what the hybrid would be
    if the device's states carried no information."""

    def __init__(self, k: int, num_reads: int, **kwargs):
        super().__init__(**kwargs)
        self.k, self.num_reads = k, num_reads

    def negative(self, model, visible=None):
        g = self.generator(model.device)
        x = model.random_states(self.num_reads, g)
        for _ in range(self.k):
            x = model.gibbs_step(x, generator=g)
        self.last = {"sampler": f"random-start-{self.k}"}
        return model.rao_blackwellize(x)


class DeviceClock:
    """Sums ``sampler.last["device_s"]`` over the negative phases a sampler draws."""

    def __init__(self, sampler):
        self.device_s = 0.0
        self.calls = 0
        inner = sampler.negative

        def negative(model, visible=None):
            out = inner(model, visible)
            self.device_s += float(sampler.last.get("device_s", 0.0))
            self.calls += 1
            return out

        sampler.negative = negative


# --- KL to the exact distribution ---------------------------------------------------------------


def _index(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.int64) << np.arange(bits.shape[1], dtype=np.int64)).sum(1)


def exact_visible_distribution(model) -> np.ndarray:
    """p(v) over the 2^V visible states (index: bit i = unit i)."""
    V = model.num_visible
    idx = np.arange(2**V)
    v = torch.as_tensor((idx[:, None] >> np.arange(V)) & 1, dtype=torch.float64)
    with torch.no_grad():
        f = copy.deepcopy(model).double().free_energy(v)
        logp = -f - torch.logsumexp(-f, 0)
    return logp.exp().numpy()


def kl_from_samples(visible: np.ndarray, p: np.ndarray) -> float:
    """KL(q || p) of the empirical distribution q of ``visible`` rows."""
    q = np.bincount(_index(np.asarray(visible).round().astype(np.int64)), minlength=p.size)
    q = q / q.sum()
    keep = q > 0
    return float(np.sum(q[keep] * np.log(q[keep] / p[keep])))


def kl_models(quick: bool, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    bas = torch.as_tensor(np.unique(load_dataset("bas", seed=seed).train, axis=0))
    rbm = RestrictedBoltzmannMachine(9, 16, generator=torch.Generator().manual_seed(seed))
    rbm.init_visible_bias(bas)
    fit(rbm, bas, BoltzmannSampler("sa.cpu", num_reads=100, num_sweeps=5, num_threads=1,
                                    seed=seed),
        epochs=40 if quick else 200, batch_size=len(bas), lr=0.2, seed=seed)
    bas12 = torch.as_tensor(np.unique(load_dataset("bas-3x4", seed=seed).train, axis=0))
    bm = BoltzmannMachine(12, 0, generator=torch.Generator().manual_seed(seed))
    bm.init_visible_bias(bas12)
    fit(bm, bas12, ExactSampler(2000, seed=seed), epochs=50 if quick else 300,
        batch_size=len(bas12), lr=0.1, seed=seed)
    return {"RBM 9x16 (BAS 3x3)": rbm.float(), "BM 12 (BAS 3x4)": bm.float()}


def kl_table(args) -> list[dict]:
    models = kl_models(args.quick)
    methods = args.methods or ["sa.cpu", "sa.cpu x5", *EMULATOR_VARIANTS]
    rows = []
    for name, model in models.items():
        p = exact_visible_distribution(model)
        n = args.calls * args.reads
        rng = np.random.default_rng(1)
        floor = kl_from_samples(_index_to_bits(rng.choice(p.size, size=n, p=p), model.num_visible),
                                p)
        print(f"\n{name}: {n} samples per sampler; KL of {n} exact samples: {floor:.4f}",
              file=sys.stderr)
        for method in methods:
            s = make_sampler(method, args.reads, seed=0, topk_runs=args.topk_runs,
                             emulator_params=args.emulator_params)
            clock = DeviceClock(s)
            for _ in range(args.warm):
                s.negative(model)
            clock.device_s, clock.calls = 0.0, 0
            t0 = time.perf_counter()
            vis = [s.negative(model)[:, :model.num_visible].numpy() for _ in range(args.calls)]
            wall = (time.perf_counter() - t0) / args.calls
            kl = kl_from_samples(np.concatenate(vis), p)
            row = {"model": name, "sampler": method, "kl": kl, "kl_exact_samples": floor,
                   "samples": n, "device_s_per_call": clock.device_s / args.calls,
                   "wall_s_per_call": wall, "knob": getattr(s, "knob", None)}
            rows.append(row)
            print(f"  {method:18s} KL {kl:7.4f}  device {row['device_s_per_call'] * 1e3:8.2f} ms"
                  f"/call  wall {wall * 1e3:8.1f} ms/call", file=sys.stderr)
    return rows


def _index_to_bits(idx: np.ndarray, n: int) -> np.ndarray:
    return (idx[:, None] >> np.arange(n)) & 1


# --- AIS after training -----------------------------------------------------------------------


def ais_row(method: str, args, ds) -> dict:
    x = torch.as_tensor(ds.train)
    seed = args.seed
    rbm = RestrictedBoltzmannMachine(64, args.hidden,
                                     generator=torch.Generator().manual_seed(seed))
    rbm.init_visible_bias(x)
    sampler = make_sampler(method, 50, seed=seed, topk_runs=args.topk_runs,
                           emulator_params=args.emulator_params)
    clock = DeviceClock(sampler)

    def tail(epoch, model, stats):  # the last --tail epochs, each by a cheaper AIS
        if epoch > args.epochs - args.tail:
            ll = log_likelihood(model, ds.test, method="ais", num_chains=100, num_betas=1000,
                                data=ds.train, seed=seed)
            return {"tail_log_likelihood": ll["log_likelihood"]}
        return None

    history = fit(rbm, x, sampler, epochs=args.epochs, batch_size=50, lr=0.1, momentum=0.5,
                  weight_decay=1e-4, seed=seed, callback=tail if args.tail else None,
                  lr_decay=args.lr_decay, lr_decay_start=args.lr_decay_start)
    ll = log_likelihood(rbm, ds.test, method="ais", num_chains=args.ais_chains,
                        num_betas=args.ais_betas, data=ds.train, seed=seed)
    row = {"model": f"RBM 64x{args.hidden}", "sampler": method, "epochs": args.epochs, "seed": seed,
           "lr_decay": args.lr_decay, "lr_decay_start": args.lr_decay_start,
           "test_log_likelihood": ll["log_likelihood"], "ais_stderr": ll["stderr"],
           "seconds_per_epoch": statistics.median(h["seconds"] for h in history),
           "device_s_per_epoch": clock.device_s / args.epochs,
           "last_sampler_report": history[-1]["sampler"]}
    tail_lls = [h["tail_log_likelihood"] for h in history if "tail_log_likelihood" in h]
    if tail_lls:
        row.update(tail_log_likelihoods=tail_lls, tail_mean=statistics.fmean(tail_lls),
                   tail_sd=statistics.pstdev(tail_lls))
    print(f"  {method:18s} AIS LL {row['test_log_likelihood']:8.3f} ± {3 * ll['stderr']:.3f}"
          f"  {row['seconds_per_epoch']:7.2f} s/epoch  device {row['device_s_per_epoch']:7.3f}"
          " s/epoch", file=sys.stderr)
    if tail_lls:
        print(f"  {'':18s} last {len(tail_lls)} epochs (AIS 1000 x 100): "
              + " ".join(f"{v:.2f}" for v in tail_lls)
              + f"; mean {row['tail_mean']:.2f}, sd {row['tail_sd']:.2f}", file=sys.stderr)
    return row


def ais_table(args) -> list[dict]:
    ds = load_dataset("digits", seed=0)
    methods = args.methods or ["cd1", "pcd", "sa.cpu", "sa.cpu x5", *EMULATOR_VARIANTS, *CONTROLS]
    print(f"\ndigits RBM 64x{args.hidden}, {args.epochs} epochs", file=sys.stderr)
    return [ais_row(m, args, ds) for m in methods]


def variance_table(args) -> dict:
    ds = load_dataset("digits", seed=0)
    x = torch.as_tensor(ds.train)
    rbm = RestrictedBoltzmannMachine(64, args.hidden,
                                     generator=torch.Generator().manual_seed(args.seed))
    rbm.init_visible_bias(x)
    fit(rbm, x, ContrastiveDivergence(1, seed=args.seed), epochs=args.epochs - 1, batch_size=50,
        lr=0.1, momentum=0.5, weight_decay=1e-4, seed=args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    V, B = rbm.num_visible, 50

    def stat(states):  # the W statistic: mean of v E[h | v]^T
        s = rbm.rao_blackwellize(states) if states.shape[1] > V else rbm.hidden_expectation(states)
        return (s[:, :V].T @ s[:, V:] / s.shape[0]).flatten()

    cd = ContrastiveDivergence(1, seed=args.seed + 2)
    parts: dict = {"positive": [], "negative (model samples)": [],
                   "positive - model samples": [], "CD-1: positive - negative": []}
    with torch.no_grad():
        pool = rbm.random_states(2000 if args.quick else 20000, g)
        for _ in range(100 if args.quick else 1000):
            pool = rbm.gibbs_step(pool, generator=g)
        for _ in range(50 if args.quick else 400):
            v = x[torch.randperm(len(x), generator=g)[:B]]
            p = stat(v)
            n = stat(pool[torch.randperm(len(pool), generator=g)[:B]])
            c = stat(cd.negative(rbm, v))
            for key, val in zip(parts, (p, n, p - n, p - c), strict=True):
                parts[key].append(val)
    out = {k: float(torch.stack(v).var(0).sum()) for k, v in parts.items()}
    print(f"\nW-gradient variance (summed over entries), batches of {B}, CD-1 model after "
          f"{args.epochs - 1} epochs (seed {args.seed}):", file=sys.stderr)
    for k, val in out.items():
        print(f"  {k:28s} {val:.3f}", file=sys.stderr)
    return out


def markdown(kl_rows: list[dict], ais_rows: list[dict]) -> str:
    out = []
    if kl_rows:
        out += ["| model | sampler | KL(q ‖ p) nats | KL of as many exact samples | "
                "device ms / call | wall ms / call |", "|---|---|---|---|---|---|"]
        out += [f"| {r['model']} | {r['sampler']} | {r['kl']:.4f} | {r['kl_exact_samples']:.4f} "
                f"| {r['device_s_per_call'] * 1e3:.2f} | {r['wall_s_per_call'] * 1e3:.1f} |"
                for r in kl_rows]
        out.append("")
    if ais_rows:
        out += [("| model | sampler | seed | AIS test LL (± 3σ) | mean of the last epochs | "
                 "s / epoch | device s / epoch |"), "|---|---|---|---|---|---|---|"]
        out += [f"| {r['model']}, {r['epochs']} epochs | {r['sampler']} | {r['seed']} | "
                f"{r['test_log_likelihood']:.2f} ± {3 * r['ais_stderr']:.2f} | "
                + (f"{r['tail_mean']:.2f} (sd {r['tail_sd']:.2f}, "
                   f"{len(r['tail_log_likelihoods'])})" if "tail_mean" in r else "—")
                + f" | {r['seconds_per_epoch']:.2f} | {r['device_s_per_epoch']:.3f} |"
                for r in ais_rows]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke-level: shorter training of the KL models, 3 epochs, fewer calls "
                        "and AIS temperatures")
    p.add_argument("--part", choices=("kl", "ais", "variance", "all"), default="all")
    p.add_argument("--hidden", type=int, default=64, help="hidden units of the digits RBM")
    p.add_argument("--epochs", type=int, default=None, help="digits epochs (default 20)")
    p.add_argument("--methods", nargs="*", default=None,
                   help="rows of the tables (default: all); e.g. cd1 'cim hybrid-5'")
    p.add_argument("--seed", type=int, default=0,
                   help="AIS part: seed of the initial weights, batches, sampler and AIS (the data "
                        "split stays seed 0)")
    p.add_argument("--topk-runs", type=int, default=None,
                   help="runs per Top-K job (default 2000; --quick: 200)")
    p.add_argument("--reads", type=int, default=100, help="KL part: samples per call")
    p.add_argument("--calls", type=int, default=None, help="KL part: calls pooled (default 50)")
    p.add_argument("--warm", type=int, default=None, help="KL part: calls to settle (default 20)")
    p.add_argument("--tail", type=int, default=0,
                   help="AIS part: also evaluate each of the last TAIL epochs (AIS 1000 "
                        "temperatures x 100 chains; training unchanged) and report their mean: "
                        "the test LL of one epoch moves by up to ~1 nat from one epoch to the next")
    p.add_argument("--lr-decay", choices=("linear",), default=None,
                   help="AIS part: the learning-rate schedule of fit (default: constant)")
    p.add_argument("--lr-decay-start", type=float, default=0.0,
                   help="AIS part: the fraction of the steps before the decay begins")
    p.add_argument("--ais-chains", type=int, default=None)
    p.add_argument("--ais-betas", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--emulator-params", type=json.loads, default=None, metavar="JSON",
                   help="override fields of the emulator profile's CIMParameters, e.g. "
                        "'{\"sigma_add\": 0, \"round_trips\": 1000}' (qboson-550 before its "
                        "noise and run length were calibrated)")
    args = p.parse_args(argv)
    if args.emulator_params is not None and not isinstance(args.emulator_params, dict):
        p.error("--emulator-params takes a JSON object of CIMParameters fields")
    q = args.quick
    args.epochs = args.epochs or (3 if q else 20)
    args.topk_runs = args.topk_runs or (200 if q else 2000)
    args.calls = args.calls or (5 if q else 50)
    args.warm = args.warm if args.warm is not None else (5 if q else 20)
    args.ais_chains = args.ais_chains or (50 if q else 200)
    args.ais_betas = args.ais_betas or (500 if q else 3000)
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    kl_rows = kl_table(args) if args.part in ("kl", "all") else []
    ais_rows = ais_table(args) if args.part in ("ais", "all") else []
    variance = variance_table(args) if args.part == "variance" else None
    print(markdown(kl_rows, ais_rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"kl": kl_rows, "ais": ais_rows, "variance": variance}, f, indent=2,
                      default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
