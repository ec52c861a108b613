"""FitState and EpochTerms (sk_softreg._fit_state) on their own."""

import torch

from sk_softreg._fit_state import HISTORY_TERMS, EpochTerms, FitState


class _Engine:
    def __init__(self):
        self.closed = 0

    def close(self):
        self.closed += 1


def test_close_releases_the_engine_once():
    state = FitState()
    state.engine = engine = _Engine()
    state.close()
    state.close()
    assert engine.closed == 1
    assert state.engine is None


def test_epoch_terms_are_row_weighted_means():
    assert HISTORY_TERMS == ("train_l1", "train_l2", "train_kl", "train_features")
    terms = EpochTerms()
    terms.add([1.0, None, torch.tensor(2.0), 4.0], rows=3)
    terms.add([3.0, None, torch.tensor(6.0), None], rows=1)
    assert terms.rows == 4
    means = terms.means()
    assert means == [(3 * 1.0 + 3.0) / 4, 0.0, (3 * 2.0 + 6.0) / 4, 3 * 4.0 / 4]
    assert all(type(m) is float for m in means)


def test_epoch_terms_keep_no_graph():
    w = torch.tensor(2.0, requires_grad=True)
    terms = EpochTerms()
    terms.add([None, w * w, None, None], rows=2)
    assert not terms.sums[1].requires_grad
    assert terms.means()[1] == 4.0
