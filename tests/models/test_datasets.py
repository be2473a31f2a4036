"""Offline data sets: digits, bars and stripes, MNIST from local files."""

import gzip

import numpy as np
import pytest
from kpp_sdk.models.datasets import (
    DatasetNotAvailableError,
    bars_and_stripes,
    load_dataset,
    load_mnist,
    read_idx,
)


@pytest.mark.parametrize("rows, cols", [(3, 3), (2, 4), (4, 4)])
def test_bars_and_stripes_are_every_constant_row_or_column_image_once(rows, cols):
    pats = bars_and_stripes(rows, cols)
    assert pats.shape == (2**rows + 2**cols - 2, rows * cols)
    assert len({p.tobytes() for p in pats}) == pats.shape[0]
    for p in pats.reshape(-1, rows, cols):
        rows_const = np.all(p == p[:, :1], axis=1).all()
        cols_const = np.all(p == p[:1, :], axis=0).all()
        assert rows_const or cols_const
    # and nothing is missing: brute force over all images
    k = np.arange(2 ** (rows * cols))[:, None]
    imgs = ((k >> np.arange(rows * cols)) & 1).reshape(-1, rows, cols)
    ok = (imgs == imgs[:, :, :1]).all(axis=(1, 2)) | (imgs == imgs[:, :1, :]).all(axis=(1, 2))
    assert int(ok.sum()) == pats.shape[0]


def test_bas_dataset_tests_on_the_full_pattern_set():
    ds = load_dataset("bas-3x3")
    assert ds.test.shape == (14, 9) and ds.image_shape == (3, 3)
    assert load_dataset("bas").test.shape == (14, 9)
    assert load_dataset("bas-2x3", repeats=3).train.shape == (3 * (4 + 8 - 2), 6)


def test_digits_are_binarised_and_split_reproducibly():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    assert a.train.shape[1] == 64 and a.train.shape[0] + a.test.shape[0] == 1797
    assert a.test.shape[0] == round(1797 * 0.2)
    assert set(np.unique(a.train)) == {0.0, 1.0} and a.train.dtype == np.float32
    assert np.array_equal(a.train, b.train) and not np.array_equal(a.train, c.train)
    assert a.train_labels.shape == (a.train.shape[0],) and set(a.test_labels) <= set(range(10))


def _write_idx(path, arr, gz=False):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def test_mnist_loads_from_local_idx_files_in_torchvisions_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte.gz", x_train, gz=True)
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(5, dtype=np.uint8))
    _write_idx(raw / "t10k-images-idx3-ubyte", x_test)
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(3, dtype=np.uint8), gz=True)
    ds = load_mnist(tmp_path)
    assert ds.train.shape == (5, 784) and ds.test.shape == (3, 784)
    np.testing.assert_array_equal(ds.train, (x_train.reshape(5, -1) / 255.0 >= 0.5))
    assert list(ds.test_labels) == [0, 1, 2]


def test_mnist_from_an_npz_found_through_kpp_data_dir(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "mnist.npz", x_train=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
             y_train=np.arange(4), x_test=rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
             y_test=np.arange(2))
    monkeypatch.setenv("KPP_DATA_DIR", str(tmp_path))
    assert load_dataset("mnist").train.shape == (4, 784)


def test_missing_mnist_says_what_to_install_and_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.delenv("KPP_DATA_DIR", raising=False)
    with pytest.raises(DatasetNotAvailableError, match="torchvision") as info:
        load_dataset("mnist", root=tmp_path)
    assert "KPP_DATA_DIR" in str(info.value) and str(tmp_path) in str(info.value)


def test_unknown_data_set_and_truncated_idx_file_are_clear_errors(tmp_path):
    with pytest.raises(DatasetNotAvailableError, match="available: digits, bas"):
        load_dataset("cifar")
    bad = tmp_path / "x-idx3-ubyte"
    bad.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 4)
    with pytest.raises(DatasetNotAvailableError, match="truncated"):
        read_idx(bad)
