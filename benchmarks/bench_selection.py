"""Speed of batch selection against a training step of the digits task (issue 8).

Goal: choosing a batch of 64 from 256 candidates adds at most 20 % to a training step.

The reference is one optimizer step (forward, backward, Adam) of the task's network on a batch of
64 standardised 8x8 digits: the MLP of ``examples/active_selection_digits.py`` (64-128-10), and,
for scale, a small CNN (two 3x3 convolutions, 16 and 32 channels). Selection is timed two ways:

* ``qubo-only``: ``QUBOSelector.select`` given the 256 embeddings and uncertainties (similarity
  matrix, QUBO, ``sa.cpu`` with its selection defaults, repair, exchange polish);
* ``collate``: the whole ``SelectionCollate`` call a DataLoader makes, which also scores the 256
  candidates with the current network (a no-grad forward pass) and collates the chosen 64.

Both are timed interleaved with the training step in the same process, and the ratio
``selection / step`` of the medians (and of the fastest runs, the least disturbed on a shared
machine) is what is reported (``benchmark.extra_info``, printed). Baselines through the same
collate give the floor any selection pays (scoring the pool, collating 256 items). Also here: the wall time a training loop adds per step with QUBO selection through the plain
``DataLoader`` path and through ``PrefetchSelectionLoader`` (selection overlapped with training),
against random batches; and the label-efficiency experiment of
``examples/active_selection_digits.py`` with QUBO on ``sa.cpu`` and ``cim.emulator`` against the
baselines (seeds from ``KPP_BENCH_SEEDS``). Run::

    pytest benchmarks/bench_selection.py --benchmark-only -s
"""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import kpp_sdk
from kpp_sdk.selection import (
    EmbeddingDataset,
    KCenterGreedySelector,
    NumpyStore,
    QUBOSelector,
    RandomSelector,
    SelectionCollate,
    TopUncertaintySelector,
    entropy,
)

BATCH, POOL, ROUNDS = 64, 256, 50


def mlp() -> torch.nn.Module:
    """The network of examples/active_selection_digits.py."""
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(32 * 16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))

    def forward(self, x):
        return self.body(x.view(-1, 1, 8, 8))


NETWORKS = {"mlp": mlp, "cnn": SmallCNN}


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    X = d.data.astype(np.float32)
    X = (X - X.mean(0)) / (X.std(0) + 1.0)
    return torch.from_numpy(X), torch.from_numpy(d.target.astype(np.int64))


def _interleaved(a, b, rounds):
    """Times of ``a`` and ``b`` called alternately, so that load on a shared machine hits both."""
    ta, tb = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t)
    return np.array(ta), np.array(tb)


@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("method", ["qubo-only", "collate", "collate-top-uncertainty",
                                    "collate-k-center"])
def test_select_64_of_256_against_a_training_step(benchmark, digits, network, method):
    from threadpoolctl import threadpool_limits

    # one thread for torch and for NumPy's BLAS alike: on a shared 2-core machine a second BLAS
    # thread waits for a time slice inside every matrix product (10x slower, measured)
    torch.set_num_threads(1)
    limits = threadpool_limits(1)
    X, y = digits
    torch.manual_seed(0)
    model = NETWORKS[network]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)

    def train_step():
        idx = torch.from_numpy(rng.choice(len(y), BATCH, replace=False))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()

    data = EmbeddingDataset(torch.utils.data.TensorDataset(X, y),
                            NumpyStore.from_embeddings(X.numpy(), metric="l2"))
    score = lambda pool, idx: entropy(model(pool[0]))
    selector = {"qubo-only": QUBOSelector(kpp_sdk.get_device("sa.cpu")),
                "collate": QUBOSelector(kpp_sdk.get_device("sa.cpu")),
                "collate-top-uncertainty": TopUncertaintySelector(),
                "collate-k-center": KCenterGreedySelector()}[method]
    collate = SelectionCollate(selector, BATCH, score, seed=0)

    pools = [rng.choice(len(y), POOL, replace=False) for _ in range(8)]
    items = [[data[int(i)] for i in p] for p in pools]
    emb = [data.embeddings(p) for p in pools]
    with torch.no_grad():
        unc = [entropy(model(X[torch.from_numpy(p)])) for p in pools]
    counter = iter(range(10**9))

    def select():
        j = next(counter) % len(pools)
        if method == "qubo-only":
            selector.select(emb[j], BATCH, uncertainty=unc[j], seed=j)
        else:
            collate(items[j])

    for _ in range(3):  # warm-up: numba kernels, torch allocator
        train_step()
        select()
    steps, selects = _interleaved(train_step, select, ROUNDS)
    step_s, select_s = float(np.median(steps)), float(np.median(selects))
    benchmark.pedantic(select, rounds=10, iterations=1)
    ratio = select_s / step_s
    # the ratio of the fastest runs is the least disturbed by other processes on a shared machine
    ratio_min = float(selects.min() / steps.min())
    benchmark.extra_info.update({"network": network, "method": method, "step_ms": step_s * 1e3,
                                 "select_ms": select_s * 1e3, "select_over_step": ratio,
                                 "select_over_step_fastest": ratio_min})
    limits.restore_original_limits()
    print(f"\n[{network:3s} {method:24s}] training step {step_s * 1e3:7.2f} ms   "
          f"select 64/256 {select_s * 1e3:7.2f} ms   ratio {ratio:6.2f} (fastest runs "
          f"{ratio_min:5.2f}; goal <= 0.20)")


# --- label efficiency with cim.emulator (issue 8) ------------------------------------------------

#: cim.emulator settings for selection: 300 round trips (the profile's 1000 buy nothing after the
#: exchange polish) and the cloud's top-k post-processing over 64 runs, the 8 best kept.
CIM_SELECTION_OPTIONS = {"round_trips": 300, "output": "topk", "runs": 64}
CIM_SELECTION_READS = 8


def _digits_example():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "active_selection_digits.py"
    spec = importlib.util.spec_from_file_location("active_selection_digits", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_label_efficiency_qubo_on_cim_emulator_against_baselines(benchmark):
    """The digits experiment of ``examples/active_selection_digits.py`` with QUBO selection on
    ``sa.cpu`` and on ``cim.emulator`` (:data:`CIM_SELECTION_OPTIONS`; the device sees the 550
    most uncertain candidates, its spin limit) against random, top-uncertainty and k-center.

    Seeds from ``KPP_BENCH_SEEDS`` (default ``"0 1 2 3 4"``). Prints the example's table: mean
    accuracy per number of labels, AUC ± s.e. over seeds, paired differences.
    """
    import os

    from threadpoolctl import threadpool_limits

    ex = _digits_example()
    seeds = [int(s) for s in os.environ.get("KPP_BENCH_SEEDS", "0 1 2 3 4").split()]
    args = ex.argparse.Namespace(seeds=seeds, initial=20, batch=20, rounds=9, steps=200,
                                 test_size=597, uncertainty_weight=1.0, diversity_weight=2.0,
                                 reference_weight=2.0)
    weights = {"uncertainty_weight": 1.0, "diversity_weight": 2.0, "reference_weight": 2.0}
    selectors = {
        "random": ex.RandomSelector(),
        "top-uncertainty": ex.TopUncertaintySelector(),
        "k-center": ex.KCenterGreedySelector(),
        "qubo/sa.cpu": QUBOSelector("sa.cpu", **weights),
        "qubo/cim.emulator": QUBOSelector(kpp_sdk.get_device("cim.emulator", **CIM_SELECTION_OPTIONS),
                                          num_reads=CIM_SELECTION_READS, **weights),
    }
    torch.set_num_threads(1)
    limits = threadpool_limits(1)
    results, seconds = {}, {}

    def run_all():
        for name, sel in selectors.items():
            t = time.perf_counter()
            results[name] = [ex.run_curve(name, sel, s, args) for s in seeds]
            seconds[name] = time.perf_counter() - t

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    limits.restore_original_limits()
    ex.summarise(results)
    aucs = {n: float(np.mean([np.mean([a for _, a in c[1:]]) for c in cs])) for n, cs in results.items()}
    benchmark.extra_info.update({"seeds": seeds, "auc": aucs, "seconds": seconds})
    print("seconds per method:", {n: round(s, 1) for n, s in seconds.items()})
    assert set(results) == set(selectors)


# --- overlapping selection with training (PrefetchSelectionLoader) --------------------------------


class _Epochs:
    """``epochs`` passes over a batch sampler, as one iterable (a fresh permutation per pass)."""

    def __init__(self, sampler, epochs):
        self.sampler, self.epochs = sampler, epochs

    def __len__(self):
        return self.epochs * len(self.sampler)

    def __iter__(self):
        for _ in range(self.epochs):
            yield from self.sampler


@pytest.mark.parametrize("network", list(NETWORKS))
def test_training_step_with_prefetched_qubo_selection_against_random_batches(benchmark, digits,
                                                                             network):
    """Wall time per training step of six loops over the digits, in the same process:

    * ``random``: ``DataLoader(TensorDataset, batch_size=64, shuffle=True)`` + one training step;
    * ``plain``: QUBO selection of 64 from 256 through ``DataLoader(..., collate_fn=
      SelectionCollate)`` (load and score the pool with the model, select, collate; nothing
      overlaps) + the step;
    * ``prefetch``: the same selection through ``PrefetchSelectionLoader(prefetch=1)``: the next
      pool is scored, then selected in a background thread while this batch trains;
    * ``sampler/process`` and ``sampler/thread``: ``DataLoader(EmbeddingDataset,
      sampler=SelectionSampler(prefetch=1, worker=...), batch_size=None)`` (batched reads) with
      a ``ScoreTable`` the loop
      fills from the logits of its own steps: the pool is neither loaded nor scored, and its
      selection runs in a worker process (or thread) while this batch trains. One sampler per
      kind serves all blocks, as one would serve a whole training run;
    * ``sampler/random``: that loop with ``RandomSelector`` in the worker: the floor of the
      sampler path (EmbeddingDataset items, score-table writes) for any selection rule.

    Blocks of 35 steps of each loop alternate (7 blocks), so load on a shared machine hits all
    six; reported: ``added = loop step / random step - 1`` from the medians of the per-block
    means (and from the fastest blocks). Goal: added <= 0.20.
    """
    import itertools

    from threadpoolctl import threadpool_limits

    from kpp_sdk.selection import (
        CandidatePoolSampler,
        PrefetchSelectionLoader,
        ScoreTable,
        SelectionSampler,
    )

    torch.set_num_threads(1)
    limits = threadpool_limits(1)
    X, y = digits
    torch.manual_seed(0)
    model = NETWORKS[network]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    store = NumpyStore.from_embeddings(X.numpy(), metric="l2")
    data = EmbeddingDataset(torch.utils.data.TensorDataset(X, y), store)
    score = lambda pool, idx: entropy(model(pool[0]))
    per_epoch = len(y) // POOL  # 7 pools of 256
    blocks, epochs = 7, 5
    steps = epochs * per_epoch

    def batches(kind, seed):
        """At least `steps` batches of the loop `kind`."""
        if kind == "random":  # 28 batches per epoch: two epochs
            g = torch.Generator().manual_seed(seed)
            loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y),
                                                 batch_size=BATCH, shuffle=True, drop_last=True,
                                                 generator=g)
            return itertools.chain(loader, loader)
        if kind.startswith("sampler"):
            # batched reads: PyTorch indexes the dataset with the whole batch (no per-item views)
            loader = torch.utils.data.DataLoader(data, sampler=samplers[kind], batch_size=None)
            return itertools.chain.from_iterable(loader for _ in range(epochs))
        sel = QUBOSelector(kpp_sdk.get_device("sa.cpu"))
        pools = _Epochs(CandidatePoolSampler(len(y), BATCH, pool_factor=POOL // BATCH, seed=seed),
                        epochs)
        collate = SelectionCollate(sel, BATCH, score, seed=seed)
        if kind == "plain":
            return torch.utils.data.DataLoader(data, batch_sampler=pools, collate_fn=collate)
        return PrefetchSelectionLoader(data, pools, collate, prefetch=1)

    table = ScoreTable(len(y))
    samplers = {f"sampler/{w}": SelectionSampler(store, QUBOSelector(kpp_sdk.get_device("sa.cpu")),
                                                 BATCH, scores=table, prefetch=1, worker=w, seed=0)
                for w in ("process", "thread")}
    # the same loop with a random choice from each pool: what the loader, the score table and
    # the sampler cost by themselves, whatever the selection rule
    samplers["sampler/random"] = SelectionSampler(store, RandomSelector(), BATCH, scores=table,
                                                  prefetch=1, worker="process", seed=0)

    def run(kind, seed):
        t = time.perf_counter()
        for batch in itertools.islice(batches(kind, seed), steps):
            xb, yb = batch[0] if kind != "random" else batch
            opt.zero_grad()
            logits = model(xb)
            torch.nn.functional.cross_entropy(logits, yb).backward()
            opt.step()
            if kind.startswith("sampler"):
                table.update(batch[2], logits.detach())
        return (time.perf_counter() - t) / steps

    kinds = ("random", "plain", "prefetch", "sampler/process", "sampler/thread", "sampler/random")
    for kind in kinds:  # warm-up: numba kernels, torch allocator, thread pools
        run(kind, 10_000)
    per_step = {k: [] for k in kinds}
    for b in range(blocks):
        for kind in kinds:
            per_step[kind].append(run(kind, b))
    benchmark.pedantic(run, args=("sampler/process", 99), rounds=1, iterations=1)
    for sampler in samplers.values():
        sampler.close()
    med = {k: float(np.median(v)) for k, v in per_step.items()}
    fast = {k: float(np.min(v)) for k, v in per_step.items()}
    added = {k: med[k] / med["random"] - 1 for k in kinds[1:]}
    added_fast = {k: fast[k] / fast["random"] - 1 for k in kinds[1:]}
    limits.restore_original_limits()
    benchmark.extra_info.update({"network": network, "step_ms": {k: v * 1e3 for k, v in med.items()},
                                 "added": added, "added_fastest": added_fast})
    print(f"\n[{network:3s}] per training step: random batches {med['random'] * 1e3:6.2f} ms; "
          + "; ".join(f"{k} {med[k] * 1e3:6.2f} ms (+{added[k]:.0%}, fastest blocks "
                      f"+{added_fast[k]:.0%})" for k in kinds[1:]) + "; goal <= +20%")
