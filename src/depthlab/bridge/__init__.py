"""Bridges to other frameworks (imported on demand; the engine never needs them).

``from depthlab.bridge import to_torch, from_torch`` (and the other names of
:mod:`depthlab.bridge.torch_bridge`) imports PyTorch then, not with ``import depthlab.bridge``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["from_torch", "to_torch"]


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    if name == "torch_bridge":
        from importlib import import_module

        return import_module(".torch_bridge", __name__)
    from . import torch_bridge  # PyTorch missing: its 'pip install depthlab[torch]' error

    try:
        return getattr(torch_bridge, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
