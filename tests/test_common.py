"""scikit-learn's estimator checks on both estimators."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor

ESTIMATORS = [
    SoftRegCNNClassifier(max_epochs=5, lr=5e-3, random_state=0, device="cpu"),
    # 10 epochs at the default batch size (128 below 2,000 rows): 20 steps on 200 rows
    SoftRegRegressor(max_epochs=10, lr=5e-3, random_state=0, device="cpu"),
]

_SKORCH_INIT = (
    "skorch's NeuralNet.__init__ sets history_, initialized_ and virtual_params_ "
    "(scikeras lists the same expected failure)"
)
_DROPOUT = (
    "the default modules use dropout, whose random masks depend on the number of rows, so "
    "repeated rows train differently from weighted ones; without dropout a full batch "
    "matches to float32 rounding (tests/test_weights.py), above this check's rtol=1e-7"
)
EXPECTED_FAILED = {
    "SoftRegCNNClassifier": {
        "check_no_attributes_set_in_init": _SKORCH_INIT,
        "check_sample_weight_equivalence_on_dense_data": _DROPOUT,
    },
    "SoftRegRegressor": {
        "check_no_attributes_set_in_init": _SKORCH_INIT,
        "check_sample_weight_equivalence_on_dense_data": _DROPOUT,
    },
}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED.get(type(estimator).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
