"""Helpers shared by the tests, imported as ``from helpers.cli import cli`` (``cli``: the
command line in a subprocess, the issue's example run file) and ``from helpers.gradcheck import
numeric_grad`` (finite differences). pytest puts ``tests/`` on the import path for the test
modules (``tests/`` is not a package), so no path is inserted by hand."""
