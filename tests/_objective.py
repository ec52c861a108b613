"""The classifier's training objective computed by hand, for tests that check the history."""

import numpy as np
import pytest
import torch
from torch import nn


def hand_terms(module, X, y, lambda1, lambda2, alpha):
    """Data loss and weighted terms of ``module`` (in its current mode) on ``(X, y)``.

    Returns ``(ce, l1, l2, kl)``: the cross-entropy, ``λ1·Σ|w|``, ``λ2·Σw²`` over the
    tensors with more than one dimension, and ``α·mean KL(u || p)``.
    """
    weights = [p for p in module.parameters() if p.ndim > 1]
    with torch.no_grad():
        logits = module(torch.as_tensor(X))
        ce = nn.functional.cross_entropy(logits, torch.as_tensor(y)).item()
        l1 = lambda1 * sum(w.abs().sum().item() for w in weights)
        l2 = lambda2 * sum(w.square().sum().item() for w in weights)
        log_p = torch.log_softmax(logits, dim=1)
        kl = alpha * (-log_p.mean(dim=1) - np.log(logits.shape[1])).mean().item()
    return ce, l1, l2, kl


def assert_row_matches(row, terms, rel):
    """The epoch's recorded ``train_l1/l2/kl`` and ``train_loss`` equal ``terms`` (``hand_terms``)."""
    ce, l1, l2, kl = terms
    assert row["train_l1"] == pytest.approx(l1, rel=rel)
    assert row["train_l2"] == pytest.approx(l2, rel=rel)
    assert row["train_kl"] == pytest.approx(kl, rel=rel)
    assert row["train_loss"] == pytest.approx(ce + l1 + l2 + kl, rel=rel)
