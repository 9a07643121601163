"""Old name of :mod:`helpers.cli`, kept for tests that import ``shared``."""

from helpers.cli import ENV, ISSUE_EXAMPLE, cli

__all__ = ["ENV", "ISSUE_EXAMPLE", "cli"]
