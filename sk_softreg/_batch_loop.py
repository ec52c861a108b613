"""Names that pickles written by sk_softreg 0.1.0 refer to.

Release 0.1.0 kept its own per-batch loop here, with a ``BatchHistory``
subclass of skorch's ``History`` as the estimators' ``history_``. The loop is
skorch's own now; a pickle of that release still names this class, and
loads as a plain ``History``.
"""

from skorch.history import History

__all__ = ["BatchHistory"]

#: ``history_`` of 0.1.0 pickles: skorch's ``History`` (same contents, same methods)
BatchHistory = History
