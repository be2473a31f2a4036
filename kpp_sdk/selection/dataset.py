"""PyTorch side of active selection: a Dataset that carries embeddings, a sampler that hands out
candidate pools, and a collate_fn that keeps the best ``batch_size`` of each pool.

Typical use (online batch selection: each training batch is chosen from a 4x larger pool)::

    store = NumpyStore.from_embeddings(encoder_outputs)          # or FaissStore, load_store(path)
    data = EmbeddingDataset(train_set, store)                    # item -> (sample, embedding, index)
    loader = DataLoader(
        data,
        batch_sampler=CandidatePoolSampler(len(data), batch_size=64, pool_factor=4, seed=0),
        collate_fn=SelectionCollate(QUBOSelector("sa.cpu"), batch_size=64,
                                    uncertainty_fn=lambda pool, idx: entropy(model(pool[0]))),
    )
    for (x, y), emb, idx in loader:                              # 64 chosen of 256 candidates
        ...

``uncertainty_fn`` runs inside the collate, under ``torch.no_grad()``, in the process that runs
the collate: keep ``num_workers=0`` when it calls the model being trained (a worker process would
score with a stale copy of it), or score from a table the training loop keeps up to date.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from ..errors import MissingDependencyError
from .errors import InvalidBatchSizeError, SelectionError, check_scores
from .selectors import Selector
from .store import VectorStore
from .uncertainty import ScoreTable

try:
    import torch
    from torch.utils.data import Dataset, Sampler, TensorDataset
    from torch.utils.data._utils.collate import default_collate
except ImportError:  # pragma: no cover - exercised only without torch
    raise MissingDependencyError("torch", extra="torch", feature="kpp_sdk.selection.dataset") from None

__all__ = ["CandidatePoolSampler", "EmbeddingDataset", "PrefetchSelectionLoader", "SelectionCollate",
           "SelectionSampler"]


class EmbeddingDataset(Dataset):
    """``dataset[i]`` with its stored embedding: item ``i`` is ``(sample, embedding, i)``.

    ``embedding`` is a float32 tensor of shape ``(store.dim,)`` (unit length for a cosine store).
    The store must hold one vector per sample, in the dataset's order (store id = dataset index).

    Indexed with a list (or array) of indices it returns the collated batch at once, what
    ``default_collate`` makes of those items: that is the fast path of a batch sampler given to
    a DataLoader as ``DataLoader(ds, sampler=batch_sampler, batch_size=None)`` (PyTorch then
    reads ``ds[batch]`` and collates nothing). Over a ``TensorDataset`` it is one gather per
    tensor instead of a tensor view per item and field (64 items: ~0.2 ms -> ~0.03 ms, a step's
    worth of time for small networks).
    """

    def __init__(self, dataset: Any, store: VectorStore):
        if not isinstance(store, VectorStore):
            raise SelectionError(
                f"store must be a VectorStore (NumpyStore, FaissStore, ...), got {type(store).__name__}"
            )
        if len(dataset) != len(store):
            raise SelectionError(
                f"the dataset has {len(dataset)} samples but the store holds {len(store)} "
                "embeddings; embed every sample once, in dataset order"
            )
        self.dataset = dataset
        self.store = store

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, (list, tuple, np.ndarray, torch.Tensor)) and np.ndim(index) == 1:
            return self._batch(index)
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        emb = torch.from_numpy(np.array(self.store.get([index])[0], dtype=np.float32))
        return self.dataset[index], emb, index

    def _indices(self, indices: Any) -> list[int]:
        n = len(self)
        idx = [int(i) for i in (indices.tolist() if hasattr(indices, "tolist") else indices)]
        bad = [i for i in idx if not -n <= i < n]
        if bad:
            raise IndexError(f"index {bad[0]} out of range for {n} samples")
        return [i % n for i in idx]

    def _batch(self, indices: Any) -> list:
        """``default_collate(self.__getitems__(indices))``, built batch-wise where possible."""
        idx = self._indices(indices)
        if type(self.dataset) is not TensorDataset or not idx:
            return default_collate(self.__getitems__(idx))
        rows = torch.as_tensor(idx, dtype=torch.int64)
        embs = torch.from_numpy(np.array(self.store.get(idx), dtype=np.float32).reshape(len(idx), -1))
        # default_collate turns tuples into lists: the same structure as the per-item path
        return [[t[rows] for t in self.dataset.tensors], embs, rows]

    def __getitems__(self, indices: Any) -> list[tuple[Any, torch.Tensor, int]]:
        """``[self[i] for i in indices]`` with one store lookup for all embeddings (what a
        DataLoader calls for a whole pool; 256 single lookups cost several training steps)."""
        idx = self._indices(indices)
        embs = torch.from_numpy(np.array(self.store.get(idx), dtype=np.float32).reshape(len(idx), -1))
        getitems = getattr(self.dataset, "__getitems__", None)
        samples = getitems(idx) if getitems else [self.dataset[i] for i in idx]
        return [(s, e, i) for s, e, i in zip(samples, embs.unbind(0), idx)]

    def embeddings(self, indices: Any = None) -> np.ndarray:
        """Stored embeddings of ``indices`` (all when None), ``(m, dim)`` float32."""
        ids = np.arange(len(self)) if indices is None else indices
        return self.store.get(ids)


class CandidatePoolSampler(Sampler):
    """A batch sampler whose "batches" are candidate pools of ``pool_factor * batch_size`` indices.

    Each epoch is a fresh random permutation (reproducible from ``seed``; epoch e uses the e-th
    draw of that stream) cut into pools. With ``drop_last=True`` (default) every pool is full and
    the few left-over indices wait for the next epoch's permutation; with ``drop_last=False`` the
    last pool may be smaller than the batch, which :class:`SelectionCollate` refuses.
    """

    def __init__(self, num_samples: int, batch_size: int, *, pool_factor: float = 4,
                 drop_last: bool = True, seed: Any = None):
        if isinstance(num_samples, (bool, np.bool_)) or not isinstance(num_samples, (int, np.integer)) \
                or num_samples < 1:
            raise SelectionError(f"num_samples must be a positive integer, got {num_samples!r}")
        if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise InvalidBatchSizeError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not (np.isfinite(pool_factor) and pool_factor >= 1):
            raise SelectionError(f"pool_factor must be >= 1, got {pool_factor!r}")
        self.pool_size = round(pool_factor * batch_size)
        if self.pool_size > num_samples:
            raise InvalidBatchSizeError(
                f"a pool of {self.pool_size} candidates ({pool_factor} x batch {batch_size}) exceeds "
                f"the {num_samples} samples; lower pool_factor or batch_size"
            )
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.pool_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[list[int]]:
        perm = self._rng.permutation(self.num_samples)
        for lo in range(0, self.num_samples, self.pool_size):
            pool = perm[lo:lo + self.pool_size]
            if len(pool) < self.pool_size and self.drop_last:
                return
            yield pool.tolist()


class SelectionCollate:
    """A ``collate_fn`` that keeps ``batch_size`` items of each candidate pool.

    Parameters
    ----------
    selector : Selector
        :class:`~kpp_sdk.selection.QUBOSelector` or a baseline.
    batch_size : int
        Items kept per pool (exactly; a smaller pool raises :class:`InvalidBatchSizeError`).
    uncertainty_fn : callable, optional
        ``uncertainty_fn(pool, indices) -> (pool_size,)`` scores, where ``pool`` is the collated
        candidate samples and ``indices`` an int64 tensor of their dataset indices. Called under
        ``torch.no_grad()``.
    collate_fn : callable
        Collates samples (default: torch's ``default_collate``).
    seed : int or numpy Generator, optional
        Seeds the solver and the random baseline; one draw per pool.

    Returns ``(samples, embeddings, indices)`` for the chosen items: ``collate_fn`` of their
    samples, a ``(batch_size, dim)`` float32 tensor, and an int64 tensor. :attr:`last_selection`
    holds the chosen positions within the last pool.
    """

    def __init__(self, selector: Selector, batch_size: int, uncertainty_fn: Callable | None = None,
                 *, collate_fn: Callable = default_collate, seed: Any = None):
        if not callable(getattr(selector, "select", None)):
            raise SelectionError(f"selector must have a select() method, got {type(selector).__name__}")
        if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise InvalidBatchSizeError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.selector = selector
        self.batch_size = int(batch_size)
        self.uncertainty_fn = uncertainty_fn
        self.collate_fn = collate_fn
        self._rng = np.random.default_rng(seed)
        self.last_selection: np.ndarray | None = None

    def __call__(self, items: list) -> tuple[Any, torch.Tensor, torch.Tensor]:
        return self.finish(self.prepare(items))

    def prepare(self, items: list) -> _Pool:
        """First half of a call, run by the caller's thread: checks, stacks the embeddings and
        runs ``uncertainty_fn`` (the model being trained must be read by the training thread)."""
        if len(items) < self.batch_size:
            raise InvalidBatchSizeError(
                f"cannot select {self.batch_size} items from a pool of {len(items)}; give the "
                "DataLoader CandidatePoolSampler(..., drop_last=True) or a larger pool"
            )
        try:
            samples, embs, indices = zip(*items)
        except (TypeError, ValueError):
            raise SelectionError(
                "SelectionCollate expects items (sample, embedding, index) from EmbeddingDataset"
            ) from None
        emb = torch.stack([torch.as_tensor(e, dtype=torch.float32) for e in embs])
        idx = torch.as_tensor(indices, dtype=torch.int64)
        scores = None
        if self.uncertainty_fn is not None:
            with torch.no_grad():
                scores = self.uncertainty_fn(self.collate_fn(list(samples)), idx)
            scores = check_scores(scores, len(items))
        return _Pool(samples, emb, idx, scores)

    def finish(self, pool: _Pool) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Second half: the selection (one seed draw) and the collation of the chosen items. It
        touches no model, so :class:`PrefetchSelectionLoader` runs it in a background thread."""
        picks = self.selector.select(pool.emb.numpy(), self.batch_size, uncertainty=pool.scores,
                                     seed=self._rng)
        picks = np.asarray(picks)
        self.last_selection = picks
        chosen = torch.as_tensor(picks, dtype=torch.int64)
        return self.collate_fn([pool.samples[i] for i in picks]), pool.emb[chosen], pool.idx[chosen]


class _Pool(NamedTuple):
    samples: tuple
    emb: torch.Tensor
    idx: torch.Tensor
    scores: np.ndarray | None


class PrefetchSelectionLoader:
    """Iterates like ``DataLoader(dataset, batch_sampler=..., collate_fn=collate)`` (no worker
    processes), but selects the next ``prefetch`` batches while the caller trains on this one.

    On each step it takes the next pool, scores it with ``collate.uncertainty_fn`` in the calling
    thread, and hands the selection (QUBO build, device job, repair, polish, collation) to one
    background thread; then it returns the oldest batch, waiting for its selection only if it is
    not finished yet. The device runs its job in its own worker and ``sa.cpu``'s numba kernels
    release the GIL, so the selection overlaps the training step and adds only the part that does
    not overlap (the scoring forward pass, thread hand-offs, GIL contention).

    The price: a pool is scored ``prefetch`` training steps before its batch is trained on, i.e.
    with the model ``prefetch`` steps older than without prefetching (``prefetch=0`` is the plain
    path: score, select, return). With an ``uncertainty_fn`` that does not change between those
    steps, the batches are exactly those of the plain path (same pools, same seed draws in pool
    order; tested).

    Parameters
    ----------
    dataset : EmbeddingDataset (or any dataset of ``(sample, embedding, index)`` items)
    batch_sampler : iterable of index lists, e.g. :class:`CandidatePoolSampler`
    collate : SelectionCollate
    prefetch : int
        Batches selected ahead (default 1; 0 disables prefetching).
    """

    def __init__(self, dataset: Any, batch_sampler: Any, collate: SelectionCollate, *,
                 prefetch: int = 1):
        if not isinstance(collate, SelectionCollate):
            raise SelectionError(
                f"collate must be a SelectionCollate, got {type(collate).__name__}")
        if isinstance(prefetch, (bool, np.bool_)) or not isinstance(prefetch, (int, np.integer)) \
                or prefetch < 0:
            raise SelectionError(f"prefetch must be an integer >= 0, got {prefetch!r}")
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.collate = collate
        self.prefetch = int(prefetch)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def _items(self, pool: Any) -> list:
        getitems = getattr(self.dataset, "__getitems__", None)
        return list(getitems(pool)) if getitems is not None else [self.dataset[i] for i in pool]

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor, torch.Tensor]]:
        collate = self.collate
        if self.prefetch == 0:
            for pool in self.batch_sampler:
                yield collate(self._items(pool))
            return
        import concurrent.futures as cf
        from collections import deque

        pools = iter(self.batch_sampler)
        pending: deque = deque()
        with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kpp-select") as ex:
            try:
                def submit_next() -> bool:
                    pool = next(pools, None)
                    if pool is None:
                        return False
                    pending.append(ex.submit(collate.finish, collate.prepare(self._items(pool))))
                    return True

                for _ in range(self.prefetch):
                    if not submit_next():
                        break
                while pending:
                    oldest = pending.popleft()
                    submit_next()  # scored now, selected while the caller trains on `oldest`
                    yield oldest.result()
            finally:
                for f in pending:  # early exit (break, error): drop what was not started
                    f.cancel()


class SelectionSampler(Sampler):
    """A batch sampler that selects: each batch is ``batch_size`` dataset indices chosen from a
    pool of ``pool_factor * batch_size`` candidates, ahead of time, in a background worker.

    The selection reads only what it needs: the candidates' embeddings from ``store`` and their
    uncertainties from ``scores`` (typically a :class:`~kpp_sdk.selection.ScoreTable` the
    training loop writes). No candidate is loaded, collated or run through the model, so the
    DataLoader loads just the chosen batch, and the selection of the next ``prefetch`` batches
    (QUBO, device job, repair, polish) runs while this one trains::

        table = ScoreTable(len(train_set))
        sampler = SelectionSampler(store, QUBOSelector("sa.cpu"), 64, scores=table, seed=0)
        loader = DataLoader(EmbeddingDataset(train_set, store), batch_sampler=sampler)
        for epoch in range(epochs):
            for (x, y), emb, idx in loader:
                logits = model(x)
                ...                                   # loss, backward, step
                table.update(idx, entropy(logits))
        sampler.close()                               # or let it be garbage-collected

    Compared with :class:`SelectionCollate`, which scores each pool with the current model, the
    scores are those of each candidate's last training step (read when its pool is handed to the
    worker), the usual trade of online batch selection. Pools come from one endless stream: a
    fresh permutation of the dataset per pass, cut into pools (:class:`CandidatePoolSampler`);
    an epoch (one ``for`` over the sampler) is the next ``len(sampler)`` of them, and selection
    runs ahead across epoch boundaries. With scores that do not change while it runs (or none),
    every ``prefetch`` and worker gives the same batches as ``prefetch=0`` (same pools, one solver
    seed per pool in stream order; tested).

    Parameters
    ----------
    store : VectorStore
        One embedding per dataset sample, in dataset order (store id = dataset index).
    selector : Selector
        :class:`~kpp_sdk.selection.QUBOSelector` or a baseline.
    batch_size : int
    pool_factor : float
        Pool size over batch size (default 4: 64 of 256).
    scores : ScoreTable or callable, optional
        Uncertainties: a table, or ``scores(indices) -> (pool_size,)`` for an int64 index array,
        called in the thread that iterates the sampler.
    prefetch : int
        Batches selected ahead (default 1; 0 selects when the DataLoader asks, in its thread).
    worker : {"process", "thread"}
        Where the selections run when ``prefetch > 0``. ``"process"`` (default): one worker
        process with its own copy of the selector (it must pickle; its start costs about a
        second, once per sampler). Its Python work then never holds the training process's GIL:
        in a thread, the ~1.5 ms of interpreter work per selection stalls the training thread
        each time it hands the GIL back (measured: +20 to +45 % per small-CNN step, against ~5 %
        from a process). ``"thread"``: a thread of this process (no start-up, no pickling;
        :attr:`QUBOSelector.last_result` stays up to date).
    seed : int, optional
        Seeds the pools and the solver.
    """

    WORKERS = ("process", "thread")

    def __init__(self, store: VectorStore, selector: Selector, batch_size: int, *,
                 pool_factor: float = 4, scores: Any = None, prefetch: int = 1,
                 worker: str = "process", seed: Any = None):
        if not isinstance(store, VectorStore):
            raise SelectionError(
                f"store must be a VectorStore (NumpyStore, FaissStore, ...), got {type(store).__name__}")
        if not callable(getattr(selector, "select", None)):
            raise SelectionError(f"selector must have a select() method, got {type(selector).__name__}")
        if scores is not None and not (isinstance(scores, ScoreTable) or callable(scores)):
            raise SelectionError(
                f"scores must be a ScoreTable or a callable scores(indices) -> one score per index, "
                f"got {type(scores).__name__}")
        if isinstance(scores, ScoreTable) and len(scores) != len(store):
            raise SelectionError(
                f"the score table has {len(scores)} entries but the store holds {len(store)} "
                "embeddings; make the table with ScoreTable(len(dataset))")
        if isinstance(prefetch, (bool, np.bool_)) or not isinstance(prefetch, (int, np.integer)) \
                or prefetch < 0:
            raise SelectionError(f"prefetch must be an integer >= 0, got {prefetch!r}")
        if worker not in self.WORKERS:
            raise SelectionError(f"worker must be one of {self.WORKERS}, got {worker!r}")
        if worker == "process" and prefetch > 0:
            import pickle

            try:
                pickle.dumps(selector)
            except Exception as exc:  # noqa: BLE001 - any pickling failure means the same
                raise SelectionError(
                    f"worker='process' sends the selector to a worker process, but it cannot be "
                    f"pickled ({type(exc).__name__}: {exc}); use worker='thread'") from None
        rng = np.random.default_rng(seed)
        self._pools = CandidatePoolSampler(len(store), batch_size, pool_factor=pool_factor,
                                           seed=int(rng.integers(2**63)))
        self._seeds = np.random.default_rng(int(rng.integers(2**63)))
        self.store = store
        self.selector = selector
        self.batch_size = self._pools.batch_size
        self.scores = scores
        self.prefetch = int(prefetch)
        self.worker = worker
        self._stream: Iterator[list[int]] | None = None
        self._pending: Any = None  # deque of (ids, future), made with the worker on first use
        self._executor: Any = None

    def __len__(self) -> int:
        return len(self._pools)

    @property
    def pool_size(self) -> int:
        return self._pools.pool_size

    def _pool_stream(self) -> Iterator[list[int]]:
        while True:
            yield from self._pools

    def _inputs(self, pool: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """The pool's ids and scores, read now (in the caller's thread)."""
        ids = np.asarray(pool, dtype=np.int64)
        u = None
        if self.scores is not None:
            u = self.scores[ids] if isinstance(self.scores, ScoreTable) else self.scores(ids)
            u = check_scores(u, ids.size)
        return ids, u

    def _pick(self, ids: np.ndarray, u: np.ndarray | None, seed: Any) -> np.ndarray:
        """Positions in ``ids`` of the chosen batch (the worker process runs its own twin,
        :func:`~kpp_sdk.selection.selectors._worker_loop`, on its copies)."""
        return np.asarray(self.selector.select(self.store.get(ids), self.batch_size,
                                               uncertainty=u, seed=seed))

    def _next_seed(self) -> int:
        return int(self._seeds.integers(2**63))  # drawn in stream order, whatever the prefetch

    def select(self, pool: Any, seed: Any = None) -> list[int]:
        """The chosen dataset indices of one pool (what each batch is); ``seed`` for the solver."""
        ids, u = self._inputs(pool)
        return ids[self._pick(ids, u, seed)].tolist()

    def _start(self) -> None:
        import weakref
        from collections import deque

        if self.worker == "thread":
            import concurrent.futures as cf

            self._executor = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kpp-select")
            # wait for the selection in flight: a thread still running one (in BLAS, say)
            # when a process is forked leaves its locks held in the child, which then hangs
            # (seen: a process-worker sampler started right after closing a thread-worker one)
            self._finalizer = weakref.finalize(self, self._executor.shutdown, wait=True,
                                               cancel_futures=True)
        else:
            self._executor = _SelectionProcess(self.selector, self.store)
            self._finalizer = weakref.finalize(self, self._executor.stop)
        self._pending = deque()

    def _submit_next(self) -> None:
        ids, u = self._inputs(next(self._stream))
        seed = self._next_seed()
        if self.worker == "thread":
            fut = self._executor.submit(self._pick, ids, u, seed)
        else:
            fut = self._executor.submit(ids, self.batch_size, u, seed)
        self._pending.append((ids, fut))

    def __iter__(self) -> Iterator[list[int]]:
        if self._stream is None:
            self._stream = self._pool_stream()
        if self.prefetch == 0:
            for _ in range(len(self)):
                yield self.select(next(self._stream), self._next_seed())
            return
        if self._executor is None:
            self._start()
        for _ in range(len(self)):
            while len(self._pending) < self.prefetch + 1:
                self._submit_next()  # the next batches are selected while the caller trains
            ids, fut = self._pending.popleft()
            yield ids[np.asarray(fut.result())].tolist()

    def close(self) -> None:
        """Stop the worker. Queued selections are dropped (their pools are skipped), one that
        is running is waited for; the next iteration starts a new worker."""
        if self._executor is not None:
            self._finalizer()
            self._executor = None
            self._pending = None

    def __enter__(self) -> "SelectionSampler":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _SelectionProcess:
    """One worker process that runs ``selector.select`` on requests sent down a pipe, in order.

    The worker holds copies of the selector and the store made when it starts (inherited by the
    fork); a request is the pool's ids, scores and seed.

    A pipe rather than a ``ProcessPoolExecutor``: the executor's feeder and management threads
    take this process's GIL for every task, which is what a worker process is there to avoid.
    ``submit`` sends at once (the pipe buffers); the answer is read when its handle's
    ``result()`` is called, and answers arrive in request order.
    """

    def __init__(self, selector: Any, store: VectorStore):
        import multiprocessing as mp

        from .selectors import _worker_loop

        # fork where there is one, as the DataLoader's workers do: "spawn" re-imports the user's
        # main script in the child (running its unguarded training code) and costs seconds. The
        # child only runs the selector (numba and NumPy, never torch).
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker_loop, args=(child, selector, store), daemon=True,
                                 name="kpp-select")
        self._proc.start()
        child.close()
        self._sent = 0
        self._received = 0
        self._answers: dict[int, Any] = {}

    def _died(self) -> SelectionError:
        self._proc.join(timeout=1)
        return SelectionError(
            f"the selection worker process died (exit code {self._proc.exitcode}); use "
            "SelectionSampler(..., worker='thread') to run the selector in this process and see "
            "its error")

    def submit(self, ids: np.ndarray, k: int, u: Any, seed: int) -> "_Answer":
        try:
            self._conn.send((ids, k, u, seed))
        except OSError:  # BrokenPipeError: nobody reads the other end
            raise self._died() from None
        self._sent += 1
        return _Answer(self, self._sent - 1)

    def _answer(self, number: int) -> np.ndarray:
        while number not in self._answers:
            try:
                self._answers[self._received] = self._conn.recv()
            except (EOFError, OSError):
                raise self._died() from None
            self._received += 1
        ok, value = self._answers.pop(number)
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        try:
            self._conn.send(None)
        except (OSError, ValueError):
            pass
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()


class _Answer:
    def __init__(self, worker: _SelectionProcess, number: int):
        self._worker, self._number = worker, number

    def result(self) -> np.ndarray:
        return self._worker._answer(self._number)
