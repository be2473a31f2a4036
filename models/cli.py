"""``kpp train``: train a model whose Boltzmann machine a device samples.

What the command does and writes, for users, is :data:`DESCRIPTION` (``kpp train --help``).

Stopping and resuming: every model writes ``checkpoint.pt`` atomically, with the complete
training state (:func:`kpp_sdk.models.load_training_state`), after every epoch (rbm, bm, dbn)
or every logged step (qgan, qdiffusion: ``log_every`` = 100 steps). The first Ctrl-C lets the
current batch finish, saves a checkpoint at that batch and exits with status 130, printing the
command that resumes; ``--resume`` continues with the results of a run that never stopped
(the loops' ``state``/``on_checkpoint``/``stop`` arguments, :func:`kpp_sdk.models.fit`).

This module imports nothing heavy at import time: torch and matplotlib load inside the command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from kpp_sdk.io import jsonable

MODELS = ("rbm", "bm", "dbn", "qgan", "qdiffusion")
DEFAULT_HIDDEN = {"rbm": "64", "bm": "8", "dbn": "64,32", "qgan": "16", "qdiffusion": "256"}
DEFAULT_DATASET = {"qgan": "digits", "qdiffusion": "tinyshakespeare"}
DEFAULT_BATCH = {"qgan": 64, "qdiffusion": 128}
DEFAULT_LR = {"rbm": 0.1, "qgan": 1e-3, "qdiffusion": 2e-3}
#: Gibbs sweeps after every device sample (the hybrid sampler) on devices that run their own
#: dynamics (no Boltzmann sampling mode, e.g. cim.emulator); docs/models.md has the measurements.
HYBRID_GIBBS_STEPS = 20
LOG_EVERY = 100  # steps between log rows and checkpoints of qgan and qdiffusion

#: Settings a resumed run may change; every other one must be the saved run's (they decide
#: the results). ``--epochs`` (``--steps``) may be raised to train longer.
MAY_CHANGE_ON_RESUME = frozenset({
    "epochs", "steps", "energy_steps", "out", "resume", "no_progress", "threads", "eval",
    "eval_every", "ais_chains", "ais_betas", "sample_sweeps", "finetune_epochs", "candidates",
    "eval_samples", "eval_sequences"})

DESCRIPTION = """\
Train a model whose Boltzmann machine a device samples; write its checkpoint, log and samples.

examples:
  kpp train rbm --dataset digits --device cim.emulator --epochs 5 --out runs/demo
  kpp train rbm --dataset digits --sampler pcd --epochs 3 --out runs/pcd
  kpp train bm --dataset bas --hidden 4 --epochs 200 --batch-size 14 --out runs/bm
  kpp train dbn --dataset digits --hidden 64,32 --epochs 5 --out runs/dbn
  kpp train qgan --device sa.cpu --steps 3000 --out runs/qgan
  kpp train qdiffusion --steps 2000 --energy-steps 1000 --out runs/qdiffusion

written to --out:
  rbm, bm, dbn  checkpoint.pt; log.json (per-epoch objective and test
                log-likelihood, sample quality); samples.png and samples.npy
                (100 samples drawn by the device); loglik.png
  qgan          checkpoint.pt, log.json (losses, sample quality), samples.png,
                samples.npy
  qdiffusion    checkpoint.pt, log.json (losses, held-out perplexity bounds),
                samples.txt, energy_ising.npz (the energy as an Ising problem)

checkpoint.pt is rewritten after every epoch (qgan, qdiffusion: every 100 steps). Ctrl-C
saves one at the next batch and exits with status 130, printing the command that resumes;
--resume continues with the results of a run that never stopped. Everything that can fail
(data set, device, model size against the device's limits, a --resume checkpoint) fails
before the first training step, as one line on stderr with exit status 2.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from kpp_sdk.cli import HelpFormatter

    p = subparsers.add_parser(
        "train", help="train a model whose Boltzmann machine a device samples: rbm, bm, dbn, "
                      "qgan or qdiffusion",
        description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("model", choices=MODELS,
                   help="rbm, bm (fully connected), dbn (RBM stack), qgan (GAN with a Boltzmann "
                        "prior) or qdiffusion (diffusion LM with a Boltzmann energy)")
    p.add_argument("--dataset", default=None,
                   help="digits (8x8, scikit-learn; the default, and qgan's only), bas (bars and "
                        "stripes 3x3), bas-RxC, mnist; qdiffusion: tinyshakespeare")
    p.add_argument("--data-dir", default=None, help="folder holding the MNIST files (mnist only)")
    p.add_argument("--device", default="sa.cpu",
                   help="device that samples the model (see: kpp devices)")
    p.add_argument("--sampler", choices=("device", "pcd", "cd"), default="device",
                   help="device: a BoltzmannSampler on --device; pcd, cd: Gibbs baselines in torch")
    p.add_argument("--epochs", type=int, default=10, help="epochs (per layer for dbn)")
    p.add_argument("--out", default=None, help="output folder (default: runs/MODEL-DATASET)")
    p.add_argument("--hidden", default=None,
                   help="hidden units (default: rbm 64, bm 8); dbn: comma-separated layer sizes "
                        "(64,32); qgan: hidden units of the RBM prior (16); qdiffusion: width of "
                        "the denoiser (256)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="examples per step (default: 20 for rbm, bm, dbn; 64 qgan; 128 "
                        "qdiffusion)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: SGD 0.1 for rbm, 0.05 for bm and dbn; Adam "
                        "1e-3 qgan; AdamW 2e-3 qdiffusion)")
    p.add_argument("--momentum", type=float, default=0.5,
                   help="SGD momentum (rbm, bm, dbn)")
    p.add_argument("--weight-decay", type=float, default=1e-4,
                   help="SGD weight decay, an L2 penalty on the weights (rbm, bm, dbn)")
    p.add_argument("--lr-decay", choices=("none", "linear"), default="none",
                   help="learning-rate schedule (rbm, bm, dbn): none keeps --lr; linear keeps it "
                        "for the first --lr-decay-start of the steps, then decays it to zero")
    p.add_argument("--lr-decay-start", type=float, default=0.75,
                   help="with --lr-decay linear: the fraction of the steps before the decay "
                        "begins (default 0.75: the last quarter decays)")
    p.add_argument("--num-reads", type=int, default=None,
                   help="samples per negative phase, one device job (default: the batch size)")
    p.add_argument("--sweeps", type=int, default=1,
                   help="sweeps per job on devices with a num_sweeps option in Boltzmann sampling "
                        "mode; chains persist across jobs, so few are needed")
    p.add_argument("--clamped-sweeps", type=int, default=20,
                   help="sweeps per clamped (positive-phase) job of a bm with hidden units")
    p.add_argument("--sample-sweeps", type=int, default=1000,
                   help="sweeps per read for the final samples (devices with num_sweeps)")
    p.add_argument("--mode", choices=("auto", "sample", "anneal"), default="auto",
                   help="device sampling mode: sample (Boltzmann sampling at a given beta), "
                        "anneal (the device's own dynamics) or auto (sample where the device "
                        "has it)")
    p.add_argument("--beta", default=None,
                   help="device inverse temperature: a number, or 'estimate' (the default in "
                        "anneal mode: measured from the samples of every job)")
    p.add_argument("--gibbs-steps", type=int, default=None,
                   help="hybrid sampler: Gibbs sweeps in torch started from every device sample "
                        "(0: the device's samples as they come; default: "
                        f"{HYBRID_GIBBS_STEPS} on devices without a Boltzmann sampling mode, such "
                        "as cim.emulator, else 0)")
    p.add_argument("--topk-runs", type=int, default=None,
                   help="the cloud's post-processing: runs per job, de-duplicated, the "
                        "--num-reads lowest-energy states weighted by exp(-E) (devices with "
                        "output='topk')")
    p.add_argument("-k", "--k", type=int, default=1, dest="k", help="Gibbs steps for cd and pcd")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="device option passed to every job, e.g. -o acceptance=gibbs "
                        "(repeatable; see: kpp devices --options NAME)")
    p.add_argument("--eval", choices=("auto", "exact", "ais", "none"), default="auto",
                   help="test log-likelihood: exact where the model can be enumerated, else "
                        "AIS (auto), or none")
    p.add_argument("--eval-every", type=int, default=1, help="epochs between evaluations")
    p.add_argument("--ais-chains", type=int, default=100,
                   help="AIS: independent annealing chains (the error bar shrinks as "
                        "1/sqrt(chains))")
    p.add_argument("--ais-betas", type=int, default=1000,
                   help="AIS: intermediate inverse temperatures from 0 to 1 (more: less bias)")
    p.add_argument("--finetune-epochs", type=int, default=20,
                   help="dbn: supervised epochs of the classifier (data sets with labels)")
    p.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue the run saved in this checkpoint.pt with the same settings "
                        "(--epochs may be raised); a checkpoint without a training state only "
                        "provides the starting weights")
    p.add_argument("--torch-device", default="cpu", help="torch device of the model (cpu, cuda)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch, BLAS and devices with a num_threads option "
                        "(small models run fastest on one)")
    g = p.add_argument_group("qgan and qdiffusion")
    g.add_argument("--steps", type=int, default=None,
                   help="training steps (default: qgan 3000; qdiffusion: of the denoiser, 2000)")
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
    p.add_argument("--seed", type=int, default=0,
                   help="seed of every random choice: initial weights, batches, device jobs "
                        "(the same seed gives the same run)")
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
    if args.gibbs_steps is not None and args.gibbs_steps < 0:
        raise InvalidOptionError(f"--gibbs-steps must be 0 or more, got {args.gibbs_steps}")
    if not 0.0 <= args.lr_decay_start < 1.0:
        raise InvalidOptionError(
            f"--lr-decay-start is the fraction of the steps before the decay begins, in [0, 1); "
            f"got {args.lr_decay_start}")
    if args.lr_decay != "none" and args.model in ("qgan", "qdiffusion"):
        raise InvalidOptionError(
            f"--lr-decay applies to the SGD-trained models (rbm, bm, dbn); {args.model} trains "
            f"with its own optimizer at a constant --lr: leave --lr-decay out")
    if args.topk_runs is not None and args.topk_runs < 100:
        raise InvalidOptionError(
            f"--topk-runs must be at least 100 (the final samples are a Top-K of 100 states), "
            f"got {args.topk_runs}")


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
    gibbs = args.gibbs_steps
    if gibbs is None:
        gibbs = 0 if sampling else HYBRID_GIBBS_STEPS
    if sampling and "num_sweeps" in device.OPTIONS and "num_sweeps" not in opts:
        opts["num_sweeps"] = sweeps
        clamped["num_sweeps"] = max(sweeps, args.clamped_sweeps)
    return BoltzmannSampler(device, num_reads, beta=_beta(args.beta), mode=args.mode, seed=seed,
                            clamped_options=clamped, gibbs_steps=gibbs,
                            topk_runs=args.topk_runs, **opts)


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
        # the temperature learned in training: the running beta and the thermostat's knob
        s.beta, s.knob = training_sampler.beta, training_sampler.knob
    return s


@contextlib.contextmanager
def _compile_notice():
    """Say "compiling kernels (first run only)" when numba really compiles a kernel (its
    ``numba:compile`` event; loading one from its cache raises none); yields the list that
    receives the time compiling started."""
    started: list[float] = []
    try:
        from numba.core import event
    except ImportError:  # pragma: no cover - numba is a dependency
        yield started
        return

    class Notice(event.Listener):
        def on_start(self, ev):
            if not started:
                started.append(time.perf_counter())
                # os.write: nothing buffered to interleave with
                os.write(2, b"compiling kernels (first run only) ...\n")

        def on_end(self, ev):
            pass

    with event.install_listener("numba:compile", Notice()):
        yield started


def _warm_up(sampler, model) -> None:
    """Run one tiny job of the kinds training sends (:meth:`BoltzmannSampler.warm_up`) before
    the progress bar starts, so that kernels compiled on a machine's first run do not show as
    a first batch of half a minute; say so when it compiles."""
    from .samplers import BoltzmannSampler

    if not isinstance(sampler, BoltzmannSampler):
        return
    with _compile_notice() as started:
        sampler.warm_up(model)
    if started:
        print(f"kernels compiled in {time.perf_counter() - started[0]:.1f} s; later runs load "
              "them from the cache", file=sys.stderr)


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

    from kpp_sdk.io import atomic_write

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
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), binary=True)
    plt.close(fig)


def _save_array(path: Path, array) -> None:
    import numpy as np

    from kpp_sdk.io import atomic_write

    atomic_write(path, lambda f: np.save(f, np.asarray(array)), binary=True)


def _plot_curves(curves: dict[str, list[dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from kpp_sdk.io import atomic_write

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
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), binary=True)
    plt.close(fig)


def _settings(args: argparse.Namespace) -> dict:
    """The run's settings as plain values: what log.json and the checkpoint record (no
    argparse internals)."""
    return {k: jsonable(v) for k, v in vars(args).items() if k not in ("func", "command")}


def _write_log(out: Path, log: dict) -> None:
    from kpp_sdk.io import atomic_write

    text = json.dumps(jsonable(log), indent=2)
    atomic_write(out / "log.json", lambda f: f.write(text))


# --- sample quality ----------------------------------------------------------------------------


def _digit_quality(images, ds_train, ds_train_labels, ds_test, ds_test_labels) -> dict:
    """How recognisable ``images`` (one per row, pixels in [0, 1]) are as digits:
    :class:`~kpp_sdk.models.sample_quality.DigitClassifier` fitted on (at most 10,000 of) the
    training images, its mean top-class probability on the samples and on as many held-out
    images (the reference), the number of classes among the samples and of distinct samples."""
    import numpy as np

    from .sample_quality import DigitClassifier

    images = np.asarray(images, dtype=np.float64)
    k = min(10_000, len(ds_train))
    clf = DigitClassifier(ds_train[:k], ds_train_labels[:k])
    mine = clf.score(images)
    ref = clf.score(np.asarray(ds_test[: len(images)], dtype=np.float64))
    return {
        "num_samples": int(images.shape[0]),
        "distinct_samples": int(np.unique(images, axis=0).shape[0]),
        "classes": int(mine["class_coverage"]),
        "confidence": mine["confidence"],
        "classifier_score": mine["classifier_score"],
        "held_out_confidence": ref["confidence"],
        "held_out_classes": int(ref["class_coverage"]),
        "classifier_test_accuracy": clf.accuracy(ds_test, ds_test_labels),
        "classifier": "multinomial logistic regression fitted on the training images",
    }


def _drawn_by(sampler, args) -> str:
    """Who drew the samples, in words (the hybrid says so)."""
    steps = getattr(sampler, "gibbs_steps", 0)
    if getattr(sampler, "device", None) is None:
        return f"by {args.sampler}"
    if steps:
        return (f"by {sampler.device.name}, each then {steps} Gibbs sweep{'s' * (steps > 1)} "
                "in torch (hybrid)")
    return f"by {sampler.device.name}"


def _print_digit_quality(q: dict, who: str) -> None:
    print(f"samples: {q['num_samples']} drawn {who}, {q['distinct_samples']} distinct; a digit "
          f"classifier puts them in {q['classes']} of 10 classes with mean confidence "
          f"{q['confidence']:.2f} (held-out real digits: {q['held_out_confidence']:.2f})")


# --- stopping and resuming ---------------------------------------------------------------------


def _train_parser() -> argparse.ArgumentParser:
    sub = argparse.ArgumentParser(prog="kpp").add_subparsers()
    add_parser(sub)
    return sub.choices["train"]


def resume_command(args: argparse.Namespace, checkpoint: Path) -> str:
    """The ``kpp train`` command line that continues this run from ``checkpoint``: the model,
    every setting that differs from its default, and ``--resume``."""
    parser = _train_parser()
    base = parser.parse_args([args.model])
    _resolve_defaults(base)
    words = ["kpp", "train", args.model]
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "resume", "model"):
            continue
        value, default = getattr(args, action.dest, None), getattr(base, action.dest, None)
        if value == default:
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            words.append(flag)
        elif isinstance(value, list):
            for v in value:
                words += [flag, str(v)]
        else:
            words += [flag, str(value)]
    words += ["--resume", str(checkpoint)]
    return " ".join(shlex.quote(w) for w in words)


class _Run:
    """One run's checkpoints: the state ``--resume`` hands over, the checkpoint written after
    every epoch, and Ctrl-C (first: stop at the next batch and save; second: quit at once)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out: Path | None = None
        self.stop_requested = False
        self.training: dict | None = None  # the resumed checkpoint's training state
        self.cli: dict = {}  # what the command keeps in the checkpoint besides the loop state
        self.extra: dict = {}
        self.last_loop: dict | None = None
        self._rng = None
        if args.resume:
            from .checkpoint import load_training_state

            self.training = load_training_state(args.resume)
            if self.training is not None:
                self._check_settings()
                self.cli = dict(self.training.get("cli", {}))

    def _check_settings(self) -> None:
        from .errors import CheckpointError

        saved = self.training.get("settings")
        if not isinstance(saved, dict) or not isinstance(self.training.get("loop"), dict):
            raise CheckpointError(f"{self.args.resume}: the training state is not one kpp train "
                                  "wrote (no settings or loop state)")
        now = _settings(self.args)
        changed = [k for k in sorted(set(saved) | set(now))
                   if k not in MAY_CHANGE_ON_RESUME and saved.get(k) != now.get(k)]
        loop = self.training["loop"]
        if (self.args.model == "dbn" and loop.get("kind") == "dbn" and loop.get("layer", 0) > 0
                and saved.get("epochs") != now.get("epochs")):
            changed.append("epochs")
        if changed:
            diffs = ", ".join(
                f"{'model' if k == 'model' else '--' + k.replace('_', '-')} "
                f"{saved.get(k)!r} (now {now.get(k)!r})" for k in changed[:6])
            raise CheckpointError(
                f"{self.args.resume} was saved by a run with other settings: {diffs}; resume "
                "with that run's settings (--epochs, --steps, --out and the evaluation settings "
                "may change; a dbn's --epochs only in its first layer)")

    @property
    def loop_state(self) -> dict | None:
        return None if self.training is None else self.training["loop"]

    def restore_rng(self) -> None:
        """The process-wide torch stream as it was when the checkpoint was written."""
        import torch

        if self.training is not None and "torch_rng" in self.training:
            torch.set_rng_state(self.training["torch_rng"])

    def stop(self) -> bool:
        return self.stop_requested

    def save(self, model, loop: dict | None, *, complete: bool = False) -> Path:
        import torch

        from .checkpoint import save_checkpoint

        if loop is not self.last_loop or self._rng is None:
            # the process-wide stream when the loop state was taken: the final save after
            # sampling and plotting keeps it, so a resumed run with more epochs matches
            self._rng = torch.get_rng_state()
        self.last_loop = loop
        training = None
        if loop is not None:
            training = {"format": "kpp-train", "settings": _settings(self.args), "loop": loop,
                        "torch_rng": self._rng, "cli": self.cli}
        return save_checkpoint(self.out / "checkpoint.pt", model,
                               extra={**self.extra, "complete": complete}, training=training)

    @contextlib.contextmanager
    def catching_ctrl_c(self):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            # os.write: a print here could re-enter a stderr write the bar is making
            os.write(2, b"\nkpp train: Ctrl-C: stopping after this batch and saving a checkpoint "
                        b"(Ctrl-C again quits at once, keeping the last one)\n")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def interrupted(self, exc) -> int:
        path = self.out / "checkpoint.pt"
        print(f"kpp train: {exc}; saved {path}\nresume with:\n  "
              f"{resume_command(self.args, path)}", file=sys.stderr)
        return 130


# --- the command -----------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from .errors import TrainingInterrupted

    t_start = time.perf_counter()
    _resolve_defaults(args)
    _check_args(args)
    run = _Run(args)
    commands = {"qgan": _cmd_qgan, "qdiffusion": _cmd_qdiffusion}
    with run.catching_ctrl_c():
        try:
            return commands.get(args.model, _cmd_boltzmann)(args, run, t_start)
        except TrainingInterrupted as exc:
            return run.interrupted(exc)


def _cmd_boltzmann(args: argparse.Namespace, run: _Run, t_start: float) -> int:
    import torch

    from kpp_sdk.errors import InvalidOptionError
    from kpp_sdk.registry import get_device

    from . import fine_tune_classifier, fit, fit_dbn, make_optimizer
    from .datasets import load_dataset

    sizes = _hidden_sizes(args)
    out = run.out = Path(args.out or f"runs/{args.model}-{args.dataset}")
    tdev = torch.device(args.torch_device)
    if tdev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOptionError("--torch-device cuda was asked for but torch sees no CUDA device")
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    _limit_threads(args.threads)

    ds = load_dataset(args.dataset, seed=args.seed, root=args.data_dir)
    V = ds.num_visible
    model = _new_boltzmann_model(args, run, ds, sizes, gen, tdev)
    device = get_device(args.device) if args.sampler == "device" else None
    num_reads = args.num_reads or args.batch_size
    sampler = _sampler(args, device, num_reads)
    train = torch.as_tensor(ds.train, device=tdev)
    test = torch.as_tensor(ds.test, device=tdev)
    progress: Any = not args.no_progress
    fit_kw = dict(batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                  weight_decay=args.weight_decay, seed=args.seed, progress=progress,
                  lr_decay=None if args.lr_decay == "none" else args.lr_decay,
                  lr_decay_start=args.lr_decay_start)
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
    for part in (model.rbms if args.model == "dbn" else [model]):
        _warm_up(sampler, part)
    run.extra = {"dataset": ds.name, "epochs": args.epochs, "seed": args.seed}
    run.restore_rng()
    loop = run.loop_state

    def save(state: dict) -> None:
        run.save(model, state)

    curves: dict[str, list[dict]] = {}
    result: dict[str, Any] = {}
    if args.model == "dbn":
        def cb(layer, epoch, rbm, stats):
            data = model.sample_up(test, layer, torch.Generator(device=tdev).manual_seed(args.seed))
            return evaluated(rbm, epoch, data)

        histories = fit_dbn(model, train, sampler, epochs=args.epochs, callback=cb, state=loop,
                            on_checkpoint=save, stop=run.stop, **fit_kw)
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
        if "start" not in run.cli:
            run.cli["start"] = ([{"epoch": 0, **evaluated(model, 0, test)}]
                                if args.eval != "none" else [])
        history = run.cli["start"] + fit(
            model, train, sampler, epochs=args.epochs, optimizer=opt,
            callback=lambda e, m, st: evaluated(m, e, test), state=loop, on_checkpoint=save,
            stop=run.stop, **{k: v for k, v in fit_kw.items()
                              if k not in ("lr", "momentum", "weight_decay")})
        label = sampler.device.name if device is not None else args.sampler
        curves[f"{args.model} / {label}"] = history

    gen_sampler, binary, images, sample_s = _final_samples(args, device, sampler, model, V)

    out.mkdir(parents=True, exist_ok=True)
    ckpt = run.save(model, run.last_loop, complete=True)
    what = f"{args.model} on {ds.name}, {args.epochs} epochs, sampler {args.sampler}"
    if device is not None:
        steps = getattr(sampler, "gibbs_steps", 0)
        what += f" ({device.name}" + (f" + {steps} Gibbs sweeps, hybrid)" if steps else ")")
    _save_array(out / "samples.npy", images)
    _plot_samples(images, ds.image_shape, out / "samples.png", f"samples: {what}")
    _plot_curves(curves, out / "loglik.png", what)
    if ds.train_labels is not None and ds.test_labels is not None:
        result["sample_quality"] = _digit_quality(binary, ds.train, ds.train_labels, ds.test,
                                                  ds.test_labels)
        result["sample_quality"]["drawn_by"] = _drawn_by(gen_sampler, args)
    result.update(_summary(history, eval_s[0], sample_s, t_start))
    files = {"checkpoint": ckpt.name, "samples": "samples.png", "samples_array": "samples.npy",
             "loglik": "loglik.png"}
    _write_log(out, {
        "format": "kpp-train-log", "version": 1, "args": _settings(args),
        "model": model.config(),
        "dataset": {"name": ds.name, "train": list(ds.train.shape), "test": list(ds.test.shape)},
        "sampler": repr(sampler),
        "device": None if device is None else {"name": device.name,
                                                "max_spins": device.properties.max_spins},
        "history": history, "result": result, "files": files})
    _print_result(result, out, files)
    return 0


def _new_boltzmann_model(args, run: _Run, ds, sizes: list[int], gen, tdev):
    """The model of ``kpp train rbm|bm|dbn``: new (visible biases from the data) or with the
    weights of ``--resume``'s checkpoint."""
    import torch

    from . import BoltzmannMachine, DeepBeliefNetwork, RestrictedBoltzmannMachine, load_checkpoint

    V = ds.num_visible
    if args.model == "rbm":
        model = RestrictedBoltzmannMachine(V, sizes[0], generator=gen).to(tdev)
    elif args.model == "bm":
        model = BoltzmannMachine(V, sizes[0], generator=gen).to(tdev)
    else:
        model = DeepBeliefNetwork([V, *sizes], generator=gen).to(tdev)
    if args.resume:
        load_checkpoint(args.resume, model)
        if run.training is None:
            print(f"kpp train: {args.resume} holds no training state; starting a new run from "
                  "its weights", file=sys.stderr)
    else:
        first = model.rbms[0] if args.model == "dbn" else model
        first.init_visible_bias(torch.as_tensor(ds.train))
    return model


def _final_samples(args, device, sampler, model, num_visible: int):
    """The 100 samples of the figure, drawn by the training sampler's kind at its learned
    temperature: ``(sampler, binary, images, seconds)`` (a dbn's images are ``p(v = 1 | h1)``,
    smoother than its binary samples)."""
    gen_sampler = _generation_sampler(args, device, sampler)
    t0 = time.perf_counter()
    if args.model == "dbn":
        binary, images = model.generate(100, gen_sampler)
    else:
        binary = images = gen_sampler.sample(model, 100)[:, :num_visible]
    images, binary = images.detach().cpu().numpy(), binary.detach().cpu().numpy()
    return gen_sampler, binary, images, time.perf_counter() - t0


def _summary(history: list[dict], eval_s: float, sample_s: float, t_start: float) -> dict:
    """The final test log-likelihood and the run's times, for ``log.json``'s result."""
    train_epochs = [r for r in history if r.get("epoch", 0) > 0 and "seconds" in r]
    last_ll = next((r for r in reversed(history) if "test_log_likelihood" in r), None)
    return {
        "final_test_log_likelihood": None if last_ll is None else last_ll["test_log_likelihood"],
        "final_log_likelihood_stderr": (None if last_ll is None
                                        else last_ll["log_likelihood_stderr"]),
        "eval_method": None if last_ll is None else last_ll["eval_method"],
        "train_seconds": sum(r["seconds"] for r in train_epochs),
        "seconds_per_epoch": (sum(r["seconds"] for r in train_epochs) / len(train_epochs)
                              if train_epochs else None),
        "eval_seconds": eval_s,
        "sample_seconds": sample_s,
        "total_seconds": time.perf_counter() - t_start,
    }


def _print_result(result: dict, out: Path, files: dict) -> None:
    ll = result["final_test_log_likelihood"]
    ll_text = "n/a" if ll is None else (
        f"{ll:.4f}" + (f" ± {3 * result['final_log_likelihood_stderr']:.4f} (AIS, 3σ)"
                       if result["eval_method"] == "ais" else " (exact)"))
    print(f"test log-likelihood: {ll_text}")
    if "classifier" in result:
        print(f"classifier test accuracy: {result['classifier']['test_accuracy']:.3f}")
    if "sample_quality" in result:
        _print_digit_quality(result["sample_quality"], result["sample_quality"]["drawn_by"])
    spe = result["seconds_per_epoch"]
    print(f"time: {result['total_seconds']:.1f} s total"
          + (f", {spe:.2f} s per training epoch" if spe else ""))
    print("wrote " + ", ".join(str(out / f) for f in files.values()))


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


#: The sample-quality numbers ``kpp train qgan`` prints: key, label, what it means.
QGAN_METRICS = (
    ("sample_to_data_distance", "sample -> nearest held-out digit",
     "mean Euclidean distance, pixels in [0, 1]; lower: samples look like real digits"),
    ("data_to_sample_distance", "held-out digit -> nearest sample",
     "lower: the samples cover the data (a collapsed generator scores badly)"),
    ("classifier_score", "classifier score",
     "exp(mean KL(p(y|x) || p(y))), from 1 to 10; higher: confident and varied"),
    ("confidence", "classifier confidence", "mean top-class probability, from 0 to 1"),
    ("class_coverage", "classes covered", "digit classes that are some sample's top class"),
)


def _cmd_qgan(args: argparse.Namespace, run: _Run, t_start: float) -> int:
    import numpy as np
    import torch

    from kpp_sdk.errors import InvalidOptionError
    from kpp_sdk.registry import get_device

    from .checkpoint import load_checkpoint
    from .qgan import QGAN, fit_qgan, load_digits_grayscale, make_prior
    from .sample_quality import DigitClassifier, sample_quality

    if args.dataset != "digits":
        raise InvalidOptionError(
            f"kpp train qgan trains on the 8x8 digits only, got --dataset {args.dataset}")
    sizes = _hidden_sizes(args)
    _setup_torch(args)
    out = run.out = Path(args.out or f"runs/qgan-{args.prior}")
    train, test, ytr, yte = load_digits_grayscale(seed=args.seed)
    device = sampler = None
    if args.prior == "boltzmann":
        device = get_device(args.device)
        sampler = _device_sampler(args, device, args.num_reads or args.batch_size,
                                  sweeps=args.sweeps, seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    prior = make_prior(args.prior, args.latent, sampler=sampler, num_hidden=sizes[0],
                       generator=gen)  # a device too small fails here, before training
    gan = QGAN(prior)
    if args.resume:
        load_checkpoint(args.resume, gan)
    where = f"prior {args.prior}" + (f" sampled by {sampler!r}" if sampler is not None else "")
    print(f"kpp train qgan: digits 8x8 ({train.shape[0]} train, {test.shape[0]} test); {where}; "
          f"out {out}", file=sys.stderr)
    if sampler is not None:
        _warm_up(sampler, prior.model)
    run.extra = {"dataset": "digits", "steps": args.steps, "seed": args.seed}
    run.restore_rng()
    history = fit_qgan(gan, train, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       prior_lr=args.prior_lr, entropy_weight=args.entropy_weight,
                       seed=args.seed, progress=not args.no_progress, log_every=LOG_EVERY,
                       state=run.loop_state, on_checkpoint=lambda st: run.save(gan, st),
                       stop=run.stop)
    t0 = time.perf_counter()
    images = gan.generate(max(100, test.shape[0]), torch.Generator().manual_seed(args.seed + 1))
    sample_s = time.perf_counter() - t0
    clf = DigitClassifier(train, ytr)
    quality = sample_quality(images.numpy(), test, classifier=clf)
    reference = sample_quality(train[: test.shape[0]], test, classifier=clf)
    out.mkdir(parents=True, exist_ok=True)
    run.save(gan, run.last_loop, complete=True)
    shown = images[:100].numpy()
    _save_array(out / "samples.npy", shown)
    _plot_samples(shown, (8, 8), out / "samples.png",
                  f"QGAN samples, prior {args.prior}, {args.steps} steps")
    quality["distinct_samples"] = int(np.unique(shown, axis=0).shape[0])
    _write_log(out, {
        "format": "kpp-train-log", "version": 1, "args": _settings(args),
        "model": gan.config(), "history": history,
        "device": None if device is None else {"name": device.name,
                                                "max_spins": device.properties.max_spins},
        "result": {"sample_quality": quality, "reference_train_vs_test": reference,
                   "classifier_test_accuracy": clf.accuracy(test, yte),
                   "metrics": {k: f"{label}: {meaning}" for k, label, meaning in QGAN_METRICS},
                   "sample_seconds": sample_s,
                   "total_seconds": time.perf_counter() - t_start},
        "files": {"checkpoint": "checkpoint.pt", "samples": "samples.png",
                  "samples_array": "samples.npy"}})
    print(f"sample quality of {images.shape[0]} samples against {test.shape[0]} held-out digits "
          "(samples | training digits, what a perfect generator reaches):")
    for key, label, meaning in QGAN_METRICS:
        print(f"  {label:34s} {quality[key]:7.3f} | {reference[key]:7.3f}   ({meaning})")
    print(f"time: {time.perf_counter() - t_start:.1f} s total")
    print(f"wrote {out / 'checkpoint.pt'}, {out / 'log.json'}, {out / 'samples.png'}, "
          f"{out / 'samples.npy'}")
    return 0


def _cmd_qdiffusion(args: argparse.Namespace, run: _Run, t_start: float) -> int:
    import torch

    from .checkpoint import load_checkpoint
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
    out = run.out = Path(args.out or f"runs/qdiffusion-{args.dataset}")
    gen = torch.Generator().manual_seed(args.seed)
    model = QDiffusion(args.seq_len, corpus.tokenizer.vocab_size, hidden=sizes[0],
                       num_layers=args.layers, generator=gen).to(tdev)
    if args.resume:
        load_checkpoint(args.resume, model)
    test = corpus.blocks("test", args.seq_len, args.eval_sequences)
    print(f"kpp train qdiffusion: {corpus!r}; {args.seq_len} characters per sequence, energy "
          f"over {model.energy_ising().n} one-hot units; out {out}", file=sys.stderr)
    progress = not args.no_progress
    run.extra = {"dataset": args.dataset, "steps": args.steps, "seed": args.seed,
                 "alphabet": corpus.tokenizer.alphabet}
    run.restore_rng()
    loop = run.loop_state or {}
    if "diffusion_history" not in run.cli:
        hist_mu = fit_diffusion(
            model, corpus, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
            seed=args.seed, progress=progress, log_every=LOG_EVERY,
            state=loop if loop.get("kind") == "diffusion" else None,
            on_checkpoint=lambda st: run.save(model, st), stop=run.stop)
        run.cli["diffusion_history"] = hist_mu
        loop = {}
    hist_mu = run.cli["diffusion_history"]
    hist_e = fit_energy(model, corpus, steps=args.energy_steps, batch_size=args.batch_size,
                        mask_steps=args.reverse_steps, seed=args.seed + 1, progress=progress,
                        log_every=LOG_EVERY, state=loop if loop.get("kind") == "energy" else None,
                        on_checkpoint=lambda st: run.save(model, st), stop=run.stop)
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
    run.save(model, run.last_loop, complete=True)
    model.energy_ising().save(out / "energy_ising.npz")
    header = (f"# {args.reverse_steps} reverse steps; with the energy: importance sampling over "
              f"{args.candidates} candidates per step")
    lines = [header, "## with the energy"]
    lines += [repr(dec(x)) for x in with_e] + ["## the proposal alone"]
    lines += [repr(dec(x)) for x in without_e]
    text = "\n".join(lines) + "\n"
    from kpp_sdk.io import atomic_write

    atomic_write(out / "samples.txt", lambda f: f.write(text))
    _write_log(out, {
        "format": "kpp-train-log", "version": 1, "args": _settings(args),
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
