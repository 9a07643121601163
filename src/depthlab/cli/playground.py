"""``depthlab playground``: serve the live browser playground on this machine."""

from __future__ import annotations

import argparse
import re

from .common import Command, UserError


def _port(text: str) -> int:
    # ASCII digits only: int() also reads 8_765 and Arabic-Indic or full-width digits
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0 = any "
                                         "free)")
    v = int(digits)
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"{v} is not a port number (0-65535; 0 = any free)")
    return v


def _host(text: str) -> str:
    """A host to listen on: an empty one would make the server listen on every interface
    (uvicorn binds "" to 0.0.0.0); ``--host 0.0.0.0`` says so explicitly. A URL or a host with
    a port (``http://127.0.0.1``, ``127.0.0.1:8080``, ``[::1]:8080``) is refused naming the
    options meant (it waited for a name lookup, then said "Name or service not known" about
    ``'127.0.0.1:8080:8765'``); IPv6 addresses (``::1``) are hosts."""
    host = text.strip()
    if not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not a host; expected an address such as "
                                         "127.0.0.1 (this machine) or 0.0.0.0 (every interface)")
    scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", host)
    rest = host[scheme.end():] if scheme else host
    rest = rest.split("/", 1)[0]
    port = re.fullmatch(r"(\[[^\]]*\]|[^:]*):(\d*)", rest)
    if scheme or port or rest != host:
        name = port[1].strip("[]") if port else rest
        meant = f"--host {name or '127.0.0.1'}" + (f" --port {port[2]}" if port and port[2]
                                                   else "")
        raise argparse.ArgumentTypeError(f"{text!r} is not a host: expected an address alone, "
                                         f"without a scheme, port or path (did you mean "
                                         f"{meant}?)")
    return host


def _max_sessions(text: str) -> int:
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of sessions; expected an "
                                         "integer >= 1, or 0 for no limit")
    return int(digits)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", type=_host,
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8765, help="TCP port (default 8765; 0 = any)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--max-sessions", type=_max_sessions, default=None, metavar="N",
                   help="at most N tabs have a network (training or paused) at once; a tab "
                        "beyond that waits until one closes (0: no limit; default: no limit on "
                        "127.0.0.1, else twice the CPU cores, at least 4)")


def run(args: argparse.Namespace) -> int:
    try:
        from ..playground.server import serve
    except ImportError as e:
        raise UserError(f"the playground needs its extra: pip install 'depthlab[playground]' "
                        f"({e.name or e} is missing)") from None
    try:
        # flushed: into a pipe or a log the URL must appear while the server runs (the
        # only way to learn the port of --port 0), not when it stops
        cap = args.max_sessions
        serve(args.host, args.port, open_browser=not args.no_browser,
              max_sessions="default" if cap is None else (cap or None),
              announce=lambda line: print(line, flush=True))
    except OSError as e:
        raise UserError(str(e)) from None
    return 0


COMMAND = Command("playground", "live browser playground: train and watch gradients per layer",
                  add_arguments, run)
