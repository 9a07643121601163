"""Old name of :mod:`helpers.gradcheck`, kept for tests that import ``gradcheck``."""

from helpers.gradcheck import fd_err, numeric_grad, rel_err

__all__ = ["fd_err", "numeric_grad", "rel_err"]
