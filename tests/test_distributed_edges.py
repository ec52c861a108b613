"""set_torch_threads and TorchThreads without a cluster: a stand-in client records the calls."""

import pytest

pytest.importorskip("distributed")

import torch

from sk_softreg.distributed import TorchThreads, set_torch_threads


class _Future:
    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


class _FakeClient:
    """Runs each task at once, here; two workers."""

    def __init__(self):
        self.plugins = []
        self.submits = []

    def register_plugin(self, plugin):
        self.plugins.append(plugin)

    def scheduler_info(self):
        return {"workers": {"tcp://a:1": {}, "tcp://b:2": {}}}

    def submit(self, fn, *args, **kwargs):
        self.submits.append(kwargs)
        return _Future(fn(*args))


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -1, True, 1.0, 2.5, "2", None])
def test_set_torch_threads_rejects_bad_counts(bad):
    client = _FakeClient()
    with pytest.raises(ValueError, match="n_threads must be an int >= 1"):
        set_torch_threads(client, bad)
    assert client.plugins == [] and client.submits == []


@pytest.mark.usefixtures("restore_threads")
def test_set_torch_threads_registers_the_plugin_and_reads_each_worker():
    np = pytest.importorskip("numpy")
    client = _FakeClient()
    torch.set_num_threads(1)
    result = set_torch_threads(client, np.int64(1))
    (plugin,) = client.plugins
    assert isinstance(plugin, TorchThreads) and plugin.n_threads == 1
    assert type(plugin.n_threads) is int
    assert result == {"tcp://a:1": 1, "tcp://b:2": 1}
    # each worker is asked on its own, not on whichever worker is free
    assert [kw["workers"] for kw in client.submits] == [["tcp://a:1"], ["tcp://b:2"]]
    assert all(kw["allow_other_workers"] is False and kw["pure"] is False for kw in client.submits)


@pytest.mark.usefixtures("restore_threads")
def test_torch_threads_plugin_sets_the_count_on_setup():
    torch.set_num_threads(1)
    plugin = TorchThreads(2)
    assert torch.get_num_threads() == 1  # nothing happens before setup
    plugin.setup(worker=None)
    assert torch.get_num_threads() == 2
