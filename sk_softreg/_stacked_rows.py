"""The rows of a stack's members, pooled into tensors (:mod:`sk_softreg._stacked`).

Each member keeps its own batches (order, batch size, weights); :class:`Rows`
stores their X once per distinct training set and gathers each step's batch
of every member with one ``index_select``.
"""

import copy

import numpy as np
import torch

__all__ = ["Rows"]


class Rows:
    """The members' rows of X, y and weights pooled into tensors (equal X stored once)."""

    def __init__(self, batches):
        self.batches = batches
        parts, self.x_offsets = [], []
        for b in batches:
            offset = 0
            for part in parts:
                if part is b.X or _equal(part, b.X):
                    break
                offset += len(part)
            else:
                parts.append(b.X)
            self.x_offsets.append(offset)
        self.X = torch.cat(parts) if len(parts) > 1 else parts[0]
        self.y = torch.cat([b.y for b in batches])
        self.w = torch.cat([
            b.sample_weight.to(torch.float32) if b.sample_weight is not None
            else torch.ones(len(b.X), device=b.X.device)
            for b in batches
        ])
        self.y_offsets = np.cumsum([0] + [len(b.X) for b in batches[:-1]]).tolist()

    def subset(self, keep):
        """The rows of members ``keep`` only: the same pools, their offsets."""
        rows = copy.copy(self)
        rows.batches = [self.batches[i] for i in keep]
        rows.x_offsets = [self.x_offsets[i] for i in keep]
        rows.y_offsets = [self.y_offsets[i] for i in keep]
        return rows

    def index(self, orders, running):
        """Per-step gather indices for this epoch: ``(steps, n_members, batch)`` each.

        Returns ``(x_index, y_index, mask, sizes)``; ``mask`` marks real rows
        (padding repeats row 0 with weight 0), ``sizes`` is the host-side
        ``(steps, n_members)`` array of batch sizes (0: no batch).
        """
        size = self.batches[0].batch_size
        steps = max(len(b) for b, on in zip(self.batches, running) if on)
        device = self.X.device
        xs, ys, counts = [], [], np.zeros((steps, len(self.batches)), dtype=np.int64)
        for m, (b, order, on) in enumerate(zip(self.batches, orders, running)):
            n = len(b.X)
            stop = (n - n % size if b.drop_last else n) if on else 0
            counts[: -(-stop // size), m] = np.minimum(size, stop - np.arange(0, stop, size))
            rows = (order if order is not None else torch.arange(n, device=device))[:stop]
            pad = torch.full((steps * size - stop,), -1, dtype=torch.int64, device=device)
            rows = torch.cat([rows.to(device), pad])
            xs.append(torch.where(rows >= 0, rows + self.x_offsets[m], 0))
            ys.append(torch.where(rows >= 0, rows + self.y_offsets[m], 0))
        x_index = torch.stack(xs).view(len(xs), steps, size).transpose(0, 1).contiguous()
        y_index = torch.stack(ys).view(len(ys), steps, size).transpose(0, 1).contiguous()
        mask = torch.arange(size, device=device) < torch.as_tensor(counts, device=device)[..., None]
        return x_index, y_index, mask, counts

    def gather(self, x_index, y_index, mask):
        """The batch tensors of one step: X ``(n_members, batch, ...)``, y, weights."""
        m, b = x_index.shape
        X = self.X.index_select(0, x_index.reshape(-1)).view(m, b, *self.X.shape[1:])
        y = self.y.index_select(0, y_index.reshape(-1))
        w = self.w.index_select(0, y_index.reshape(-1)).view(m, b) * mask
        return X, y, w


def _equal(a, b):
    """Whether two tensors hold the same values (on the CPU through numpy, which does not
    wake torch's thread pool for it)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.device.type == "cpu":
        return bool(np.array_equal(a.numpy(), b.numpy()))
    return torch.equal(a, b)
