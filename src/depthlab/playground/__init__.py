"""``depthlab playground``: a live browser playground that trains a network with the NumPy
engine and shows its gradients vanish or explode layer by layer.

:mod:`.setup` (controls, URL query, TOML export), :mod:`.presets`, :mod:`.memory_check`,
:mod:`.session` (one training thread per tab), :mod:`.measure` (the panels' numbers),
:mod:`.prediction` (the theory line), :mod:`.doctor_task`, :mod:`.app` (Starlette routes and the
WebSocket protocol), :mod:`.server` (uvicorn). Needs the ``playground`` extra
(``pip install depthlab[playground]``).
"""

from __future__ import annotations

from typing import Any


def create_app(**kwargs: Any):
    """The ASGI app (see :func:`depthlab.playground.app.create_app`)."""
    from .app import create_app as _create

    return _create(**kwargs)


def serve(*args: Any, **kwargs: Any) -> None:
    """Run the server (see :func:`depthlab.playground.server.serve`)."""
    from .server import serve as _serve

    _serve(*args, **kwargs)


__all__ = ["create_app", "serve"]
