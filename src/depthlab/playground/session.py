"""One training session per browser tab: a thread that trains with the NumPy engine.

The thread runs ``depthlab.experiments.runner.prepare`` (the data and the network exactly as
``depthlab run`` builds them from the same config) and then ``Trainer.fit`` with a callback
(:class:`_Gate`) that, between optimizer steps,

* measures the network for the panels when the last measurement started longer ago than the
  update interval (:data:`UPDATE_INTERVAL`, stretched to three times the cost of one
  measurement for very deep networks so that training keeps two thirds of the time), after
  every single step and when it pauses (so the paused page shows the network that the next
  step continues from); the
  decision boundary less often (:data:`BOUNDARY_INTERVAL`);
* waits while the session is paused (``step()`` lets exactly one optimizer step through);
* raises :class:`Stopped` once :meth:`Session.stop` was called, so the thread ends within one
  step.

Messages for the page go to ``emit(message)`` (called from the training thread; the server
forwards them to the tab's WebSocket). A non-finite loss ends training with a ``diverged``
message saying the step and the first layer whose output was not finite.
"""

from __future__ import annotations

import inspect
import math
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from ..diagnosis.findings import jsonable
from ..experiments.runner import ExperimentError, data_key, loaded_key, make_trainer, prepare
from ..training.trainer import Callback, Trainer
from .measure import Monitor
from .prediction import theory_profile

UPDATE_INTERVAL = 0.08
"""Seconds between measurements while training runs (about 12 updates per second)."""

BOUNDARY_INTERVAL = 0.3
"""Seconds between decision-boundary evaluations (an inference pass over the grid), stretched
to four times the cost of one evaluation."""

MAX_STEPS = 10**12
"""The trainer's step budget: the playground trains until paused or stopped."""

HISTORY_KEEP = 1000
"""Training losses and epoch rows the trainer's ``History`` keeps (the newest; trimmed once it
holds twice as many). The playground trains until paused and nothing it shows reads older
ones; a History of every step grew by about 100 kB/s on the default setup (2,500 steps/s: a
float per step and a dict per 43-step epoch), 360 MB an hour for a page left training."""


class DataCache:
    """The data set of the last session prepared, kept (one per server) for the next one: a
    control change (lr 0.05 -> 0.01) started a session that loaded its data set afresh,
    5-9 s on fashion-mnist and 4-7 s on mnist1d. ``prepare(config, data=...)`` uses it only
    when it is the one that config loads (every ``[data]`` field, the dtype and a file's
    content fingerprint), so a changed seed, ``n`` or data set loads afresh and replaces it.
    One entry: the memory it holds beyond the live sessions is one data set at most, and
    :meth:`take` lets go of it before another data set is loaded (not both in memory)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: Any = None

    def get(self) -> Any:
        with self._lock:
            return self._data

    def take(self, config: dict[str, Any]) -> Any:
        """The kept data set when it is the one the validated ``config`` loads; else None,
        and the kept one is dropped (a switch from fashion-mnist to mnist1d held both)."""
        try:
            key = data_key(config)
        except (KeyError, TypeError):
            key = None
        with self._lock:
            data = self._data
            if data is not None and (key is None or loaded_key(data) != key):
                data = self._data = None
            return data

    def put(self, data: Any) -> None:
        if loaded_key(data) is None:
            return  # not a data set load_data returned: prepare would not reuse it
        with self._lock:
            self._data = data


def _takes_data(fn: Any) -> bool:
    """Whether ``fn`` (the module's ``prepare``, which a caller may have wrapped) accepts
    ``data=``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "data" or p.kind is p.VAR_KEYWORD for p in params)


class Stopped(Exception):
    """Raised inside the training loop when the session is stopped."""


class _Gate(Callback):
    ends_run = True  # the user stops the session; after_update trims the history

    def __init__(self, session: Session) -> None:
        self.s = session

    def on_train_begin(self, trainer: Trainer) -> None:
        self.s._measure(0, force=True)
        self.s._wait()

    def before_update(self, trainer: Trainer, step: int) -> None:
        self.s._arm(step)

    def after_update(self, trainer: Trainer, step: int, loss: float) -> None:
        s = self.s
        h = trainer.history
        for rows in (h.step_loss, h.epochs):
            if len(rows) > 2 * HISTORY_KEEP:
                del rows[:-HISTORY_KEEP]
        s._losses.append((step, float(loss)))
        s._epoch = trainer.epoch
        single = s._single
        now = time.perf_counter()
        if s._stepped is not None:
            s._step_seconds = now - s._stepped
        s._measure(step, force=single)
        s._wait(step)
        s._stepped = time.perf_counter()


class Session:
    """Train the validated ``config`` in a thread; ``emit`` receives JSON-able messages.

    The session starts paused at step 0 (after the initial measurement): ``play()``,
    ``pause()``, ``step()``, ``stop()``; ``state`` is one of loading, paused, running,
    diverged, failed, stopped.
    """

    def __init__(self, config: dict[str, Any], emit: Callable[[dict[str, Any]], None],
                 data_cache: DataCache | None = None, previous: Any = None) -> None:
        self.config = config
        self.data_cache = data_cache
        # the data set of the tab's previous session: used when this config loads the same one
        # (the shared cache holds the last data set of any tab: with two tabs on fashion-mnist
        # and spirals, every change in one reloaded its data set, 5-9 s for fashion-mnist)
        self._previous = previous
        self.emit = emit
        self.state = "loading"
        self.failure: str | None = None  # why the session failed (state "failed")
        self.prep: Any = None
        self._cond = threading.Condition()
        self._running = False
        self._steps_allowed = 0
        self._single = False
        self._stop = False
        self._losses: list[tuple[int, float]] = []  # (step, train loss) since the last update
        self._epoch = 0
        self._last_measure = 0.0
        self._stepped: float | None = None  # when the last step was let through
        self._step_seconds = math.inf  # how long the last step took
        self._measured_step: int | None = None
        self._measure_cost = 0.0
        self._last_boundary = 0.0
        self._boundary_cost = 0.0
        self._t0 = time.perf_counter()
        self.monitor: Monitor | None = None
        self.trainer: Trainer | None = None
        self.thread = threading.Thread(target=self._main, name="depthlab-playground-session",
                                       daemon=True)

    # -- control (any thread) ------------------------------------------------------------
    def start(self) -> Session:
        self.thread.start()
        return self

    def play(self) -> None:
        with self._cond:
            self._running, self._single = True, False
            self._cond.notify_all()
        self._set_state("running")

    def pause(self) -> None:
        with self._cond:
            self._running, self._steps_allowed = False, 0
            self._cond.notify_all()
        self._set_state("paused")

    def step(self) -> None:
        """Let one optimizer step through (and pause after it)."""
        with self._cond:
            self._running = False
            self._steps_allowed += 1
            self._single = True
            self._cond.notify_all()
        self._set_state("paused")

    def stop(self, timeout: float | None = None) -> None:
        """Stop the training thread (it ends after the current step)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if timeout is not None and self.thread.is_alive():
            self.thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def _set_state(self, state: str) -> None:
        if self.state in ("diverged", "failed", "stopped") or self.state == state:
            return
        if self.state == "loading" and state != "paused":
            return  # the state is announced when loading has finished
        self.state = state
        self.emit({"type": "state", "state": state})

    # -- the training thread -------------------------------------------------------------
    def _wait(self, step: int | None = None) -> None:
        """Block while paused. Before blocking after optimizer step ``step``, measure it if
        the last measurement is older (training runs thousands of steps between two updates,
        so the paused page would otherwise show a network hundreds of steps behind the one
        that the next ``step`` continues from)."""
        with self._cond:
            blocks = not self._running and self._steps_allowed == 0 and not self._stop
        if blocks and step is not None and step != self._measured_step:
            assert self.monitor is not None
            if self.monitor.since != step - 1 and self._step_seconds < UPDATE_INTERVAL:
                # paused while this step was updating the weights (after the check before it):
                # one more step (a quick one: a deep network's would hold the pause back by
                # seconds), which is armed, so that the paused page shows a one-step ratio
                self._single = True
                return
            self._measure(step, force=True)
        with self._cond:
            if self._stop:
                raise Stopped
            if self.state == "loading":
                self.state = "paused"
                self.emit({"type": "state", "state": "running" if self._running else "paused"})
                if self._running:
                    self.state = "running"
            while not self._running and self._steps_allowed == 0 and not self._stop:
                self._cond.wait(0.5)
            if self._stop:
                raise Stopped
            if not self._running:
                self._steps_allowed -= 1
                self._single = True
            else:
                self._single = False

    def _due(self, now: float) -> bool:
        return now - self._last_measure >= max(UPDATE_INTERVAL, 3.0 * self._measure_cost)

    def _arm(self, step: int) -> None:
        """Before optimizer step ``step``: when it is to be measured (the session pauses or
        steps singly, or a measurement is due), keep the weights it starts from, so that the
        update ratio measured after it is that step's."""
        monitor = self.monitor
        if monitor is None or monitor.since == step - 1:
            return
        with self._cond:
            measured = not self._running
        if measured or self._due(time.perf_counter()):
            monitor.arm(step - 1)

    def _measure(self, step: int, *, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and not self._due(now):
            return
        assert self.monitor is not None
        if not force and self.monitor.since != step - 1:
            return  # due during this step: measured after the next, which is armed for it
        self._last_measure = now
        snap = self.monitor.measure(step)
        # the first measurement of a process also loads the compiled kernels (~0.3 s, once):
        # its cost would hold back the first updates after "play" for a second
        first, self._measured_step = self._measured_step is None, step
        done = time.perf_counter()
        cost = done - now
        self._measure_cost = 0.0 if first else cost
        if force or done - self._last_boundary >= max(BOUNDARY_INTERVAL,
                                                       4.0 * self._boundary_cost):
            b = self.monitor.boundary()
            if b is not None:
                snap["boundary"] = b
            self._last_boundary = time.perf_counter()
            self._boundary_cost = 0.0 if first else self._last_boundary - done
            done = self._last_boundary
        losses, self._losses = self._losses, []
        snap.update(type="update", epoch=self._epoch, seconds=round(done - self._t0, 3),
                    train_loss=float(np.mean([v for _, v in losses])) if losses else None,
                    measure_ms=round(1000 * cost, 1))
        self.emit(jsonable(snap))

    def _main(self) -> None:
        try:
            self._train()
        except Stopped:
            self.state = "stopped"
        except ExperimentError as e:
            self._fail(str(e))
        except Exception as e:  # noqa: BLE001 - reported to the page, the server keeps running
            first = "".join(traceback.format_exception_only(type(e), e)).strip()
            self._fail(f"training failed: {first}")

    def _fail(self, message: str) -> None:
        """The session ends as ``failed``: the reason (kept in :attr:`failure` for later presses
        of play) and then the state. The page was told the reason only: a data set that could
        not load left it on "loading" and "loading the data and building the network…"
        for good, and a running session that failed still read "running"."""
        self.state = "failed"
        self.failure = message
        self.emit({"type": "error", "key": None, "message": message})
        self.emit({"type": "state", "state": "failed"})

    def _reuse(self) -> Any:
        """The data set to prepare with: the previous session's when it is the one this config
        loads, else the shared cache's (which lets go of another one before it is read)."""
        previous, self._previous = self._previous, None
        if previous is not None:
            try:
                same = loaded_key(previous) == data_key(self.config)
            except (KeyError, TypeError):
                same = False
            if same and loaded_key(previous) is not None:
                return previous
        del previous  # not held while another data set is loaded
        return self.data_cache.take(self.config) if self.data_cache is not None else None

    def _train(self) -> None:
        self.emit({"type": "state", "state": "loading"})
        cache = self.data_cache
        data = self._reuse()
        if data is not None and _takes_data(prepare):
            prep = prepare(self.config, data=data)
        else:
            prep = prepare(self.config)
        if cache is not None:
            cache.put(prep.data)
        self.prep = prep
        if self._stop:
            raise Stopped
        cfg, net, ds = prep.config, prep.net, prep.data
        trainer = make_trainer(prep, callbacks=[_Gate(self)], epochs=None, max_steps=MAX_STEPS,
                               eval_every=None)
        self.trainer = trainer
        px, py = (ds.x_val, prep.y_val) if prep.y_val is not None else (ds.x_train,
                                                                        prep.y_train)
        self.monitor = Monitor(net, px, py, trainer.loss, ds.x_train, prep.y_train)
        info = {
            "type": "ready", "config": cfg, "n_parameters": net.num_parameters(),
            "n_layers": len(self.monitor.points), "n_features": ds.n_features,
            "n_classes": ds.n_classes, "n_train": int(ds.x_train.shape[0]),
            # a regression loss (mse, huber) has no accuracy, unless its targets are one-hot
            # class rows: the page says so in its legend
            "has_accuracy": self.monitor.has_accuracy,
            "hist_layers": self.monitor.hist_layers,
            # "bounded", "relu", "bounded_relu" or "other": the fractions that apply
            "activation_family": self.monitor.family,
            "theory": theory_profile(cfg, x=self.monitor.x),
            "points": self.monitor.sample,
            # the loss panel's "held-out" numbers are the probe batch's: the first 300 of the
            # 500 held-out rows of clusters or mnist1d (`depthlab run` reports all of them)
            "probe_rows": int(len(self.monitor.x)), "probe_of": int(px.shape[0]),
            "probe_held_out": prep.y_val is not None,
        }
        self.emit(jsonable(info))
        hist = trainer.fit(ds.x_train, prep.y_train,
                           ds.x_val if prep.y_val is not None else None, prep.y_val)
        if hist.divergence is not None:
            d = hist.divergence
            self.state = "diverged"
            self.emit(jsonable({"type": "diverged", "step": d.step, "epoch": d.epoch,
                                "layer": d.layer, "loss": d.loss, "message": d.message,
                                # the train losses after the last measurement (0.94 -> 440 ->
                                # 2.6e14 before the NaN of lr 10): the page draws the explosion
                                "losses": [[k, v] for k, v in self._losses if math.isfinite(v)],
                                "nonfinite_parameters": d.nonfinite_parameters[:10]}))
