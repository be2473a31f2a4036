"""The PyTorch side: EmbeddingDataset, CandidatePoolSampler and SelectionCollate in a DataLoader."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, TensorDataset

import kpp_sdk
from kpp_sdk.selection import (
    CandidatePoolSampler,
    EmbeddingDataset,
    InvalidBatchSizeError,
    NumpyStore,
    QUBOSelector,
    RandomSelector,
    SelectionCollate,
    SelectionError,
    TopUncertaintySelector,
)


@pytest.fixture()
def data():
    rng = np.random.default_rng(0)
    n = 120
    X = rng.normal(size=(n, 3)).astype(np.float32)
    # the sample carries its own index in its first feature, so we can check what came back
    samples = torch.from_numpy(np.c_[np.arange(n), X].astype(np.float32))
    labels = torch.arange(n) % 3
    store = NumpyStore.from_embeddings(X * 2, metric="l2")
    return EmbeddingDataset(TensorDataset(samples, labels), store), X


def test_items_are_sample_embedding_index(data):
    ds, X = data
    (x, y), emb, i = ds[17]
    assert i == 17 and int(x[0]) == 17 and int(y) == 17 % 3
    assert emb.dtype == torch.float32 and torch.allclose(emb, torch.from_numpy(X[17] * 2))
    assert ds[-1][2] == len(ds) - 1
    with pytest.raises(IndexError):
        ds[len(ds)]
    assert np.allclose(ds.embeddings([3, 4]), X[[3, 4]] * 2)


def test_dataset_and_store_of_different_lengths_are_rejected(data):
    ds, X = data
    with pytest.raises(SelectionError, match="120 samples but the store holds 119"):
        EmbeddingDataset(ds.dataset, NumpyStore.from_embeddings(X[:-1], "l2"))
    with pytest.raises(SelectionError, match="VectorStore"):
        EmbeddingDataset(ds.dataset, X)


def test_pool_sampler_covers_each_epoch_without_repeats_and_is_seeded():
    s = CandidatePoolSampler(103, batch_size=5, pool_factor=4, seed=7)
    pools = list(s)
    assert len(pools) == len(s) == 5 and all(len(p) == 20 for p in pools)
    flat = np.concatenate(pools)
    assert len(set(flat.tolist())) == 100  # 3 left for the next epoch's permutation
    assert list(CandidatePoolSampler(103, 5, seed=7)) == pools
    assert list(s) != pools  # a new permutation per epoch
    tail = list(CandidatePoolSampler(103, 5, drop_last=False, seed=7))
    assert len(tail) == 6 and len(tail[-1]) == 3
    with pytest.raises(InvalidBatchSizeError, match="exceeds the 50 samples"):
        CandidatePoolSampler(50, 16, pool_factor=4)


def test_loader_yields_batches_chosen_from_each_pool(data):
    ds, _ = data
    seen = []

    def uncertainty(pool, idx):
        (x, _), = [pool]
        seen.append(idx.clone())
        assert torch.equal(x[:, 0].long(), idx)  # the callback sees the pool, in pool order
        return x[:, 1]  # "uncertainty" = first embedding coordinate, easy to check

    collate = SelectionCollate(TopUncertaintySelector(), 6, uncertainty)
    loader = DataLoader(ds, batch_sampler=CandidatePoolSampler(len(ds), 6, pool_factor=4, seed=1),
                        collate_fn=collate)
    batches = list(loader)
    assert len(batches) == 5
    for ((x, y), emb, idx), pool_idx in zip(batches, seen):
        assert x.shape == (6, 4) and emb.shape == (6, 3) and idx.dtype == torch.int64
        assert torch.equal(x[:, 0].long(), idx) and torch.equal(y, idx % 3)
        assert set(idx.tolist()) <= set(pool_idx.tolist())
        pool_scores = ds.dataset.tensors[0][pool_idx, 1]
        assert set(idx.tolist()) == set(pool_idx[torch.argsort(-pool_scores)[:6]].tolist())


def test_qubo_collate_on_sa_cpu_trains_a_model_end_to_end(data):
    ds, _ = data
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    collate = SelectionCollate(
        QUBOSelector(kpp_sdk.get_device("sa.cpu")), 8,
        lambda pool, idx: torch.distributions.Categorical(logits=model(pool[0])).entropy(), seed=0)
    loader = DataLoader(ds, batch_sampler=CandidatePoolSampler(len(ds), 8, seed=0), collate_fn=collate)
    for (x, y), _, idx in loader:
        assert len(set(idx.tolist())) == 8
        loss = torch.nn.functional.cross_entropy(model(x), y)
        assert not loss.requires_grad or loss.grad_fn is not None
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert collate.last_selection is not None and len(collate.last_selection) == 8


def test_a_pool_smaller_than_the_batch_is_a_clear_error(data):
    ds, _ = data
    # pools of 19: 120 = 6 * 19 + 6, and the last pool of 6 cannot give a batch of 10
    sampler = CandidatePoolSampler(len(ds), 10, pool_factor=1.9, drop_last=False)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=SelectionCollate(RandomSelector(), 10))
    with pytest.raises(InvalidBatchSizeError, match="drop_last=True"):
        list(loader)


def test_nan_uncertainty_from_the_callback_is_rejected(data):
    ds, _ = data
    collate = SelectionCollate(RandomSelector(), 2, lambda pool, idx: torch.full((len(idx),), float("nan")))
    with pytest.raises(kpp_sdk.NonFiniteError, match="uncertainty"):
        collate([ds[i] for i in range(8)])


def test_batched_getitems_equals_single_items_and_checks_range(data):
    ds, _ = data
    ids = [5, -1, 0, 5, 119]
    many = ds.__getitems__(ids)
    assert len(many) == len(ids)
    for (s, e, i), j in zip(many, ids):
        (x, y), e1, i1 = ds[j]
        assert i == i1 and torch.equal(s[0], x) and torch.equal(s[1], y) and torch.equal(e, e1)
    with pytest.raises(IndexError, match="120 out of range"):
        ds.__getitems__([3, 120])


def test_a_list_index_gives_the_collated_batch_of_its_items(data):
    from torch.utils.data._utils.collate import default_collate

    ds, _ = data
    idx = [5, 0, 119, -1, 5]
    want = default_collate([ds[i] for i in idx])
    for index in (idx, np.array(idx), torch.tensor(idx)):
        got = ds[index]
        assert type(got) is type(want) and type(got[0]) is type(want[0])
        assert all(torch.equal(a, b) for a, b in zip(got[0], want[0]))
        assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
        assert got[2].dtype == torch.int64 and got[2].tolist() == [5, 0, 119, 119, 5]

    class Plain(torch.utils.data.Dataset):  # not a TensorDataset: the per-item path
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            return {"x": ds.dataset[i][0], "i": i}

    other = EmbeddingDataset(Plain(), ds.store)
    got, want = other[idx], default_collate([other[i] for i in idx])
    assert torch.equal(got[0]["x"], want[0]["x"]) and torch.equal(got[1], want[1])
    with pytest.raises(IndexError, match="index 120 out of range for 120"):
        ds[[0, 120]]
