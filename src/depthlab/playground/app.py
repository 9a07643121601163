"""The playground's ASGI application (Starlette): the page, its assets, a small JSON API and one
WebSocket per browser tab.

Routes:

* ``GET /``: the page; ``GET /static/...``: its JavaScript, CSS and the vendored uPlot (all
  inside the package, nothing from the internet);
* ``GET /api/schema``: the controls (:data:`setup.FIELDS`), presets and data sets;
* ``GET /api/check?QUERY``: ``{"ok": bool, "message", "key", "parameters"}`` for a setup;
* ``GET /api/preset?name=NAME&QUERY``: the query with a preset applied (a setup it keeps that
  is refused, a bad seed: ``{"ok": false, "message", "key"}`` as ``/api/check``; 400 for an
  unknown preset or two different ``name`` values);
* ``GET /api/export?QUERY``: the setup as a TOML file for ``depthlab run`` (400 with the message
  for a bad setup);
* ``WS /ws``: the session protocol. The tab sends ``{"cmd": "setup", "query": {...}}`` (a new
  session: validated, memory-checked, then built and paused at step 0; a setup that differs
  from the session's only in settings it does not use (:func:`_inert`: the export's epochs,
  batch norm's settings without batch norm, ...) keeps the session and is answered
  ``accepted`` with ``kept: true``; the memory check counts the other tabs' networks, see
  :meth:`Registry.unclaimed`), ``play``, ``pause``,
  ``step``, ``reset`` (the same setup from scratch; with no setup accepted yet, play, step and
  reset check the refused one again and start it if it is accepted now), ``doctor`` and
  ``cancel_doctor``; the
  server sends ``state`` (``press``: the number of the last play/pause/step it had handled when
  the state changed, the page's own ``"press": N`` of the command, else its count of them: the
  page ignores a running/paused that answers a press it has pressed over since), ``waiting``
  (a new setup waits for the previous network to be built; ``full: true``: the server runs
  its ``max_sessions`` networks, and this one starts when another tab closes), ``ready``,
  ``update`` (measurements), ``diverged``, ``error`` (``key`` names the control;
  ``doctor: true`` when the doctor failed), ``doctor_started``, ``doctor`` and
  ``doctor_cancelled`` messages. Closing the socket
  (closing the tab) stops and frees the session; a tab that vanishes without closing is
  detected by the WebSocket ping (:data:`PING_INTERVAL`).
  A WebSocket opened by a page of another origin (another web site) is refused.

An unknown path is answered 404 and a method a route does not take 405, each in one line
naming what there is (:func:`not_found`, :func:`not_allowed`): ``{"ok": false, "message"}``
under ``/api/``, text elsewhere.

With ``hosts`` (the server passes them when it listens on a loopback address) a request whose
``Host`` header names another host is answered 400: a web site that points its own name at
127.0.0.1 (DNS rebinding) is then of the page's origin, and could otherwise start sessions.

Every session lives in :class:`Registry`; training threads never touch the event loop, they hand
messages to it with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..data.registry import BUILTINS
from ..memory import available_memory, format_bytes
from .doctor_task import doctor_steps, run_doctor
from .memory_check import (
    check_doctor_memory,
    check_setup_memory,
    data_shape,
    own_bytes_held,
    process_rss,
    setup_bytes,
    unclaimed_bytes,
)
from .presets import PRESETS, apply_preset, kept
from .session import DataCache, Session
from .setup import FIELDS, SetupError, active, parse_setup, to_config, to_query, to_toml

STATIC = Path(__file__).with_name("static")

REVALIDATE = {"Cache-Control": "no-cache"}
"""The page and its scripts are checked with the server on every load (an unchanged file is a
304): with only ``Last-Modified`` a browser kept them for a tenth of their age, so after an
upgrade (a wheel's files are weeks or years old) a new tab still ran the previous release's
app.js against the new server."""


class _RevalidatedFiles(StaticFiles):
    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(REVALIDATE)
        return response
PING_INTERVAL = 20.0
"""Seconds between WebSocket pings (uvicorn); a tab that answers none within another
``PING_INTERVAL`` is dropped, so a vanished tab's session is freed within 40 s."""

MAX_PENDING = 64
"""Messages queued for a slow tab before older measurement updates are dropped."""

WAIT_NOTICE = 0.3
"""Seconds a new setup waits for the previous session before the page is told why."""

FULL_POLL = 0.25
"""Seconds between two looks for a free place of a tab waiting on a full server."""

OLD_SESSION_WAIT = 30.0
"""Seconds a new setup waits for the tab's previous session thread to end (it ends within a
training step, or once its network is built) before it starts anyway."""


class Registry:
    """The live sessions, one per connected tab (and, weakly, every session started, so that
    :meth:`threads_alive` also counts a replaced session whose thread has not ended yet)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sessions: dict[int, Session] = {}
        # the bytes each tab's network was accepted with (memory_check.setup_bytes), and this
        # process's resident memory before it served any network: a tab's check sets aside
        # what the other tabs' networks have not taken yet (see unclaimed)
        self.reserved: dict[int, int] = {}
        self.baseline_rss = process_rss()
        self._started: weakref.WeakSet[Session] = weakref.WeakSet()
        self.max_sessions: int | None = None  # tabs with a network at once (None: any)
        # the last data set loaded, for the next session of any tab (a control change no
        # longer reloads fashion-mnist: 5-9 s)
        self.data = DataCache()

    def put(self, tab: int, session: Session | None, nbytes: int = 0) -> None:
        """Make ``session`` the tab's session (None: the tab closed); the previous one stops.
        ``nbytes``: the memory the session was accepted with."""
        with self._lock:
            old = self.sessions.pop(tab, None)
            self.reserved.pop(tab, None)
            if session is not None:
                self.sessions[tab] = session
                self.reserved[tab] = int(nbytes)
                self._started.add(session)
        if old is not None and old is not session:
            old.stop()

    def __len__(self) -> int:
        with self._lock:
            return len(self.sessions)

    def full_for(self, tab: int) -> bool:
        """Whether a new session of ``tab`` (one without a session yet) must wait: the other
        tabs hold :attr:`max_sessions` of them."""
        with self._lock:
            return (self.max_sessions is not None and tab not in self.sessions
                    and len(self.sessions) >= self.max_sessions)

    def unclaimed(self, tab: int) -> tuple[int, int, int]:
        """``(bytes, tabs, own)``: what the networks of the other tabs (``tabs`` of them) will
        still take of the memory the machine reports free (:func:`unclaimed_bytes`): two tabs
        that each chose a network of 60% of the free memory were both accepted, the second
        checked while the first was being built (or paused at step 0, its gradients not
        written yet), and together they asked the machine for 120% of it; ``own``: what the
        tab's own network holds and frees before its next one is built
        (:func:`own_bytes_held`)."""
        with self._lock:
            others = [k for k, s in self.sessions.items() if k != tab and s.alive]
            reserved = sum(self.reserved.get(k, 0) for k in others)
            mine = self.sessions.get(tab)
            own = self.reserved.get(tab, 0) if mine is not None and mine.alive else 0
        return (unclaimed_bytes(reserved, self.baseline_rss), len(others),
                own_bytes_held(own, reserved, self.baseline_rss))

    def threads_alive(self) -> int:
        """Training threads still running (current sessions and stopped ones winding down)."""
        with self._lock:
            return sum(s.alive for s in list(self._started))


async def in_daemon_thread(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a daemon thread, awaited. Unlike ``asyncio.to_thread`` (the loop's
    executor, joined when the server shuts down), a doctor run of minutes never holds back
    Ctrl-C; its result is dropped if nobody waits for it any more."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if not future.done():
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def work() -> None:
        try:
            value, error = fn(*args), None
        except Exception as e:  # noqa: BLE001 - handed to the awaiting task
            value, error = None, e
        with contextlib.suppress(RuntimeError):  # the loop closed: the server has stopped
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=work, name="depthlab-playground-doctor", daemon=True).start()
    return await future


def check(query: dict[str, Any], available: int | None = None, elsewhere: str = ""
          ) -> tuple[dict[str, Any], dict[str, Any], int]:
    """``(setup, validated config, parameter count)`` of a query, or :class:`SetupError`
    (``elsewhere``: what a refusal for memory adds about the memory other tabs hold)."""
    setup = parse_setup(query)
    config = to_config(setup)
    _, _, classes = data_shape(setup)
    if setup["train.loss"] == "binary_cross_entropy" and classes != 2:
        # the runner refuses it when the data is loaded: /api/check said ok, the export
        # downloaded a config `depthlab run` refuses, and the session failed after "accepted"
        raise SetupError(f"train.loss = binary_cross_entropy needs 2 classes but data set "
                         f"{setup['data.name']!r} has {classes}; expected cross_entropy (or "
                         "a data set of 2 classes)", "train.loss")
    try:
        params = check_setup_memory(setup, available)
    except SetupError as e:
        raise SetupError(f"{e}{elsewhere}", e.key) from None
    return setup, config, params


def _query(request: Request) -> dict[str, str | list[str]]:
    """The request's settings (its ``name``, the preset's, left out): a key given more than
    once keeps all its values, a list that :func:`parse_setup` refuses when they differ (the
    last one was taken silently)."""
    out: dict[str, str | list[str]] = {}
    for k, v in request.query_params.multi_items():
        if k == "name":
            continue
        old = out.get(k)
        out[k] = v if old is None else [*old, v] if isinstance(old, list) else [old, v]
    return out


def create_app(*, memory_limit: int | None = None,
               hosts: Sequence[str] | None = None,
               max_sessions: int | None = None) -> Starlette:
    """The playground app. ``memory_limit`` (bytes) caps what one session may use (default:
    the memory the machine has free); ``hosts``: the only ``Host`` names it answers (default:
    any); ``max_sessions``: how many tabs may have a network at once (None: any number); a
    tab beyond it waits, told so, until another closes."""
    if max_sessions is not None and (isinstance(max_sessions, bool) or
                                     not isinstance(max_sessions, int) or max_sessions < 1):
        raise ValueError(f"max_sessions = {max_sessions!r} is not accepted; expected an integer "
                         ">= 1 (None: no limit)")
    registry = Registry()
    registry.max_sessions = max_sessions

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=REVALIDATE)

    async def schema(request: Request) -> Response:
        datasets = {}
        for name, spec in BUILTINS.items():
            datasets[name] = {"description": spec.description, "n_features": spec.n_features,
                              "n_classes": spec.n_classes}
        return JSONResponse({
            "fields": [f.to_json() for f in FIELDS],
            "presets": {k: {"title": v["title"], "why": v["why"]} for k, v in PRESETS.items()},
            "datasets": datasets,
        })

    async def check_route(request: Request) -> Response:
        try:
            setup, _, params = check(_query(request), memory_limit)
        except SetupError as e:
            return JSONResponse({"ok": False, "message": str(e), "key": e.key})
        n, d, k = data_shape(setup)
        return JSONResponse({"ok": True, "message": "", "key": None, "parameters": params,
                             "n_features": d})

    async def preset(request: Request) -> Response:
        try:
            # ?name=he&name=glorot: the last one was applied silently, where a setting given
            # twice is refused naming both (a bad request: the page asks for one preset)
            names = request.query_params.getlist("name")
            if len(set(names)) > 1:
                listed = ", ".join(repr(n) for n in dict.fromkeys(names))
                return JSONResponse({"ok": False, "message": f"name is given {len(set(names))} "
                                     f"different presets ({listed}); expected one of "
                                     f"{', '.join(PRESETS)}"}, status_code=400)
            setup = parse_setup(kept(_query(request)))
            out = apply_preset(setup, names[0] if names else "")
        except SetupError as e:
            # the page's own setup (a bad seed it keeps): an answer like /api/check's, 200 (was
            # 400, which the browser logged as a console error beside the page's message)
            return JSONResponse({"ok": False, "message": str(e), "key": e.key})
        except ValueError as e:  # no such preset: a bad request
            return JSONResponse({"ok": False, "message": str(e)}, status_code=400)
        return JSONResponse({"ok": True, "query": to_query(out)})

    async def export(request: Request) -> Response:
        try:
            setup, _, _ = check(_query(request), memory_limit)
        except SetupError as e:
            return PlainTextResponse(f"depthlab playground: {e}\n", status_code=400)
        name = f"playground-{setup['data.name']}-{setup['model.depth']}x" \
               f"{setup['model.width']}-{setup['model.activation']}.toml"
        return PlainTextResponse(to_toml(setup), media_type="application/toml",
                                 headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def sessions(request: Request) -> Response:
        return JSONResponse({"sessions": len(registry), "threads": registry.threads_alive()})

    async def ws_endpoint(ws: WebSocket) -> None:
        origin = ws.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != ws.headers.get("host"):
            await ws.close(code=1008)  # another web site's page: not one of ours
            return
        await ws.accept()
        await _Tab(ws, registry, memory_limit).serve()

    routes = [
        Route("/", index),
        Route("/api/schema", schema),
        Route("/api/check", check_route),
        Route("/api/preset", preset),
        Route("/api/export", export),
        Route("/api/sessions", sessions),
        WebSocketRoute("/ws", ws_endpoint),
        Mount("/static", _RevalidatedFiles(directory=STATIC), name="static"),
    ]
    guard = [] if hosts is None else [Middleware(HostGuard, hosts=hosts)]
    app = Starlette(routes=routes, middleware=guard,
                    exception_handlers={404: not_found, 405: not_allowed})
    app.state.registry = registry
    return app


API_ROUTES = ("/api/schema", "/api/check", "/api/preset", "/api/export", "/api/sessions")
"""The JSON API's paths (named by a 404's message)."""


def _refusal(request: Request, status: int, message: str,
             headers: dict[str, str] | None = None) -> Response:
    """A 4xx answer of one line: ``{"ok": false, "message"}`` under ``/api/`` (the API answers
    JSON), ``depthlab playground: MESSAGE`` as text elsewhere."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"ok": False, "message": message}, status_code=status,
                            headers=headers)
    return PlainTextResponse(f"depthlab playground: {message}\n", status_code=status,
                             headers=headers)


def not_found_message(path: str) -> str:
    """What a 404 says about ``path``: the paths there are (it said "Not Found" alone)."""
    if path.rstrip("/") == "/ws":
        return (f"{path!r} is the playground's WebSocket, opened by its page (a plain HTTP "
                "request gets nothing there); open / in a browser")
    return (f"no page at {path!r}; the playground is at / (its JSON API: "
            f"{', '.join(API_ROUTES)})")


async def not_found(request: Request, exc: Exception) -> Response:
    """404 (an unknown path, a missing static file) in one line naming the paths there are."""
    return _refusal(request, 404, not_found_message(request.url.path))


async def not_allowed(request: Request, exc: Exception) -> Response:
    """405 in one line naming the method refused and the ones accepted (it said "Method Not
    Allowed" alone); the ``Allow`` header is kept."""
    allow = dict(getattr(exc, "headers", None) or {}).get("Allow", "GET, HEAD")
    methods = sorted((m.strip() for m in allow.split(",") if m.strip()),
                     key=lambda m: (m != "GET", m))  # GET first: the one a person means
    return _refusal(request, 405, f"{request.method} is not accepted at "
                                  f"{request.url.path!r}; expected {' or '.join(methods)}",
                    headers={"Allow": allow})


EXPORT_ONLY = ("train.epochs",)
"""Settings that only go into the exported TOML: a session does not use them."""


BATCHNORM_ONLY = ("model.bn_momentum", "model.bn_inference")
"""Settings a network without batch norm does not use."""


def _inert(setup: dict[str, Any]) -> set[str]:
    """The settings of ``setup`` that change nothing its session trains or shows:
    :data:`EXPORT_ONLY`, a data option of another data set or the momentum of an optimizer
    without one (``setup.active``), and batch norm's settings on a network without it."""
    out = {f.key for f in FIELDS if f.key in setup and not active(setup, f)}
    out.update(EXPORT_ONLY)
    if not setup.get("model.batchnorm"):
        out.update(BATCHNORM_ONLY)
    return out


def _same_network(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two setups train the same session: they differ at most in settings that are
    inert in both (:func:`_inert`; the settings deciding which are inert, the data set, the
    optimizer and batch norm, are compared). A teacher who looked through *more settings*
    and changed the batch-norm momentum of a network without batch norm lost the 8,000 steps
    trained so far to a rebuilt identical network."""
    skip = _inert(a) & _inert(b)
    return ({k: v for k, v in a.items() if k not in skip} ==
            {k: v for k, v in b.items() if k not in skip})


def _is_cmd(text: Any, cmd: str) -> bool:
    """Whether a received text frame is the command ``cmd`` (``setup``, ``reset``)."""
    if not isinstance(text, str) or f'"{cmd}"' not in text:
        return False
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):  # JSON nested 100,000 deep: RecursionError, which
        return False  # ended the tab's loop (the connection dropped) when the frame said "setup"
    return isinstance(msg, dict) and msg.get("cmd") == cmd


def _is_setup(text: Any) -> bool:
    """Whether a received text frame is a ``setup`` command."""
    return _is_cmd(text, "setup")


class HostGuard:
    """ASGI middleware: only requests whose ``Host`` header names one of ``hosts`` (any port)
    reach the app; others get 400 (HTTP) or a refused WebSocket (403, like another origin's),
    without an error in the server's log."""

    def __init__(self, app: Any, hosts: Sequence[str]) -> None:
        self.app = app
        self.hosts = {h.lower() for h in hosts}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.hosts:
                if scope["type"] == "websocket":
                    await WebSocket(scope, receive, send).close(code=1008)
                else:
                    await PlainTextResponse(
                        f"depthlab playground: this server answers requests for "
                        f"{', '.join(sorted(self.hosts))}, not {host!r} (reached through a "
                        "proxy under another name? start it with --host 0.0.0.0)\n",
                        status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Tab:
    """One connected tab: its WebSocket, its session and the queue between them."""

    def __init__(self, ws: WebSocket, registry: Registry, memory_limit: int | None) -> None:
        self.ws = ws
        self.registry = registry
        self.memory_limit = memory_limit
        self.loop = asyncio.get_running_loop()
        self.outbox: deque[dict[str, Any]] = deque()
        self.wake = asyncio.Event()
        self.session: Session | None = None
        self.winding: Session | None = None  # stopped, still alive, no session started since
        self.setup: dict[str, Any] | None = None
        # the last setup refused since a session last started (message, key): play, step or
        # doctor pressed with no network (a refused link) repeat it, naming the control
        self.refused: tuple[str, str | None] | None = None
        self.refused_query: dict[str, Any] | None = None  # the query of that setup
        self.doctor_busy = False
        self.doctor_task: asyncio.Task | None = None
        # the last play/pause/step handled (the page's number for it): every ``state`` sent
        # names it, so the page can tell a late answer to a press it has pressed over since
        # (play, then pause before play's answer: the label read paused, running, paused)
        self.press = 0
        self.key = id(self)
        self.inbox: deque[dict[str, Any] | None] = deque()  # frames received; None: closed
        self.arrived = asyncio.Event()
        self.closed = False

    # thread-safe: called from training and doctor threads
    def emit_threadsafe(self, message: dict[str, Any]) -> None:
        self.loop.call_soon_threadsafe(self._enqueue, message)

    def _enqueue(self, message: dict[str, Any]) -> None:
        if len(self.outbox) >= MAX_PENDING and message.get("type") == "update":
            for i, old in enumerate(self.outbox):
                if old.get("type") == "update":
                    del self.outbox[i]
                    break
        self.outbox.append(message)
        self.wake.set()

    async def _sender(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.outbox:
                await self.ws.send_text(json.dumps(self.outbox.popleft(), allow_nan=False))

    async def _reader(self) -> None:
        """Receive frames into :attr:`inbox` as they arrive, so the handler sees a closed tab
        (and setups that a later one replaces) while it waits for a session to stop."""
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                self.inbox.append(message)
                self.arrived.set()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self.closed = True
            self.inbox.append(None)
            self.arrived.set()

    async def serve(self) -> None:
        sender = asyncio.create_task(self._sender())
        reader = asyncio.create_task(self._reader())
        try:
            while True:
                while not self.inbox:
                    await self.arrived.wait()
                    self.arrived.clear()
                message = self.inbox.popleft()
                if message is None or self.closed:  # the tab closed: the rest is for nobody
                    break
                text = message.get("text")
                if text is None:  # a binary frame (receive_text raised KeyError: tab gone)
                    self._error(f"a binary message of {len(message.get('bytes') or b'')} "
                                "bytes is not a command; expected JSON text such as "
                                '{"cmd": "play"}')
                    continue
                if _is_setup(text) and self.inbox and _is_setup((self.inbox[0] or {}).get("text")):
                    continue  # replaced by the setup right after it (a flood of setups)
                if _is_cmd(text, "reset") and self._reset_next():
                    continue  # reset pressed again right after: one fresh network, not two
                try:
                    await self._handle(text)
                except Exception as e:  # noqa: BLE001 - one bad message never ends the tab
                    self._error(f"{type(e).__name__}: {e}")
        finally:
            for task in (sender, reader, self.doctor_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            self.registry.put(self.key, None)
            self.session = None

    def _reset_next(self) -> bool:
        """Whether the next frame received is a ``reset``: eight quick presses of reset on a
        1000-layer network built eight networks one after the other (ready after 15 s, where
        one build takes 2 s), since a network being built cannot be stopped."""
        return bool(self.inbox) and _is_cmd((self.inbox[0] or {}).get("text"), "reset")

    def _later_setup(self) -> bool:
        """Whether a setup received after this one (before any other command) starts a
        session. One that is refused is answered at once: it waited for the previous network
        to be built (seconds) before the page said a word, under 'this setup starts once it is
        built'. It stays in the inbox, so it is answered again after the waiting setup's
        'accepted' (which clears the page's message)."""
        for frame in list(self.inbox):
            text = (frame or {}).get("text")
            if not _is_setup(text):
                return False
            msg = json.loads(text)
            query, play = msg.get("query"), msg.get("play", False)
            if not isinstance(query, dict) or not isinstance(play, bool):
                return False  # the handler says what is wrong with it
            try:
                self._check(query)
            except SetupError as e:
                if not frame.get("told"):
                    frame["told"] = True
                    self._error(str(e), e.key)
                continue
            return True
        return False

    async def _retry_refused(self, autoplay: bool) -> bool:
        """Start the refused setup when it is accepted now (True), else keep its current
        reason in :attr:`refused` (False). A setup refused for memory that another tab held
        (a page opened while another tab trained a big network) stayed refused after that tab
        closed: play and reset repeated "set aside for another tab's network: close it"."""
        query = self.refused_query
        if query is None or self.winding is not None:
            return False
        try:
            self._check(query)
        except SetupError as e:
            self.refused = (str(e), e.key)  # today's figures
            return False
        await self._start(query, autoplay=autoplay)
        return True

    def _check(self, query: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
        """:func:`check` in the memory this tab may take: the machine's free memory (or
        ``memory_limit``) less what the other tabs' networks have not taken yet, plus what
        its own network gives back before the next is built (:meth:`Registry.unclaimed`)."""
        pending, tabs, own = self.registry.unclaimed(self.key)
        if not pending and not own:
            return check(query, self.memory_limit)
        free = max(available_memory() + own - pending, 0)
        available = free if self.memory_limit is None else min(self.memory_limit, free)
        if not pending:
            return check(query, available)
        whose = "another tab's network" if tabs == 1 else f"the networks of {tabs} other tabs"
        return check(query, available, f" ({format_bytes(pending)} of the free memory is set "
                                       f"aside for {whose}: close "
                                       f"{'it' if tabs == 1 else 'one'}, or choose a smaller "
                                       "network)")

    def _error(self, message: str, key: str | None = None) -> None:
        self._enqueue({"type": "error", "message": message, "key": key})

    async def _handle(self, text: str) -> None:
        try:
            msg = json.loads(text)
            cmd = msg["cmd"]
        except (ValueError, KeyError, TypeError, RecursionError):  # (nested too deeply)
            self._error(f"not a command: {text[:80]!r}")
            return
        if cmd == "setup":
            query, play = msg.get("query"), msg.get("play", False)
            if not isinstance(query, dict):
                self._error("setup needs a query object")
                return
            if not isinstance(play, bool):  # "false" is a string, and bool("false") is True
                self._error(f"setup's play must be true or false, got {play!r}")
                return
            await self._start(query, autoplay=play)
        elif cmd == "reset":
            if self.setup is not None:
                await self._start(to_query(self.setup), autoplay=False, fresh=True)
            elif self.refused is not None:  # no setup accepted yet: reset answered nothing
                if await self._retry_refused(autoplay=False):
                    return
                message, key = self.refused
                self._error(f"nothing to reset: the setup was refused: {message}", key)
        elif cmd in ("play", "pause", "step"):
            press = msg.get("press")
            self.press = press if type(press) is int else self.press + 1
            if (self.session is None and self.refused is not None and cmd != "pause"
                    and await self._retry_refused(autoplay=cmd == "play")):
                return
            if self.session is None and self.refused is not None:
                # a refused link: "fix the setup or press reset" (with no key) took the red mark
                # off the refused control and replaced the reason, and reset restarts nothing
                # when no setup was ever accepted
                message, key = self.refused
                self._error(f"nothing to train: the setup was refused: {message}", key)
                self._enqueue({"type": "state", "state": "invalid", "press": self.press})
                return
            if self.session is None or self.session.state in ("diverged", "failed"):
                if cmd != "pause" or self.session is None:
                    # (pause on a diverged run was told "nothing to train" in a red alert: a
                    # stopped run is already paused, so it is only answered with its state)
                    # (a failed session's reason stays said: "fix the setup" alone replaced
                    # "Fashion-MNIST files not found ..." and left nothing to fix by)
                    failure = getattr(self.session, "failure", None)
                    why = f"this setup failed: {failure.rstrip('.')}. Fix" if failure else "fix"
                    self._error(f"nothing to train: {why} the setup or press reset")
                # the page shows "running" as soon as play is pressed: correct it
                self._enqueue({"type": "state", "state": "invalid" if self.session is None
                               else self.session.state, "press": self.press})
                return
            before = self.session.state
            getattr(self.session, cmd)()
            if self.session.state == before and before in ("paused", "running"):
                # a press that changed nothing (play while running) is answered all the same:
                # the page's last press always gets an answer that names it (the session's
                # "paused" once built can name the press before, which the page ignores)
                # (queued as the session's messages are, so it follows those sent before it)
                self.emit_threadsafe({"type": "state", "state": before, "press": self.press})
        elif cmd == "doctor":
            if self.doctor_task is not None and not self.doctor_task.done():
                # the running doctor's task is kept: closing the tab cancels it (replaced
                # here, its doctor trained on for minutes after the tab closed)
                self._error("the doctor is already running")
                return
            self.doctor_task = asyncio.create_task(self._doctor())
        elif cmd == "cancel_doctor":
            # a doctor of a deep network trains for minutes, and the button stayed disabled
            # ("already running") even after the setup it examines was changed
            task = self.doctor_task
            if task is None or task.done():
                return  # it has just ended: its answer is on its way
            task.cancel()  # its thread's stop event is set: it ends within a training step
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._enqueue({"type": "doctor_cancelled"})
        elif cmd == "ping":
            self._enqueue({"type": "pong"})
        else:
            self._error(f"unknown command {cmd!r}; accepted: setup, play, pause, step, reset, "
                        "doctor, cancel_doctor")

    async def _start(self, query: dict[str, Any], autoplay: bool, fresh: bool = False) -> None:
        """Start a session for ``query``; unless ``fresh`` (reset), a setup that changes only
        :data:`EXPORT_ONLY` settings keeps the running one."""
        try:
            setup, config, params = self._check(query)
        except SetupError as e:
            self.refused = (str(e), e.key)
            self.refused_query = query
            self._error(str(e), e.key)
            return
        old = self.session
        if old is None and self.winding is not None:
            # a session stopped by a reset that a later reset replaced while it was still
            # being built: this one waits for it as well (one network per tab at a time)
            old, self.winding = self.winding, None
        elif (not fresh and old is not None and old.alive and old.state in ("paused", "running")
                and self.setup is not None and setup != self.setup
                and _same_network(setup, self.setup)):
            # (the same setup again, e.g. a preset chosen twice, starts afresh as before)
            # only a setting the session does not use changed (the export's epochs: the
            # playground trains until paused; see _inert): the network trained so far stays
            # (it was rebuilt from step 0)
            self.setup = setup
            self._enqueue({"type": "accepted", "query": to_query(setup), "parameters": params,
                           "kept": True})
            if autoplay:
                old.play()
            return
        if old is not None and old.alive:
            # One session thread per tab at a time: the memory check counts one network, and
            # a stopped session still loading builds its network before it sees the stop (40
            # setups sent at once kept 40 threads building 40 networks for 8+ s).
            self.session = None
            old.stop()
            start = self.loop.time()
            deadline = start + OLD_SESSION_WAIT
            told = False
            while old.alive and not self.closed and self.loop.time() < deadline:
                if fresh and self._reset_next():
                    self.winding = old  # a later reset replaces this one; it waits for old
                    return
                if not fresh and self._later_setup():
                    # a later setup that will start replaces this one (it waits for old): a
                    # second change while a big network was built built this setup's network
                    # for nothing, once the first was built
                    self.winding = old
                    return
                if not told and self.loop.time() - start > WAIT_NOTICE:
                    # a network still being built ends only once it is built (14 s for 1000
                    # layers of 512): the page kept saying "building the network" of the
                    # old setup, as if the change had been ignored
                    told = True
                    # (its query: a refusal of a later setup said before this notice stays
                    # on the page while the refused value stays in its control)
                    self._enqueue({"type": "waiting", "query": to_query(setup), "message": (
                        "building the previous network first (it cannot be stopped halfway); "
                        "this setup starts once it is built" if old.state == "loading" else
                        "waiting for the previous session to stop; this setup starts then")})
                await asyncio.sleep(0.02)
            if self.closed:
                return
        if self.registry.full_for(self.key):
            # --host 0.0.0.0 for a class: every student's tab trained a network on the
            # teacher's CPU (thirty networks on four cores), and nothing capped them
            n = self.registry.max_sessions
            self._enqueue({"type": "waiting", "full": True, "query": to_query(setup),
                           "message": (
                f"the playground is full: {n} {'tab has' if n == 1 else 'tabs have'} a network "
                "on this server, as many as it allows (its --max-sessions); this setup starts "
                f"as soon as {'it closes' if n == 1 else 'one of them closes'}")})
            while self.registry.full_for(self.key):
                if self.closed or self._later_setup():
                    return  # closed, or a later setup waits in this one's place
                await asyncio.sleep(FULL_POLL)
        # no await from here to registry.put: two waiting tabs cannot take one place
        self.setup = setup
        # messages of the previous session are dropped from here on
        previous = old.prep.data if old is not None and old.prep is not None else None
        session = Session(config, self._emit_for(None), data_cache=self.registry.data,
                          previous=previous)
        del previous, old  # the new session holds it only until it has prepared
        session.emit = self._emit_for(session)
        self.session = session
        self.refused = self.refused_query = None
        self.registry.put(self.key, session, setup_bytes(setup)[0])
        self._enqueue({"type": "accepted", "query": to_query(setup), "parameters": params})
        session.start()
        if autoplay:
            session.play()

    def _emit_for(self, session: Session | None):
        def emit(message: dict[str, Any]) -> None:
            if session is not None and self.session is session:
                if message.get("type") == "state":
                    # read as the state is decided (the training thread's, too), not when the
                    # loop sends it: a press handled in between makes it an earlier press's
                    message = {**message, "press": self.press}
                self.emit_threadsafe(message)
        return emit

    async def _doctor(self) -> None:
        # pressed right after a change (the press blurs the control: its setup is sent first),
        # the new session is still loading its data: the doctor waits for it, where it answered
        # "the doctor needs a network: wait until the setup has loaded" and had to be pressed
        # again once the data set (seconds for mnist1d, fashion-mnist) was in
        while (self.session is not None and self.session.prep is None and self.session.alive
               and not self.closed):
            await asyncio.sleep(0.05)
        session = self.session
        if session is None and self.refused is not None:
            # a refused link has no network to wait for ("wait until the setup has loaded"
            # waited for nothing, and the red mark on the refused control was taken off)
            message, key = self.refused
            self._enqueue({"type": "error", "key": key, "doctor": True,
                           "message": f"the doctor needs a network: the setup was refused: "
                                      f"{message}"})
            return
        failure = getattr(session, "failure", None) if session is not None else None
        if failure and session is not None and session.prep is None:
            # a setup that failed to load (no Fashion-MNIST files) has no network to wait for:
            # "wait until the setup has loaded" replaced its reason with a wait for nothing
            self._enqueue({"type": "error", "key": None, "doctor": True,
                           "message": "the doctor needs a network: this setup failed: "
                                      f"{failure.rstrip('.')}. Fix the setup or press reset"})
            return
        if session is None or session.prep is None or self.setup is None:
            # ``doctor``: the page enables its button again (disabled when pressed)
            self._enqueue({"type": "error", "key": None, "doctor": True,
                           "message": "the doctor needs a network: wait until the setup has "
                                      "loaded"})
            return
        if self.doctor_busy:
            self._error("the doctor is already running")
            return
        try:
            # its copy comes on top of the session's network: a setup that took 60% of the
            # memory was accepted, and the doctor's copy was allocated without a check
            check_doctor_memory(self.setup, self.memory_limit)
        except SetupError as e:
            self._enqueue({"type": "error", "key": None, "doctor": True, "message": str(e)})
            return
        self.doctor_busy = True
        self._enqueue({"type": "doctor_started",
                       "steps": doctor_steps(int(self.setup["model.depth"]))})
        setup = dict(self.setup)
        stop = threading.Event()  # set when this task ends, e.g. cancelled as the tab closed
        try:
            result = await in_daemon_thread(run_doctor, session.prep, setup, None, stop)
            # the setup it examined: the page marks the findings once the setup changes
            self._enqueue({"type": "doctor", **result, "query": to_query(setup)})
        except Exception as e:  # noqa: BLE001 - reported to the page, the server keeps running
            # ``doctor``: the page ends its "the doctor is training" state (button enabled)
            self._enqueue({"type": "error", "key": None, "doctor": True,
                           "message": f"the doctor failed: {type(e).__name__}: {e}"})
        finally:
            stop.set()  # a doctor still training (the tab closed) stops at its next step
            self.doctor_busy = False
