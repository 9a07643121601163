"""The repository's scripts (``scripts/``, ``benchmarks/``) as modules: they are files, not
package modules, so a test loads one by path: ``load_script("benchmarks/speed_readme.py")``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_script(relative: str) -> ModuleType:
    """The module of the script at ``ROOT / relative``, freshly executed."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
