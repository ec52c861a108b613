"""The in-memory fast path of ``get_iterator`` against skorch's DataLoader path."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_regression
from skorch.callbacks import Callback, EpochScoring
from skorch.dataset import Dataset, ValidSplit

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor
from sk_softreg._batching import TensorBatches, fast_batches_source, pack_weights

# Any iterator option outside batch_size/shuffle/drop_last selects the DataLoader.
FORCE_DATALOADER = {"iterator_train__num_workers": 0, "iterator_valid__num_workers": 0}


class BatchCounter(Callback):
    """Counts training batches and checks their types."""

    def initialize(self):
        self.n_batches = 0
        return self

    def on_batch_begin(self, net, batch=None, training=None, **kwargs):
        Xi, yi = batch
        assert isinstance(Xi, torch.Tensor) and isinstance(yi, torch.Tensor)
        self.n_batches += bool(training)


def _digits():
    X, y = load_digits(return_X_y=True)
    return X[:160] / 16.0, y[:160]


_COMMON = dict(
    lambda1=1e-4, lambda2=1e-4, alpha=0.1, max_epochs=3, batch_size=32, random_state=0,
    device="cpu",
)


def _classifier(**kwargs):
    params = {**_COMMON, "module__channels": (4, 8), "module__hidden_units": 16, **kwargs}
    return SoftRegCNNClassifier(**params)


def _regressor(**kwargs):
    return SoftRegRegressor(**{**_COMMON, **kwargs})


def _regression():
    X, y = make_regression(n_samples=160, n_features=6, noise=1.0, random_state=0)
    return X, y


@pytest.mark.parametrize("split", [None, 0.2])
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_fast_path_matches_dataset_path(kind, split):
    make, data = (_classifier, _digits) if kind == "classifier" else (_regressor, _regression)
    X, y = data()
    extra = {} if split is None else {"train_split": ValidSplit(split, random_state=0)}
    fast = make(callbacks=[("count", BatchCounter())], **extra)
    slow = make(callbacks=[("count", BatchCounter())], **extra, **FORCE_DATALOADER)
    fast.fit(X, y)
    slow.fit(X, y)

    # the two nets really took different paths
    ds = fast.get_dataset(X[:10].astype(np.float32))
    assert isinstance(fast.get_iterator(ds, training=True), TensorBatches)
    assert isinstance(slow.get_iterator(ds, training=True), torch.utils.data.DataLoader)

    if kind == "classifier":
        np.testing.assert_array_equal(fast.predict_proba(X), slow.predict_proba(X))
    else:
        np.testing.assert_array_equal(fast.predict(X), slow.predict(X))
    keys = ["train_loss", "train_l1", "train_l2", "train_kl"]
    if split is not None:
        keys.append("valid_loss")
    for key in keys:
        assert fast.history[:, key] == slow.history[:, key], key
    n_train = len(X) if split is None else len(X) - int(np.ceil(split * len(X)))
    expected_batches = 3 * int(np.ceil(n_train / 32))
    assert dict(fast.callbacks_)["count"].n_batches == expected_batches
    assert dict(slow.callbacks_)["count"].n_batches == expected_batches
    assert [len(b) for b in fast.history[:, "batches"]] == [len(b) for b in slow.history[:, "batches"]]


def test_scoring_callback_on_fast_path():
    X, y = _digits()
    extra = dict(
        train_split=ValidSplit(0.25, random_state=0),
        callbacks=[EpochScoring("accuracy", on_train=False, use_caching=False, name="valid_acc2")],
    )
    fast = _classifier(**extra).fit(X, y)
    slow = _classifier(**extra, **FORCE_DATALOADER).fit(X, y)
    assert fast.history[:, "valid_acc2"] == slow.history[:, "valid_acc2"]
    assert fast.history[:, "valid_acc"] == fast.history[:, "valid_acc2"]


def test_user_dataset_and_iterator_use_dataloader():
    X, y = _digits()
    net = _classifier(max_epochs=1).fit(X, y)
    Xf = X.astype(np.float32).reshape(-1, 1, 8, 8)

    class MyDataset(Dataset):
        pass

    assert isinstance(net.get_iterator(MyDataset(Xf, y)), torch.utils.data.DataLoader)
    # dict input is not a plain array
    assert isinstance(net.get_iterator(Dataset({"a": Xf}, y)), torch.utils.data.DataLoader)

    class MyLoader(torch.utils.data.DataLoader):
        pass

    net.iterator_valid = MyLoader  # (skorch's set_params refuses this on a fitted net)
    assert isinstance(net.get_iterator(Dataset(Xf, y)), MyLoader)


@pytest.mark.parametrize("batch_size, drop_last", [(-1, False), (50, True), (50, False)])
def test_batch_size_and_drop_last(batch_size, drop_last):
    X, y = _regression()
    kwargs = dict(batch_size=batch_size, iterator_train__drop_last=drop_last, max_epochs=2)
    fast = _regressor(**kwargs).fit(X, y)
    slow = _regressor(**kwargs, **FORCE_DATALOADER).fit(X, y)
    sizes = [b["train_batch_size"] for b in fast.history[-1, "batches"]]
    if batch_size == -1:
        assert sizes == [len(X)]
    elif drop_last:
        assert sizes == [50] * (len(X) // 50)
    else:
        assert sizes == [50] * (len(X) // 50) + ([len(X) % 50] if len(X) % 50 else [])
    assert sizes == [b["train_batch_size"] for b in slow.history[-1, "batches"]]
    np.testing.assert_array_equal(fast.predict(X), slow.predict(X))


def test_prepared_tensors_not_kept_after_fit():
    X, y = _regression()
    net = _regressor(max_epochs=1).fit(X, y)
    assert getattr(net, "_fit_state", None) is None
    state = pickle.loads(pickle.dumps(net)).__dict__
    assert "_fit_state" not in state


def test_shuffling_draws_like_dataloader():
    """One epoch of TensorBatches leaves the global RNG where a DataLoader does."""
    X = torch.arange(20.0).reshape(10, 2)
    y = torch.arange(10)
    torch.manual_seed(1)
    ref = list(torch.utils.data.DataLoader(Dataset(X, y), batch_size=3, shuffle=True))
    after_ref = torch.rand(3)
    torch.manual_seed(1)
    got = list(TensorBatches(X, y, batch_size=3, shuffle=True, drop_last=False))
    after_got = torch.rand(3)
    assert len(ref) == len(got) == 4
    for (xa, ya), (xb, yb) in zip(ref, got):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(after_ref, after_got)
    assert not torch.equal(torch.cat([b[1] for b in got]), y)  # it did shuffle


@pytest.mark.parametrize("blocks", ["one", "of two batches"])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_weighted_batches_match_dataloader(shuffle, drop_last, blocks, monkeypatch):
    """The DataLoader's batches, weights included, whether the shuffled rows are
    gathered in one block or in blocks of two batches (the last one shorter)."""
    import sk_softreg._batching as batching

    X = torch.arange(33.0).reshape(11, 3)
    y = torch.arange(11.0)
    w = torch.linspace(0.5, 1.5, 11)
    if blocks != "one":  # a row is 5 floats of 4 bytes: two batches of 3 rows in 120 bytes
        monkeypatch.setattr(batching, "BLOCK_BYTES", 120)
        assert batching.block_batches(3, (X, y, w)) == 2
    torch.manual_seed(3)
    ref = list(torch.utils.data.DataLoader(
        Dataset(batching.pack_weights(X, w), y), batch_size=3, shuffle=shuffle,
        drop_last=drop_last,
    ))
    torch.manual_seed(3)
    batches = TensorBatches(X, y, 3, shuffle, drop_last, sample_weight=w)
    got = list(batches)
    assert len(got) == len(ref) == len(batches) == (3 if drop_last else 4)
    for (xa, ya), (xb, yb) in zip(ref, got):
        assert torch.equal(xa["X"], xb["X"]) and torch.equal(ya, yb)
        assert torch.equal(xa["sample_weight"], xb["sample_weight"])


def test_nested_subsets_batch_their_own_rows():
    """A Subset of a Subset (ValidSplit of a user's Subset) yields the rows it indexes."""
    X = np.arange(40.0, dtype=np.float32).reshape(20, 2)
    y = np.arange(20, dtype=np.float32)
    inner = torch.utils.data.Subset(Dataset(X, y), [3, 5, 7, 9, 11, 13, 15, 17])
    nested = torch.utils.data.Subset(inner, [6, 0, 2])  # rows 15, 3, 7 of X
    batches = _regressor(batch_size=2).get_iterator(nested)
    assert isinstance(batches, TensorBatches)
    Xb, yb = (torch.cat(parts) for parts in zip(*batches))
    rows = [15, 3, 7]
    assert torch.equal(Xb, torch.as_tensor(X[rows])) and torch.equal(yb, torch.as_tensor(y[rows]))


@pytest.mark.parametrize("dtype", [bool, np.int64, np.float32, np.complex64])
def test_numeric_and_bool_arrays_take_the_fast_path(dtype):
    X = np.zeros((6, 2), dtype=dtype)
    y = np.arange(6)
    source = fast_batches_source(Dataset(X, y))
    assert source is not None and source[0] is X and source[1] is y
    assert fast_batches_source(Dataset(X.astype(object), y)) is None


def test_sparse_tensors_use_the_dataloader():
    y = torch.arange(6.0)
    assert fast_batches_source(Dataset(torch.eye(6), y)) is not None
    assert fast_batches_source(Dataset(torch.eye(6).to_sparse(), y)) is None


def test_dataset_of_an_explicit_length_uses_the_dataloader():
    """A Dataset whose ``length`` is not its arrays' yields its own rows only, as the
    DataLoader does; so does a packed dict whose weights are not one per row."""
    X = np.arange(20.0, dtype=np.float32).reshape(10, 2)
    y = np.arange(10, dtype=np.float32)
    short = Dataset(X, y, length=3)
    assert fast_batches_source(short) is None
    batches = _regressor(batch_size=2).get_iterator(short)
    Xb = torch.cat([xb for xb, _ in batches])
    assert torch.equal(Xb, torch.as_tensor(X[:3]))
    assert fast_batches_source(Dataset(pack_weights(X, np.ones(5, np.float32)), y, length=10)) is None
    assert fast_batches_source(Dataset(X, y[:4], length=10)) is None


def test_a_batch_larger_than_a_block_is_gathered_alone(monkeypatch):
    """Rows of one batch above BLOCK_BYTES: one batch per block, the DataLoader's batches."""
    import sk_softreg._batching as batching

    monkeypatch.setattr(batching, "BLOCK_BYTES", 16)  # a batch of 3 rows is 60 bytes
    X = torch.arange(33.0).reshape(11, 3)
    y = torch.arange(11.0)
    w = torch.linspace(0.5, 1.5, 11)
    assert batching.block_batches(3, (X, y, w)) == 1
    torch.manual_seed(3)
    ref = list(torch.utils.data.DataLoader(Dataset(batching.pack_weights(X, w), y), batch_size=3,
                                           shuffle=True))
    torch.manual_seed(3)
    got = list(TensorBatches(X, y, 3, True, False, sample_weight=w))
    assert len(got) == len(ref) == 4
    for (xa, ya), (xb, yb) in zip(ref, got):
        assert torch.equal(xa["X"], xb["X"]) and torch.equal(ya, yb)
        assert torch.equal(xa["sample_weight"], xb["sample_weight"])


def test_without_y_the_batches_carry_the_dataloaders_placeholder():
    X = torch.arange(14.0).reshape(7, 2)
    ref = list(torch.utils.data.DataLoader(Dataset(X, None), batch_size=3))
    got = list(TensorBatches(X, None, 3, False, False))
    assert len(got) == len(ref) == 3
    for (xa, ya), (xb, yb) in zip(ref, got):
        assert torch.equal(xa, xb)
        assert yb.shape == ya.shape == (len(xa), 1) and yb.dtype == ya.dtype
        assert torch.equal(ya, yb)


@pytest.mark.parametrize("shuffle", [False, True])
def test_drop_last_with_fewer_rows_than_a_batch_yields_nothing(shuffle):
    X = torch.arange(4.0).reshape(2, 2)
    y = torch.arange(2.0)
    ref = list(torch.utils.data.DataLoader(Dataset(X, y), batch_size=3, shuffle=shuffle,
                                           drop_last=True))
    batches = TensorBatches(X, y, 3, shuffle, True)
    assert ref == list(batches) == [] and len(batches) == 0
