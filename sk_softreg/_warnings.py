"""Warnings attributed to the user's call, however deep in the library they are raised."""

import inspect
import os
import warnings

import joblib
import sklearn
import skorch

__all__ = ["warn"]

#: the directories whose frames are library code: sk_softreg's, and those of the
#: packages that call the estimators: skorch (the training engine), scikit-learn (its
#: meta-estimators and ``fit`` wrappers) and joblib (the searches' in-process loop)
_LIBRARY_DIRS = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (__file__, skorch.__file__, sklearn.__file__, joblib.__file__)
)


def warn(message, category=UserWarning):
    """``warnings.warn(message, category)``, reported at the first frame outside
    the library directories: the user's line that called into them (as pandas'
    ``find_stack_level``; Python 3.12's ``skip_file_prefixes`` does the same).
    A fixed ``stacklevel`` is right on one call path only."""
    frame = inspect.currentframe().f_back  # the function that warns: stacklevel 2 from here
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_LIBRARY_DIRS):
        frame = frame.f_back
        level += 1
    del frame
    warnings.warn(message, category, stacklevel=level)
