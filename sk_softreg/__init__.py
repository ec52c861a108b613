"""sk_softreg: scikit-learn estimators that train PyTorch networks with soft regularization.

The training objective adds an L1 penalty (``lambda1``) and an L2 penalty
(``lambda2``) on the weights and a KL term (``alpha``) on the outputs to the
data loss. Both estimators are ``skorch.NeuralNet`` subclasses.
"""

from ._classifier import SoftRegCNNClassifier
from ._exceptions import ModelFileError, NonFiniteLossError
from ._persistence import load
from ._regressor import SoftRegRegressor
from ._show_versions import show_versions
from .feature_selection import SoftRegSelectorCV
from .model_selection import BatchedGridSearchCV

__version__ = "0.1.0"

__all__ = [
    "BatchedGridSearchCV",
    "ModelFileError",
    "NonFiniteLossError",
    "SoftRegCNNClassifier",
    "SoftRegRegressor",
    "SoftRegSelectorCV",
    "__version__",
    "load",
    "show_versions",
]
