"""SelectionSampler: batches selected ahead in a worker (process or thread), same batches."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, TensorDataset

import kpp_sdk
from kpp_sdk.selection import (
    EmbeddingDataset,
    KCenterGreedySelector,
    NumpyStore,
    QUBOSelector,
    ScoreTable,
    SelectionError,
    SelectionSampler,
)


@pytest.fixture()
def data():
    rng = np.random.default_rng(7)
    n = 96
    X = rng.normal(size=(n, 4)).astype(np.float32)
    store = NumpyStore.from_embeddings(X, metric="l2")
    samples = torch.from_numpy(np.c_[np.arange(n), X].astype(np.float32))
    return EmbeddingDataset(TensorDataset(samples, torch.arange(n) % 3), store), store, X


def static_scores(n):
    return np.random.default_rng(1).random(n)


def run_epochs(sampler, epochs=2):
    with sampler:
        return [list(map(list, sampler)) for _ in range(epochs)]


@pytest.mark.parametrize("worker,prefetch", [("thread", 1), ("thread", 3), ("process", 1),
                                             ("process", 2)])
def test_prefetch_in_any_worker_gives_the_batches_of_prefetch_zero(data, worker, prefetch):
    _, store, _ = data
    u = static_scores(len(store))
    table = ScoreTable(len(store))
    table.update(np.arange(len(store)), u)

    def make(prefetch, worker):
        return SelectionSampler(store, QUBOSelector(kpp_sdk.get_device("sa.cpu")), 6, scores=table,
                                prefetch=prefetch, worker=worker, seed=3)

    want = run_epochs(make(0, "thread"))
    got = run_epochs(make(prefetch, worker))
    assert got == want
    # what the batches are: per epoch len(sampler) batches of 6 distinct indices, and the QUBO's
    # own choice from each pool (recomputed here from the pool stream the sampler uses)
    ref = make(0, "thread")
    pools = ref._pool_stream()
    for epoch in want:
        assert len(epoch) == len(ref) == 96 // 24
        for batch in epoch:
            pool = np.asarray(next(pools))
            assert len(set(batch)) == 6 and set(batch) <= set(pool.tolist())
    # the choice depends on the scores: the sampler does not just take pools' first items
    flat = [i for e in want for b in e for i in b]
    assert u[flat].mean() > u.mean()


def test_callable_scores_are_called_with_each_pool_in_the_iterating_thread(data):
    import threading

    _, store, _ = data
    seen = []

    def scores(ids):
        seen.append((ids.copy(), threading.current_thread() is threading.main_thread()))
        return np.ones(ids.size)

    with SelectionSampler(store, KCenterGreedySelector(), 4, pool_factor=2, scores=scores,
                          prefetch=2, worker="thread", seed=0) as s:
        batches = list(s)
    assert len(batches) == len(s) == 12
    assert all(main for _, main in seen) and all(ids.dtype == np.int64 and ids.size == 8
                                                 for ids, _ in seen)
    # each batch lies in the pool scored for it (pools scored in order, prefetch ahead)
    assert all(set(b) <= set(ids.tolist()) for b, (ids, _) in zip(batches, seen))


def test_dataloader_trains_with_a_score_table_written_by_the_loop(data):
    ds, store, _ = data
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    table = ScoreTable(len(ds))
    sampler = SelectionSampler(store, QUBOSelector("sa.cpu"), 8, scores=table, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler)
    seen = []
    for _ in range(2):
        for (x, y), emb, idx in loader:
            assert x.shape == (8, 5) and emb.shape == (8, 4)
            assert torch.equal(x[:, 0].long(), idx)  # the loader loaded the chosen samples
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            table.update(idx, logits.detach())
            seen.extend(idx.tolist())
    sampler.close()
    assert len(seen) == 2 * len(sampler) * 8 and table.num_scored == len(set(seen))


def test_bad_arguments_are_clear_errors_before_any_worker_starts(data):
    _, store, _ = data
    sel = KCenterGreedySelector()
    with pytest.raises(SelectionError, match="store must be a VectorStore"):
        SelectionSampler(np.zeros((4, 2)), sel, 2)
    with pytest.raises(SelectionError, match="select\\(\\) method"):
        SelectionSampler(store, "sa.cpu", 2)
    with pytest.raises(SelectionError, match="scores must be a ScoreTable or a callable"):
        SelectionSampler(store, sel, 2, scores=np.ones(len(store)))
    with pytest.raises(SelectionError, match="table has 5 entries but the store holds 96"):
        SelectionSampler(store, sel, 2, scores=ScoreTable(5))
    for bad in (-1, 1.5, True):
        with pytest.raises(SelectionError, match="prefetch must be an integer >= 0"):
            SelectionSampler(store, sel, 2, prefetch=bad)
    with pytest.raises(SelectionError, match="worker must be one of"):
        SelectionSampler(store, sel, 2, worker="gpu")
    with pytest.raises(SelectionError, match="cannot be pickled.*worker='thread'"):
        SelectionSampler(store, QUBOSelector("sa.cpu", penalty=lambda h, J, k: 10.0), 2)
    with pytest.raises(SelectionError, match="pool"):
        SelectionSampler(store, sel, 64)  # a pool of 256 from 96 samples


class Exploding(KCenterGreedySelector):
    def select(self, embeddings, k, *, uncertainty=None, seed=None):
        raise ValueError("boom from the worker")


@pytest.mark.parametrize("worker", ["process", "thread"])
def test_a_selector_error_in_the_worker_reaches_the_training_loop(data, worker):
    _, store, _ = data
    with SelectionSampler(store, Exploding(), 4, worker=worker) as s:
        with pytest.raises(ValueError, match="boom from the worker"):
            next(iter(s))


def test_a_killed_worker_process_is_a_clear_error_and_a_new_iteration_recovers(data):
    import os
    import signal

    _, store, _ = data
    s = SelectionSampler(store, KCenterGreedySelector(), 4, prefetch=1, seed=0)
    it = iter(s)
    next(it)
    os.kill(s._executor._proc.pid, signal.SIGKILL)
    s._executor._proc.join()
    with pytest.raises(SelectionError, match="worker process died"):
        for _ in it:
            pass
    s.close()
    assert len(list(s)) == len(s)  # close() dropped the dead worker; the next pass starts one
    s.close()


def test_batched_reads_through_the_dataloader_give_the_same_batches(data):
    """DataLoader(ds, sampler=selection_sampler, batch_size=None): PyTorch reads ds[batch]."""
    ds, store, _ = data

    def loop(**loader_kw):
        with SelectionSampler(store, KCenterGreedySelector(), 8, seed=4, worker="thread") as s:
            key = "sampler" if loader_kw.pop("batched") else "batch_sampler"
            loader = DataLoader(ds, **{key: s}, **loader_kw)
            assert len(loader) == len(s)
            return [((x.clone(), y.clone()), emb.clone(), idx.clone()) for (x, y), emb, idx in loader]

    plain, batched = loop(batched=False), loop(batched=True, batch_size=None)
    assert len(plain) == len(batched) == 3
    for (p_xy, p_e, p_i), (b_xy, b_e, b_i) in zip(plain, batched):
        assert torch.equal(p_i, b_i) and torch.equal(p_e, b_e)
        assert all(torch.equal(a, b) for a, b in zip(p_xy, b_xy))


class Slow(KCenterGreedySelector):
    def select(self, embeddings, k, *, uncertainty=None, seed=None):
        import time

        time.sleep(0.2)
        return super().select(embeddings, k, uncertainty=uncertainty, seed=seed)


def test_close_waits_for_the_selection_in_flight_of_a_thread_worker(data):
    """A thread still selecting (in NumPy's BLAS, say) when a process is forked can hang the
    fork (OpenBLAS joins its pool in a pre-fork handler); so after close() no selection thread
    may be left running, e.g. before a process-worker sampler starts."""
    import threading

    _, store, _ = data
    s = SelectionSampler(store, Slow(), 4, prefetch=2, worker="thread", seed=0)
    it = iter(s)
    next(it)  # the next two selections are queued or running now
    s.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("kpp-select")]
    with SelectionSampler(store, KCenterGreedySelector(), 4, seed=0) as p:  # a process worker
        assert len(list(p)) == len(p)
