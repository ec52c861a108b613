"""Helpers for running sk_softreg searches on a ``dask.distributed`` cluster.

scikit-learn's searches run on Dask through joblib's dask backend; nothing in
the estimators is Dask-specific::

    import joblib
    from distributed import Client
    client = Client("tcp://scheduler:8786")
    with joblib.parallel_config(backend="dask"):
        GridSearchCV(SoftRegCNNClassifier(random_state=0), grid, n_jobs=-1).fit(X, y)

Dask's nanny starts every worker process with ``OMP_NUM_THREADS=1``, so by
default each worker process runs torch on one thread and ``nthreads`` fits at
once. :func:`set_torch_threads` changes the torch thread count on every
worker, present and future.

This module needs the ``distributed`` extra (``pip install 'sk-softreg[distributed]'``).
"""

import numbers

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sk_softreg.distributed needs dask.distributed; install the extra with "
        "pip install 'sk-softreg[distributed]'."
    ) from exc

__all__ = ["TorchThreads", "set_torch_threads"]


def _torch_num_threads():
    import torch

    return torch.get_num_threads()


def _set_torch_num_threads(n_threads):
    import torch

    torch.set_num_threads(n_threads)


class TorchThreads(WorkerPlugin):
    """Worker plugin that sets torch's intra-op thread count on each worker.

    Parameters
    ----------
    n_threads : int
        Threads per worker process. Keep ``n_threads * nthreads`` (Dask
        threads per worker) at or below the worker's cores.

    Examples
    --------
    >>> from sk_softreg.distributed import TorchThreads
    >>> TorchThreads(2).n_threads
    2
    """

    name = "sk-softreg-torch-threads"

    def __init__(self, n_threads):
        self.n_threads = n_threads

    def setup(self, worker):
        _set_torch_num_threads(self.n_threads)


def set_torch_threads(client, n_threads):
    """Use ``n_threads`` torch threads in every worker process of ``client``'s cluster.

    The setting is registered as a worker plugin, so workers that join or
    restart later get it too. Call it once, right after connecting and before
    any torch work: torch fixes a thread's OpenMP thread count when that
    thread first runs a parallel operation, so a worker thread that already
    ran torch tasks keeps its old count until the worker restarts
    (``client.restart()``). The returned counts are read in the workers' task
    threads, so they show what the search will use.

    Parameters
    ----------
    client : distributed.Client
    n_threads : int
        Torch intra-op threads per worker process (>= 1).

    Returns
    -------
    dict
        ``{worker address: torch.get_num_threads()}`` as the workers' task
        threads see it after the change.

    Examples
    --------
    >>> from distributed import Client, LocalCluster  # doctest: +SKIP
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
    >>> set_torch_threads(client, 4)  # doctest: +SKIP
    {'tcp://127.0.0.1:40261': 4, 'tcp://127.0.0.1:35477': 4}
    """
    if not isinstance(n_threads, numbers.Integral) or isinstance(n_threads, bool) or n_threads < 1:
        raise ValueError(f"n_threads must be an int >= 1. Got {n_threads!r} instead.")
    n_threads = int(n_threads)
    client.register_plugin(TorchThreads(n_threads))
    futures = {
        addr: client.submit(
            _torch_num_threads, workers=[addr], pure=False, allow_other_workers=False
        )
        for addr in client.scheduler_info()["workers"]
    }
    return {addr: fut.result() for addr, fut in futures.items()}
