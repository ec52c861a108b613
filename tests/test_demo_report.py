"""The digits demo (sk_softreg._demo): the one-standard-error refit rule and the report."""

import io

import numpy as np
import pytest
from sklearn.datasets import load_digits

import sk_softreg._demo as demo
from sk_softreg import SoftRegCNNClassifier
from sk_softreg._demo import run_demo, sparsest_within_one_se

TINY_CNN = dict(module__channels=(4, 8), module__hidden_units=16, batch_size=32)


def _results(means, sparsity, std=0.006, n_splits=3, sparsity_splits=False):
    """cv_results_ of a search scored on accuracy and sparsity, with fold scores
    spread so that std_test_accuracy == std."""
    offsets = np.linspace(-1.0, 1.0, n_splits)
    offsets *= std / offsets.std()
    splits = np.array([[m + o for o in offsets] for m in means])
    res = {f"split{k}_test_accuracy": splits[:, k] for k in range(n_splits)}
    if sparsity_splits:  # as GridSearchCV records them for the sparsity scorer
        res.update({f"split{k}_test_sparsity": np.asarray(sparsity) for k in range(n_splits)})
    res.update(mean_test_accuracy=splits.mean(1), std_test_accuracy=splits.std(1),
               mean_test_sparsity=np.asarray(sparsity, dtype=float))
    return res


def test_the_margin_is_the_standard_error_not_the_standard_deviation():
    # SE = 0.006 / sqrt(3) = 0.00346: 0.984 is more than one SE below 0.988
    assert sparsest_within_one_se(_results([0.988, 0.984], [0.0, 0.5])) == 0
    assert sparsest_within_one_se(_results([0.988, 0.985], [0.0, 0.5])) == 1


def test_the_folds_are_counted_on_the_accuracy_scores_only():
    # the sparsity scorer's split columns do not count as folds: SE over sqrt(3), not sqrt(6)
    res = _results([0.988, 0.985], [0.0, 0.5], sparsity_splits=True)
    assert sparsest_within_one_se(res) == 1


def test_a_candidate_exactly_at_the_margin_is_admissible():
    # folds that agree: no spread, so only the best mean itself is within one SE
    assert sparsest_within_one_se(_results([0.9, 0.9, 0.8], [0.0, 0.5, 0.9], std=0.0)) == 1


@pytest.fixture
def tiny_demo(monkeypatch, tmp_path):
    """run_demo on 160 digits with a small CNN, run from an empty folder."""
    X, y = load_digits(return_X_y=True)
    monkeypatch.setattr(demo, "load_digits", lambda return_X_y: (X[:160], y[:160]))
    monkeypatch.setattr(demo, "SoftRegCNNClassifier",
                        lambda **kw: SoftRegCNNClassifier(**TINY_CNN, **kw))
    monkeypatch.chdir(tmp_path)
    splits = []
    split = demo.train_test_split

    def recording_split(*arrays, **kwargs):
        splits.append(kwargs)
        return split(*arrays, **kwargs)

    monkeypatch.setattr(demo, "train_test_split", recording_split)

    def run(**kwargs):
        out = io.StringIO()
        params = dict(max_epochs=2, cv=2, device="cpu", output=None, file=out)
        params = {"param_grid": {"lambda1": [0.0, 1e-2, 1e-1]}, **params, **kwargs}
        return run_demo(**params), out.getvalue()

    run.splits = splits
    run.folder = tmp_path
    return run


def test_demo_report_without_saving(tiny_demo):
    result, text = tiny_demo(random_state=3)
    search = result["search"]
    best = search.best_estimator_
    assert result["output"] is None and "saved best model" not in text
    assert list(tiny_demo.folder.iterdir()) == []
    # seeded fits, on a split stratified on the labels
    assert best.random_state == 3
    (kwargs,) = tiny_demo.splits
    assert kwargs["random_state"] == 3
    np.testing.assert_array_equal(kwargs["stratify"], load_digits(return_X_y=True)[1][:160])
    # the sparsity returned and printed is the refitted model's
    assert result["sparsity"] == best.sparsity_
    assert sum("<- refit" in line for line in text.splitlines()) == 1


def test_demo_names_the_most_accurate_candidate_apart_from_the_refit(tiny_demo, monkeypatch):
    # a refit rule that takes the least accurate candidate: the report still
    # names the most accurate one on its own line
    monkeypatch.setattr(demo, "sparsest_within_one_se",
                        lambda res: int(np.argmin(res["mean_test_accuracy"])))
    result, text = tiny_demo(param_grid={"lambda1": [1.0, 0.0], "lr": [1e-2]}, max_epochs=8)
    res = result["search"].cv_results_
    top = int(np.argmax(res["mean_test_accuracy"]))
    assert top != result["search"].best_index_
    assert f"most accurate in CV: {res['params'][top]} " in text
    assert f"refit (sparsest within one standard error of it): {res['params'][result['search'].best_index_]}" in text
    # the table lists the candidates by rank, the best first (here the second candidate)
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "mean acc" in line) + 1
    rows = [line.split() for line in lines[start:start + 2]]
    assert [int(row[4]) for row in rows] == [1, 2]  # lambda1, lr, mean acc, std, rank
    assert float(rows[0][0]) == res["params"][top]["lambda1"]
    assert rows[1][-1] == "refit"
