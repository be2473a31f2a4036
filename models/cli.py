"""``kpp train``: train a Boltzmann machine whose negative phase a device samples.

    kpp train rbm --dataset digits --device sa.cpu --epochs 3 --out runs/demo
    kpp train bm  --dataset bas --device sa.cpu --epochs 200 --out runs/bm-bas
    kpp train dbn --dataset digits --hidden 64,32 --epochs 5 --out runs/dbn
    kpp train rbm --dataset digits --sampler pcd --epochs 3 --out runs/pcd   # the baseline
    kpp train qgan --prior boltzmann --device sa.cpu --steps 3000 --out runs/qgan
    kpp train qdiffusion --steps 2000 --energy-steps 1000 --out runs/qdiffusion

Writes to ``--out``: ``checkpoint.pt`` (load with :func:`kpp_sdk.models.load_checkpoint`),
``log.json`` (configuration, per-epoch objective, test log-likelihood, timings, sampler reports),
``samples.png`` (a grid of model samples drawn by the device) and ``loglik.png`` (the test
log-likelihood curve). ``qgan`` writes ``checkpoint.pt``, ``log.json`` (losses, sample-quality
metrics) and ``samples.png``; ``qdiffusion`` writes ``checkpoint.pt``, ``log.json`` (losses,
held-out perplexity bounds with and without the energy), ``samples.txt`` and
``energy_ising.npz`` (the Boltzmann energy as an Ising problem). Everything is checked (data set, device, model size against the device's
``max_spins``, a ``--resume`` checkpoint's shape) before the first training step.

This module imports nothing heavy at import time: torch and matplotlib load inside the command.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

MODELS = ("rbm", "bm", "dbn", "qgan", "qdiffusion")
DEFAULT_HIDDEN = {"rbm": "64", "bm": "8", "dbn": "64,32", "qgan": "16", "qdiffusion": "256"}
DEFAULT_DATASET = {"qgan": "digits", "qdiffusion": "tinyshakespeare"}
DEFAULT_BATCH = {"qgan": 64, "qdiffusion": 128}
DEFAULT_LR = {"qgan": 1e-3, "qdiffusion": 2e-3}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train an RBM, BM or DBN with a device sampling the negative phase",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", choices=MODELS,
                   help="rbm, bm (fully connected), dbn (RBM stack), qgan (GAN with a Boltzmann "
                        "prior) or qdiffusion (diffusion LM with a Boltzmann energy)")
    p.add_argument("--dataset", default=None,
                   help="digits (8x8, scikit-learn; the default, and qgan's only), bas (bars and "
                        "stripes 3x3), bas-RxC, mnist; qdiffusion: tinyshakespeare")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST files (mnist only)")
    p.add_argument("--device", default="sa.cpu",
                   help="device that samples the model (see `kpp devices`)")
    p.add_argument("--sampler", choices=("device", "pcd", "cd"), default="device",
                   help="device: BoltzmannSampler on --device; pcd/cd: Gibbs baselines in torch")
    p.add_argument("--epochs", type=int, default=10, help="epochs (per layer for dbn)")
    p.add_argument("--out", default=None, help="output folder (default runs/MODEL-DATASET)")
    p.add_argument("--hidden", default=None,
                   help="hidden units (rbm 64, bm 8); dbn: comma-separated layer sizes (64,32); "
                        "qgan: hidden units of the RBM prior (16); qdiffusion: width of the "
                        "denoiser (256)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default 20 (rbm, bm, dbn), 64 (qgan), 128 (qdiffusion)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate: SGD 0.05 (rbm, bm, dbn), Adam 1e-3 (qgan), "
                        "AdamW 2e-3 (qdiffusion)")
    p.add_argument("--momentum", type=float, default=0.5)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--num-reads", type=int, default=None,
                   help="samples per negative phase (default: the batch size)")
    p.add_argument("--sweeps", type=int, default=1,
                   help="sweeps per job on devices with a num_sweeps option in Boltzmann sampling "
                        "mode; chains persist across jobs, so few are needed")
    p.add_argument("--clamped-sweeps", type=int, default=20,
                   help="sweeps per clamped (positive-phase) job of a bm with hidden units")
    p.add_argument("--sample-sweeps", type=int, default=1000,
                   help="sweeps per read for the samples figure (devices with num_sweeps)")
    p.add_argument("--mode", choices=("auto", "sample", "anneal"), default="auto",
                   help="device sampling mode (BoltzmannSampler)")
    p.add_argument("--beta", default=None,
                   help="device inverse temperature: a number, or 'estimate' (mode anneal)")
    p.add_argument("-k", "--k", type=int, default=1, dest="k", help="Gibbs steps for cd/pcd")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="device option passed to every job, e.g. -o acceptance=gibbs")
    p.add_argument("--eval", choices=("auto", "exact", "ais", "none"), default="auto",
                   help="test log-likelihood: exact when the model can be enumerated, else AIS")
    p.add_argument("--eval-every", type=int, default=1, help="epochs between evaluations")
    p.add_argument("--ais-chains", type=int, default=100)
    p.add_argument("--ais-betas", type=int, default=1000)
    p.add_argument("--finetune-epochs", type=int, default=20,
                   help="dbn: supervised epochs of the classifier (data sets with labels)")
    p.add_argument("--resume", default=None,
                   help="start from this checkpoint (it must hold a model of the same shape)")
    p.add_argument("--torch-device", default="cpu", help="torch device of the model (cpu, cuda)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch, BLAS and devices with a num_threads option "
                        "(small models run fastest on one)")
    g = p.add_argument_group("qgan and qdiffusion")
    g.add_argument("--steps", type=int, default=None,
                   help="training steps (qgan 3000; qdiffusion: of the denoiser, 2000)")
    g.add_argument("--prior", choices=("boltzmann", "bernoulli", "gaussian"), default="boltzmann",
                   help="qgan latent prior: an RBM sampled on --device, or a baseline")
    g.add_argument("--latent", type=int, default=16, help="qgan latent dimension")
    g.add_argument("--prior-lr", type=float, default=1e-2, help="qgan: SGD rate of the prior")
    g.add_argument("--entropy-weight", type=float, default=0.1,
                   help="qgan: weight of the prior's entropy bonus")
    g.add_argument("--seq-len", type=int, default=16, help="qdiffusion: characters per sequence")
    g.add_argument("--layers", type=int, default=1, help="qdiffusion: residual MLP blocks")
    g.add_argument("--energy-steps", type=int, default=1000,
                   help="qdiffusion: NCE steps of the Boltzmann energy")
    g.add_argument("--reverse-steps", type=int, default=4,
                   help="qdiffusion: reverse steps of the sampler and of the perplexity bound")
    g.add_argument("--candidates", type=int, default=16,
                   help="qdiffusion: importance-sampling candidates per reverse step")
    g.add_argument("--eval-samples", type=int, default=64,
                   help="qdiffusion: importance samples K per term of the perplexity bound")
    g.add_argument("--eval-sequences", type=int, default=512,
                   help="qdiffusion: held-out sequences for the perplexity bound")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


# --- helpers ---------------------------------------------------------------------------------


def _hidden_sizes(args: argparse.Namespace) -> list[int]:
    from kpp_sdk.errors import InvalidOptionError

    text = args.hidden if args.hidden is not None else DEFAULT_HIDDEN[args.model]
    try:
        sizes = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise InvalidOptionError(
            f"--hidden must be integers separated by commas, got {text!r}") from None
    if args.model != "dbn" and len(sizes) != 1:
        raise InvalidOptionError(f"--hidden for {args.model} is one number, got {text!r}")
    if not sizes or any(s < (0 if args.model == "bm" else 1) for s in sizes):
        raise InvalidOptionError(f"--hidden sizes must be positive, got {text!r}")
    return sizes


def _resolve_defaults(args: argparse.Namespace) -> None:
    """Defaults that depend on the model (``None`` in the parser)."""
    if args.dataset is None:
        args.dataset = DEFAULT_DATASET.get(args.model, "digits")
    if args.batch_size is None:
        args.batch_size = DEFAULT_BATCH.get(args.model, 20)
    if args.lr is None:
        args.lr = DEFAULT_LR.get(args.model, 0.05)
    if args.steps is None:
        args.steps = 3000 if args.model == "qgan" else 2000


def _check_args(args: argparse.Namespace) -> None:
    from kpp_sdk.errors import InvalidOptionError

    for name in ("steps", "latent", "seq_len", "layers", "energy_steps", "reverse_steps",
                 "candidates", "eval_samples", "eval_sequences"):
        v = getattr(args, name)
        if v < (0 if name in ("steps", "energy_steps", "layers") else 1):
            raise InvalidOptionError(f"--{name.replace('_', '-')} must be positive, got {v}")
    if args.reverse_steps > args.seq_len:
        raise InvalidOptionError(
            f"--reverse-steps ({args.reverse_steps}) cannot exceed --seq-len ({args.seq_len})")
    for name in ("epochs", "threads", "eval_every", "ais_chains", "ais_betas", "batch_size",
                 "sweeps", "clamped_sweeps", "sample_sweeps", "k"):
        v = getattr(args, name)
        if v < (0 if name == "epochs" else 1):
            raise InvalidOptionError(f"--{name.replace('_', '-')} must be positive, got {v}")
    if args.num_reads is not None and args.num_reads < 1:
        raise InvalidOptionError(f"--num-reads must be positive, got {args.num_reads}")


def _limit_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # BLAS keeps its own thread count
        return
    threadpool_limits(n)


def _beta(text: str | None) -> Any:
    if text is None or text == "estimate":
        return text
    try:
        return float(text)
    except ValueError:
        from kpp_sdk.errors import InvalidOptionError

        raise InvalidOptionError(f"--beta must be a number or 'estimate', got {text!r}") from None


def _device_sampler(args, device, num_reads: int, *, sweeps: int, seed: int):
    """A BoltzmannSampler on ``device``; ``num_sweeps`` is set only for devices declaring it
    (capabilities, never names, decide)."""
    from kpp_sdk.cli import _parse_option

    from .samplers import BoltzmannSampler, supports_boltzmann_sampling

    opts = dict(_parse_option(o) for o in args.option)
    sampling = args.mode == "sample" or (args.mode == "auto"
                                         and supports_boltzmann_sampling(device))
    if "num_threads" in device.OPTIONS and "num_threads" not in opts:
        opts["num_threads"] = args.threads
    clamped = dict(opts)
    if sampling and "num_sweeps" in device.OPTIONS and "num_sweeps" not in opts:
        opts["num_sweeps"] = sweeps
        clamped["num_sweeps"] = max(sweeps, args.clamped_sweeps)
    return BoltzmannSampler(device, num_reads, beta=_beta(args.beta), mode=args.mode, seed=seed,
                            clamped_options=clamped, **opts)


def _sampler(args, device, num_reads: int):
    from .samplers import ContrastiveDivergence, PersistentContrastiveDivergence

    if args.sampler == "cd":
        return ContrastiveDivergence(args.k, seed=args.seed)
    if args.sampler == "pcd":
        return PersistentContrastiveDivergence(args.k, num_chains=num_reads, seed=args.seed)
    return _device_sampler(args, device, num_reads, sweeps=args.sweeps, seed=args.seed)


def _generation_sampler(args, device, training_sampler):
    from .samplers import BoltzmannSampler

    if not isinstance(training_sampler, BoltzmannSampler):
        return training_sampler
    s = _device_sampler(args, device, 100, sweeps=args.sample_sweeps, seed=args.seed + 1)
    if training_sampler.estimate:
        s.beta = training_sampler.beta  # start from the temperature learned in training
    return s


def _evaluate(model, test, args) -> dict:
    from . import can_enumerate, log_likelihood

    method = args.eval
    if method == "auto":
        method = "exact" if can_enumerate(model) else "ais"
    r = log_likelihood(model, test, method=method, num_chains=args.ais_chains,
                       num_betas=args.ais_betas, seed=args.seed)
    return {"test_log_likelihood": r["log_likelihood"], "log_z": r["log_z"],
            "log_likelihood_stderr": r["stderr"], "eval_method": r["method"]}


def _plot_samples(images, shape, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    images = np.asarray(images)[:100]
    n = images.shape[0]
    cols = min(10, n)
    rows = -(-n // cols)
    r, c = shape
    grid = np.ones((rows * (r + 1) - 1, cols * (c + 1) - 1)) * 0.5
    for k in range(n):
        i, j = divmod(k, cols)
        grid[i * (r + 1): i * (r + 1) + r, j * (c + 1): j * (c + 1) + c] = images[k].reshape(r, c)
    fig, ax = plt.subplots(figsize=(6, 6 * grid.shape[0] / grid.shape[1] + 0.4))
    ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_curves(curves: dict[str, list[dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = 0
    for label, rows in curves.items():
        rows = [r for r in rows if "test_log_likelihood" in r]
        if not rows:
            continue
        x = [r["epoch"] for r in rows]
        y = [r["test_log_likelihood"] for r in rows]
        err = [3 * r["log_likelihood_stderr"] for r in rows]
        ax.errorbar(x, y, yerr=err, marker="o", ms=3, capsize=2, label=label)
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no evaluation (--eval none)", ha="center", va="center",
                transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test log-likelihood (nats per example)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    if hasattr(x, "item") and callable(x.item):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


# --- the command -----------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from kpp_sdk.errors import InvalidOptionError
    from kpp_sdk.io import atomic_write
    from kpp_sdk.registry import get_device

    from . import (
        BoltzmannMachine,
        DeepBeliefNetwork,
        RestrictedBoltzmannMachine,
        fine_tune_classifier,
        fit,
        fit_dbn,
        load_checkpoint,
        make_optimizer,
        save_checkpoint,
    )
    from .datasets import load_dataset

    t_start = time.perf_counter()
    _resolve_defaults(args)
    _check_args(args)
    if args.model == "qgan":
        return _cmd_qgan(args, t_start)
    if args.model == "qdiffusion":
        return _cmd_qdiffusion(args, t_start)
    sizes = _hidden_sizes(args)
    out = Path(args.out or f"runs/{args.model}-{args.dataset}")
    tdev = torch.device(args.torch_device)
    if tdev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOptionError("--torch-device cuda was asked for but torch sees no CUDA device")
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    _limit_threads(args.threads)

    ds = load_dataset(args.dataset, seed=args.seed, root=args.data_dir)
    V = ds.num_visible
    if args.model == "rbm":
        model = RestrictedBoltzmannMachine(V, sizes[0], generator=gen).to(tdev)
    elif args.model == "bm":
        model = BoltzmannMachine(V, sizes[0], generator=gen).to(tdev)
    else:
        model = DeepBeliefNetwork([V, *sizes], generator=gen).to(tdev)
    if args.resume:
        load_checkpoint(args.resume, model)
    else:
        first = model.rbms[0] if args.model == "dbn" else model
        first.init_visible_bias(torch.as_tensor(ds.train))
    device = get_device(args.device) if args.sampler == "device" else None
    num_reads = args.num_reads or args.batch_size
    sampler = _sampler(args, device, num_reads)
    train = torch.as_tensor(ds.train, device=tdev)
    test = torch.as_tensor(ds.test, device=tdev)
    progress: Any = not args.no_progress
    fit_kw = dict(batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                  weight_decay=args.weight_decay, seed=args.seed, progress=progress)
    eval_s = [0.0]

    def evaluated(m, epoch, test_data):
        if args.eval == "none" or (epoch % args.eval_every and epoch != args.epochs):
            return {}
        t0 = time.perf_counter()
        r = _evaluate(m, test_data, args)
        eval_s[0] += time.perf_counter() - t0
        return r

    # everything that can fail does so here, before any training or output
    for part in (model.rbms if args.model == "dbn" else [model]):
        sampler.check(part)
    (model.rbms[0] if args.model == "dbn" else model).check_visible(train)
    where = f"{device.name}" if device is not None else f"torch ({args.sampler})"
    print(f"kpp train {args.model}: {ds!r}; sampler {sampler!r} on {where}; out {out}",
          file=sys.stderr)
    curves: dict[str, list[dict]] = {}
    result: dict[str, Any] = {}
    if args.model == "dbn":
        def cb(layer, epoch, rbm, stats):
            data = model.sample_up(test, layer, torch.Generator(device=tdev).manual_seed(args.seed))
            return evaluated(rbm, epoch, data)

        histories = fit_dbn(model, train, sampler, epochs=args.epochs, callback=cb, **fit_kw)
        for i, h in enumerate(histories):
            curves[f"layer {i + 1} (on layer {i} features)" if i else "layer 1 (on the data)"] = h
        if ds.train_labels is not None and args.finetune_epochs > 0:
            clf = model.classifier(int(ds.train_labels.max()) + 1)
            ft = fine_tune_classifier(clf, train, ds.train_labels, epochs=args.finetune_epochs,
                                      batch_size=args.batch_size, seed=args.seed)
            with torch.no_grad():
                pred = clf(test).argmax(1).cpu().numpy()
            result["classifier"] = {"finetune_epochs": args.finetune_epochs,
                                    "train_accuracy": ft[-1]["train_accuracy"],
                                    "test_accuracy": float((pred == ds.test_labels).mean())}
        history = [dict(r, layer=i + 1) for i, h in enumerate(histories) for r in h]
    else:
        opt = make_optimizer(model, lr=args.lr, momentum=args.momentum,
                             weight_decay=args.weight_decay)
        start = []
        if args.eval != "none":
            start = [{"epoch": 0, **evaluated(model, 0, test)}]
        history = start + fit(model, train, sampler, epochs=args.epochs, optimizer=opt,
                              callback=lambda e, m, st: evaluated(m, e, test),
                              **{k: v for k, v in fit_kw.items()
                                 if k not in ("lr", "momentum", "weight_decay")})
        label = sampler.device.name if device is not None else args.sampler
        curves[f"{args.model} / {label}"] = history

    # samples for the figure
    gen_sampler = _generation_sampler(args, device, sampler)
    t0 = time.perf_counter()
    if args.model == "dbn":
        _, images = model.generate(100, gen_sampler)
    else:
        images = gen_sampler.sample(model, 100)[:, :V]
    sample_s = time.perf_counter() - t0

    out.mkdir(parents=True, exist_ok=True)
    ckpt = save_checkpoint(out / "checkpoint.pt", model,
                           extra={"dataset": ds.name, "epochs": args.epochs, "seed": args.seed})
    what = f"{args.model} on {ds.name}, {args.epochs} epochs, sampler {args.sampler}"
    if device is not None:
        what += f" ({device.name})"
    _plot_samples(images.detach().cpu().numpy(), ds.image_shape, out / "samples.png",
                  f"samples: {what}")
    _plot_curves(curves, out / "loglik.png", what)
    train_epochs = [r for r in history if r.get("epoch", 0) > 0 and "seconds" in r]
    last_ll = next((r for r in reversed(history) if "test_log_likelihood" in r), None)
    result.update({
        "final_test_log_likelihood": None if last_ll is None else last_ll["test_log_likelihood"],
        "final_log_likelihood_stderr": (None if last_ll is None
                                        else last_ll["log_likelihood_stderr"]),
        "eval_method": None if last_ll is None else last_ll["eval_method"],
        "train_seconds": sum(r["seconds"] for r in train_epochs),
        "seconds_per_epoch": (sum(r["seconds"] for r in train_epochs) / len(train_epochs)
                              if train_epochs else None),
        "eval_seconds": eval_s[0],
        "sample_seconds": sample_s,
        "total_seconds": time.perf_counter() - t_start,
    })
    log = {
        "format": "kpp-train-log", "version": 1,
        "args": vars(args) | {"func": None},
        "model": model.config(),
        "dataset": {"name": ds.name, "train": list(ds.train.shape), "test": list(ds.test.shape)},
        "sampler": repr(sampler),
        "device": None if device is None else {"name": device.name,
                                                "max_spins": device.properties.max_spins},
        "history": history,
        "result": result,
        "files": {"checkpoint": ckpt.name, "samples": "samples.png", "loglik": "loglik.png"},
    }
    text = json.dumps(_jsonable(log), indent=2)
    atomic_write(out / "log.json", lambda f: f.write(text))
    ll = result["final_test_log_likelihood"]
    ll_text = "n/a" if ll is None else (
        f"{ll:.4f}" + (f" ± {3 * result['final_log_likelihood_stderr']:.4f} (AIS, 3σ)"
                       if result["eval_method"] == "ais" else " (exact)"))
    print(f"test log-likelihood: {ll_text}")
    if "classifier" in result:
        print(f"classifier test accuracy: {result['classifier']['test_accuracy']:.3f}")
    spe = result["seconds_per_epoch"]
    print(f"time: {result['total_seconds']:.1f} s total"
          + (f", {spe:.2f} s per training epoch" if spe else ""))
    print(f"wrote {out / 'checkpoint.pt'}, {out / 'log.json'}, {out / 'samples.png'}, "
          f"{out / 'loglik.png'}")
    return 0


# --- hybrid generative models ------------------------------------------------------------------


def _setup_torch(args: argparse.Namespace):
    import torch

    from kpp_sdk.errors import InvalidOptionError

    tdev = torch.device(args.torch_device)
    if tdev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOptionError("--torch-device cuda was asked for but torch sees no CUDA device")
    torch.manual_seed(args.seed)
    _limit_threads(args.threads)
    return tdev


def _write_log(out: Path, log: dict) -> None:
    from kpp_sdk.io import atomic_write

    text = json.dumps(_jsonable(log), indent=2)
    atomic_write(out / "log.json", lambda f: f.write(text))


def _cmd_qgan(args: argparse.Namespace, t_start: float) -> int:
    import torch

    from kpp_sdk.errors import InvalidOptionError
    from kpp_sdk.registry import get_device

    from .qgan import QGAN, fit_qgan, load_digits_grayscale, make_prior
    from .sample_quality import DigitClassifier, sample_quality

    if args.dataset != "digits":
        raise InvalidOptionError(
            f"kpp train qgan trains on the 8x8 digits only, got --dataset {args.dataset}")
    sizes = _hidden_sizes(args)
    _setup_torch(args)
    out = Path(args.out or f"runs/qgan-{args.prior}")
    train, test, ytr, _ = load_digits_grayscale(seed=args.seed)
    device = sampler = None
    if args.prior == "boltzmann":
        device = get_device(args.device)
        sampler = _device_sampler(args, device, args.num_reads or args.batch_size,
                                  sweeps=args.sweeps, seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    prior = make_prior(args.prior, args.latent, sampler=sampler, num_hidden=sizes[0],
                       generator=gen)  # a device too small fails here, before training
    gan = QGAN(prior)
    where = f"prior {args.prior}" + (f" sampled by {sampler!r}" if sampler is not None else "")
    print(f"kpp train qgan: digits 8x8 ({train.shape[0]} train, {test.shape[0]} test); {where}; "
          f"out {out}", file=sys.stderr)
    history = fit_qgan(gan, train, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       prior_lr=args.prior_lr, entropy_weight=args.entropy_weight,
                       seed=args.seed, progress=not args.no_progress,
                       log_every=max(1, min(100, args.steps)))
    t0 = time.perf_counter()
    images = gan.generate(max(100, test.shape[0]), torch.Generator().manual_seed(args.seed + 1))
    sample_s = time.perf_counter() - t0
    clf = DigitClassifier(train, ytr)
    quality = sample_quality(images.numpy(), test, classifier=clf)
    reference = sample_quality(train[: test.shape[0]], test, classifier=clf)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "kpp-qgan", "config": gan.config(), "state_dict": gan.state_dict()},
               out / "checkpoint.pt")
    _plot_samples(images[:100].numpy(), (8, 8), out / "samples.png",
                  f"QGAN samples, prior {args.prior}, {args.steps} steps")
    _write_log(out, {
        "format": "kpp-train-log", "version": 1, "args": vars(args) | {"func": None},
        "model": gan.config(), "history": history,
        "device": None if device is None else {"name": device.name,
                                                "max_spins": device.properties.max_spins},
        "result": {"sample_quality": quality, "reference_train_vs_test": reference,
                   "sample_seconds": sample_s,
                   "total_seconds": time.perf_counter() - t_start},
        "files": {"checkpoint": "checkpoint.pt", "samples": "samples.png"}})
    print("sample quality (samples | training images as reference):")
    for key in ("nn_precision", "nn_recall", "classifier_score", "confidence",
                "class_coverage"):
        print(f"  {key:17s} {quality[key]:8.3f} | {reference[key]:8.3f}")
    print(f"time: {time.perf_counter() - t_start:.1f} s total")
    print(f"wrote {out / 'checkpoint.pt'}, {out / 'log.json'}, {out / 'samples.png'}")
    return 0


def _cmd_qdiffusion(args: argparse.Namespace, t_start: float) -> int:
    import torch

    from .qdiffusion import (
        QDiffusion,
        fit_diffusion,
        fit_energy,
        load_text_corpus,
        perplexity,
    )

    sizes = _hidden_sizes(args)
    tdev = _setup_torch(args)
    corpus = load_text_corpus(args.dataset)  # an unknown corpus is a one-line error
    out = Path(args.out or f"runs/qdiffusion-{args.dataset}")
    gen = torch.Generator().manual_seed(args.seed)
    model = QDiffusion(args.seq_len, corpus.tokenizer.vocab_size, hidden=sizes[0],
                       num_layers=args.layers, generator=gen).to(tdev)
    test = corpus.blocks("test", args.seq_len, args.eval_sequences)
    print(f"kpp train qdiffusion: {corpus!r}; {args.seq_len} characters per sequence, energy "
          f"over {model.energy_ising().n} one-hot units; out {out}", file=sys.stderr)
    progress = not args.no_progress
    hist_mu = fit_diffusion(model, corpus, steps=args.steps, batch_size=args.batch_size,
                            lr=args.lr, seed=args.seed, progress=progress)
    hist_e = fit_energy(model, corpus, steps=args.energy_steps, batch_size=args.batch_size,
                        mask_steps=args.reverse_steps, seed=args.seed + 1, progress=progress)
    t0 = time.perf_counter()
    orders = torch.rand(test.shape, generator=torch.Generator().manual_seed(args.seed + 2))
    orders = orders.argsort(1)
    bounds = {}
    for label, use in (("with_energy", True), ("without_energy", False)):
        r = model.nll_bound(test, steps=args.reverse_steps, num_samples=args.eval_samples,
                            use_energy=use, orders=orders,
                            generator=torch.Generator().manual_seed(args.seed + 3))
        bounds[label] = {"perplexity": perplexity(r["nll"], args.seq_len),
                         "nll_per_char": float(r["nll"].mean()) / args.seq_len,
                         "log_z_bias_per_char": float(r["log_z_bias"].mean()) / args.seq_len,
                         "ess": float(r["ess"].mean())}
    eval_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(args.seed + 4)
    with_e = model.generate(8, steps=args.reverse_steps, k=args.candidates, generator=g)
    without_e = model.generate(8, steps=args.reverse_steps, k=1, generator=g)
    dec = corpus.tokenizer.decode
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "kpp-qdiffusion", "config": model.config(),
                "alphabet": corpus.tokenizer.alphabet, "state_dict": model.state_dict()},
               out / "checkpoint.pt")
    model.energy_ising().save(out / "energy_ising.npz")
    header = (f"# {args.reverse_steps} reverse steps; with the energy: importance sampling over "
              f"{args.candidates} candidates per step")
    lines = [header, "## with the energy"]
    lines += [repr(dec(x)) for x in with_e] + ["## the proposal alone"]
    lines += [repr(dec(x)) for x in without_e]
    (out / "samples.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _write_log(out, {
        "format": "kpp-train-log", "version": 1, "args": vars(args) | {"func": None},
        "model": model.config(), "corpus": repr(corpus),
        "history": {"diffusion": hist_mu, "energy": hist_e},
        "result": {"perplexity_bound": bounds, "eval_sequences": int(test.shape[0]),
                   "estimator": f"{args.reverse_steps}-step evidence bound, K="
                                f"{args.eval_samples} importance samples (same orders for both)",
                   "eval_seconds": eval_s, "total_seconds": time.perf_counter() - t_start},
        "files": {"checkpoint": "checkpoint.pt", "samples": "samples.txt",
                  "energy": "energy_ising.npz"}})
    for label, b in bounds.items():
        print(f"held-out perplexity bound {label.replace('_', ' ')}: {b['perplexity']:.3f} "
              f"({b['nll_per_char']:.4f} nats/char)")
    print("samples with the energy:")
    for x in with_e[:4]:
        print(f"  {dec(x)!r}")
    print(f"time: {time.perf_counter() - t_start:.1f} s total")
    print(f"wrote {out / 'checkpoint.pt'}, {out / 'log.json'}, {out / 'samples.txt'}, "
          f"{out / 'energy_ising.npz'}")
    return 0
