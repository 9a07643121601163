"""``serve``: run the playground on uvicorn (an ASGI server) until Ctrl-C."""

from __future__ import annotations

import errno
import http.client
import ipaddress
import json
import os
import socket
import threading
import time
import urllib.request
import webbrowser

from .app import PING_INTERVAL, create_app


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``(host, port)`` (``port`` 0: any free port). Raises
    ``OSError`` with a one-line message when the address is taken or not local."""
    # an IPv6 address as URLs write it ([::1]) was looked up as a host name: "Name or service
    # not known"
    addr = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((addr, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:  # a second playground on the default port
            running = _playground_at(addr, port)
            # the command run twice (a second terminal, a teacher's second try): the page the
            # first one serves is the one to open, which the line did not say
            hint = (f" (a depthlab playground already answers there: open {running}; port 0 "
                    "picks any free one)" if running else
                    " (another program uses it; port 0 picks any free one)")
        elif isinstance(e, socket.gaierror) or e.errno in (errno.EADDRNOTAVAIL, errno.EINVAL):
            # "Cannot assign requested address" (8.8.8.8) or "Invalid argument" (fe80::1)
            # did not say what to give instead
            hint = ("; expected an address of this machine: 127.0.0.1 (this machine only), "
                    "0.0.0.0 (every interface) or one of its network addresses")
        else:
            hint = ""
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}{hint}") from None
    sock.listen(128)
    return sock


def _playground_at(addr: str, port: int) -> str | None:
    """The URL of a playground that answers on ``(addr, port)`` (its ``/api/schema``, asked
    with half a second to answer, no proxy), else None."""
    if not port:
        return None
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(addr, addr)
    url = f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url + "api/schema", timeout=0.5) as r:
            body = json.loads(r.read(2_000_000))
    except (OSError, ValueError, http.client.HTTPException):
        # refused, timed out, not JSON; or not HTTP at all (a Dask scheduler's port answers
        # binary frames: BadStatusLine, an HTTPException, came out of `depthlab playground`
        # as a traceback where "another program uses it" was meant)
        return None
    return url if isinstance(body, dict) and "fields" in body and "presets" in body else None


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def trusted_hosts(host: str) -> tuple[str, ...] | None:
    """The ``Host`` names the app answers when it listens on ``host``: the loopback names for
    a loopback address (the page's own URL; another name is a web site rebound to this
    machine), None (any) otherwise."""
    try:
        loopback = host.lower() == "localhost" or \
            ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return None
    if not loopback:
        return None
    return tuple(dict.fromkeys((*LOOPBACK_NAMES, host.lower())))


def exposure_note(host: str) -> str | None:
    """The warning printed when ``host`` is not a loopback address (127.0.0.2 and LOCALHOST
    are this machine too: they were warned about as if other machines could connect)."""
    if trusted_hosts(host) is not None:
        return None
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return (f"note: listening on {shown}: other machines that can reach it may use the "
            "playground (and this machine's CPU)")


def network_address(family: int = socket.AF_INET) -> str | None:
    """This machine's address on its network (the one its default route leaves from), or None
    when it has none: a UDP socket connected to a documentation address (192.0.2.1,
    2001:db8::1) sends nothing; its own address is the one other machines reach."""
    target = ("2001:db8::1", 9) if family == socket.AF_INET6 else ("192.0.2.1", 9)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(target)
            addr = probe.getsockname()[0]
    except OSError:
        return None
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    return None if ip.is_loopback or ip.is_unspecified else addr


def others_url(sock: socket.socket) -> str | None:
    """The URL other machines open when ``sock`` listens on every interface (0.0.0.0, ::), or
    None (a loopback or a single address: the printed URL is already the one)."""
    host, port = sock.getsockname()[:2]
    if host not in ("0.0.0.0", "", "::"):
        return None
    families = [socket.AF_INET]
    if host == "::":  # an IPv4 address first where the socket takes IPv4 too (dual stack)
        v6only = sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        families = [socket.AF_INET6] if v6only else [socket.AF_INET, socket.AF_INET6]
    addr = next((a for a in map(network_address, families) if a is not None), None)
    if addr is None:
        return None
    return f"http://[{addr}]:{port}/" if ":" in addr else f"http://{addr}:{port}/"


def default_max_sessions(host: str) -> int | None:
    """How many tabs may have a network at once when ``--max-sessions`` is not given: any
    number on a loopback address (this machine's own tabs), else twice the CPU cores, at
    least 4 (a class on a teacher's laptop: each running network keeps a core busy)."""
    if trusted_hosts(host) is not None:
        return None
    return max(4, 2 * (os.cpu_count() or 1))


def sessions_note(max_sessions: int | None) -> str | None:
    """The line printed about the cap on sessions (None: no cap, nothing to say)."""
    if max_sessions is None:
        return None
    return (f"at most {max_sessions} tabs have a network (training or paused) at once; a tab "
            "beyond that waits until one closes (--max-sessions N changes it, 0: no limit)")


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    # every interface: the URL to open on this machine is its loopback one ([::] is no
    # address a browser can open everywhere)
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/"


def serve(host: str = "127.0.0.1", port: int = 8765, *, open_browser: bool = True,
          memory_limit: int | None = None, max_sessions: int | None | str = "default",
          announce=print) -> None:
    """Serve the playground on ``host:port`` (127.0.0.1 unless told otherwise), print the URL
    and open it in the default browser. Returns when interrupted (Ctrl-C). ``max_sessions``:
    how many tabs may have a network at once (None: any number; ``"default"``:
    :func:`default_max_sessions`)."""
    import uvicorn

    if max_sessions == "default":
        max_sessions = default_max_sessions(host)
    app = create_app(memory_limit=memory_limit, hosts=trusted_hosts(host),
                     max_sessions=max_sessions)  # a bad value: ValueError before binding
    sock = bind(host, port)
    url = url_of(sock)
    config = uvicorn.Config(app,
                            log_level="warning",
                            ws_ping_interval=PING_INTERVAL, ws_ping_timeout=PING_INTERVAL,
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    announce(f"depthlab playground: {url}  (Ctrl-C stops it)")
    note = exposure_note(host)
    if note:
        announce(note)
    others = others_url(sock)
    if others:
        # --host 0.0.0.0 for a class: the URL printed was this machine's 127.0.0.1, which
        # the students' machines cannot open, and nothing said which one they can
        announce(f"other machines on its network open {others}")
    cap = sessions_note(max_sessions)
    if cap:
        announce(cap)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    server.run(sockets=[sock])


class Background:
    """The playground served from a daemon thread (tests, notebooks): ``.url``, ``.app``,
    ``.stop()``; also a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 memory_limit: int | None = None, ping_interval: float = PING_INTERVAL,
                 max_sessions: int | None = None) -> None:
        import uvicorn

        sock = bind(host, port)
        self.url = url_of(sock)
        self.app = create_app(memory_limit=memory_limit, hosts=trusted_hosts(host),
                              max_sessions=max_sessions)
        self.server = uvicorn.Server(uvicorn.Config(
            self.app, log_level="warning", ws_ping_interval=ping_interval,
            ws_ping_timeout=ping_interval, timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       name="depthlab-playground-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the playground server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving and every session."""
        registry = self.app.state.registry
        for s in list(registry.sessions.values()):
            s.stop()
        self.server.should_exit = True
        self.thread.join(10)

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
