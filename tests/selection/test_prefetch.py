"""PrefetchSelectionLoader: the next batch is selected while this one trains, same batches."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, TensorDataset

import kpp_sdk
from kpp_sdk.selection import (
    CandidatePoolSampler,
    EmbeddingDataset,
    KCenterGreedySelector,
    NumpyStore,
    PrefetchSelectionLoader,
    QUBOSelector,
    RandomSelector,
    SelectionCollate,
    SelectionError,
    entropy,
)


@pytest.fixture()
def data():
    rng = np.random.default_rng(3)
    n = 160
    X = rng.normal(size=(n, 5)).astype(np.float32)
    samples = torch.from_numpy(np.c_[np.arange(n), X].astype(np.float32))
    return EmbeddingDataset(TensorDataset(samples, torch.arange(n) % 4),
                            NumpyStore.from_embeddings(X, metric="l2"))


def fixed_scores(pool, idx):
    """Deterministic and independent of training: the same scores whenever a pool is scored."""
    torch.manual_seed(0)
    return entropy(torch.nn.Linear(6, 4)(pool[0]))


def batches(loader):
    return [(x.clone(), y.clone(), emb.clone(), idx.clone()) for (x, y), emb, idx in loader]


def assert_same(a, b):
    assert len(a) == len(b) > 0
    for u, v in zip(a, b):
        assert all(torch.equal(p, q) for p, q in zip(u, v))


@pytest.mark.parametrize("selector", ["qubo", "random", "k-center"])
@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_prefetching_gives_exactly_the_batches_of_the_plain_dataloader(data, selector, prefetch):
    make = {"qubo": lambda: QUBOSelector(kpp_sdk.get_device("sa.cpu")),
            "random": RandomSelector, "k-center": KCenterGreedySelector}[selector]
    plain = DataLoader(data, batch_sampler=CandidatePoolSampler(len(data), 8, seed=5),
                       collate_fn=SelectionCollate(make(), 8, fixed_scores, seed=11))
    ahead = PrefetchSelectionLoader(data, CandidatePoolSampler(len(data), 8, seed=5),
                                    SelectionCollate(make(), 8, fixed_scores, seed=11),
                                    prefetch=prefetch)
    want = batches(plain)
    assert len(ahead) == len(plain) == 5
    assert_same(batches(ahead), want)
    pools = list(CandidatePoolSampler(len(data), 8, seed=5))
    # the batches are real selections: distinct items of their pool, not simply its first 8
    assert all(set(b[3].tolist()) <= set(p) and len(set(b[3].tolist())) == 8
               for b, p in zip(want, pools))
    assert any(sorted(b[3].tolist()) != sorted(p[:8]) for b, p in zip(want, pools))


@pytest.mark.parametrize("prefetch", [1, 2])
def test_each_pool_is_scored_prefetch_steps_before_its_batch_is_trained_on(data, prefetch):
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    step = [0]
    scored_at = []  # training step at which each pool was scored

    def score(pool, idx):
        scored_at.append(step[0])
        return entropy(model(pool[0]))

    loader = PrefetchSelectionLoader(
        data, CandidatePoolSampler(len(data), 8, seed=0),
        SelectionCollate(QUBOSelector("sa.cpu"), 8, score, seed=0), prefetch=prefetch)
    for t, ((x, y), _, idx) in enumerate(loader):
        assert len(scored_at) == min(t + 1 + prefetch, len(loader))  # the next ones are in flight
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        step[0] += 1
    n = len(loader)
    # batch t was scored by the model after max(t - prefetch, 0) steps (plain path: after t)
    assert scored_at == [max(t - prefetch, 0) for t in range(n)]


def test_an_error_in_the_background_selection_reaches_the_training_loop(data):
    class Broken:
        calls = 0

        def select(self, embeddings, k, **kw):
            Broken.calls += 1
            if Broken.calls == 2:
                raise RuntimeError("solver broke")
            return np.arange(k)

    loader = PrefetchSelectionLoader(data, CandidatePoolSampler(len(data), 8, seed=0),
                                     SelectionCollate(Broken(), 8))
    it = iter(loader)
    next(it)
    with pytest.raises(RuntimeError, match="solver broke"):
        next(it)


def test_leaving_the_loop_early_stops_cleanly_and_bad_arguments_are_rejected(data):
    collate = SelectionCollate(QUBOSelector("sa.cpu"), 8, fixed_scores, seed=0)
    loader = PrefetchSelectionLoader(data, CandidatePoolSampler(len(data), 8, seed=0), collate,
                                     prefetch=2)
    for _ in loader:
        break  # the generator closes; pending selections are cancelled or waited for
    assert len(batches(loader)) == 5  # a fresh epoch works after an early exit
    with pytest.raises(SelectionError, match="prefetch"):
        PrefetchSelectionLoader(data, [], collate, prefetch=-1)
    with pytest.raises(SelectionError, match="SelectionCollate"):
        PrefetchSelectionLoader(data, [], lambda items: items)
