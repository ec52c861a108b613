"""Names that pickles written by sk_softreg 0.1.0 refer to.

Release 0.1.0 kept its per-batch bookkeeping here; it lives in
:mod:`sk_softreg._fast_loop` now, and a pickle of that release still names
this module for the estimators' ``history_``.
"""

from ._fast_loop import BatchHistory

__all__ = ["BatchHistory"]
