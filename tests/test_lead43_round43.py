"""Round 43, lead: integration fixes between helpers' work."""

from __future__ import annotations

import pytest

import depthlab as dl
from depthlab.layers import Activation, BatchNorm, Dense


@pytest.mark.parametrize("kw", [{"affine": False}, {"track_running_stats": False}])
def test_save_refuses_a_batchnorm_option_dl_mlp_cannot_rebuild(kw, tmp_path) -> None:
    """A BatchNorm without gamma/beta or without running statistics is not what dl.mlp builds:
    saving it as an ordinary BatchNorm recipe would load another network (or fail to load)."""
    net = dl.Network([Dense(4, 6, bias=False, rng=0), BatchNorm(6, **kw), Activation("relu"),
                      Dense(6, 3, rng=1)])
    with pytest.raises(TypeError, match=r"layer 1 \(BatchNorm: .*differs from what dl.mlp"):
        dl.save(net, tmp_path / "m")
    assert not list(tmp_path.iterdir())


def test_save_still_takes_a_default_batchnorm_network(tmp_path) -> None:
    net = dl.mlp([4, 6, 3], activation="relu", batchnorm=True, seed=0)
    dl.save(net, tmp_path / "m")
    back = dl.load(tmp_path / "m")
    import numpy as np
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    assert np.array_equal(net.predict(x), back.predict(x))


def _spirals_tanh_he(seed: int):
    from depthlab.experiments.runner import prepare
    from depthlab.losses import get_loss
    from depthlab.playground.measure import Monitor
    from depthlab.playground.setup import parse_setup, to_config

    setup = parse_setup({"model.depth": "10", "model.width": "256", "model.activation": "tanh",
                         "model.init": "he_normal", "train.seed": str(seed)})
    prep = prepare(to_config(setup))
    ds = prep.data
    mon = Monitor(prep.net, ds.x_val, prep.y_val, get_loss("cross_entropy"), ds.x_train,
                  prep.y_train)
    return prep, mon


def test_playground_theory_line_uses_the_probe_rows_own_lengths() -> None:
    """The 2-D spirals' input lengths are nothing like a chi-square with 2 degrees of freedom:
    the theory line, from the Gaussian-feature law, was 1.6-1.9x off the measured at-init
    gradient of a tanh net with He's variance; over the probe rows' own lengths within ~1.2x."""
    import numpy as np

    from depthlab.playground.prediction import theory_profile

    prep, mon = _spirals_tanh_he(0)
    g = np.asarray(mon.measure(0)["grad_std"])
    measured = g / g[-1]
    chi2 = np.asarray(theory_profile(prep.config)["relative_std"])
    rows = theory_profile(prep.config, x=mon.x)
    own = np.asarray(rows["relative_std"])
    assert np.max(np.abs(np.log(measured / chi2))) > 0.4
    assert np.max(np.abs(np.log(measured / own))) < 0.2
    assert f"over the {len(mon.x)} probe rows' own input lengths" in rows["note"]


def test_the_playground_session_sends_the_probe_rows_theory_line() -> None:
    """The page's `ready` message carries the line over the probe rows, not the chi-square's."""
    import json
    import time

    from websockets.sync.client import connect

    from depthlab.playground.server import Background

    query = {"model.depth": "6", "model.width": "32", "model.activation": "tanh",
             "model.init": "he_normal"}
    with Background(memory_limit=256 * 2**20) as bg:
        with connect(bg.url.replace("http://", "ws://") + "ws") as ws:
            ws.send(json.dumps({"cmd": "setup", "query": query}))
            deadline = time.monotonic() + 60
            while True:
                m = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
                assert m["type"] != "error", m
                if m["type"] == "ready":
                    break
    assert "probe rows' own input lengths" in m["theory"]["note"], m["theory"]["note"]



def test_an_interrupted_store_read_is_an_interrupt_not_a_damaged_store(tmp_path) -> None:
    """A statement stopped by a Ctrl-C handler (``Connection.interrupt()`` or a progress handler
    asking to stop) ends with OperationalError('interrupted'): that is a KeyboardInterrupt (exit
    130), not the one-line 'results store ... cannot be read: interrupted' of a damaged file."""
    from depthlab.experiments.store import Store

    store = Store(tmp_path / "results")
    try:
        assert store.runs().empty
        store._conn.set_progress_handler(lambda: 1, 1)  # stop every statement at its first step
        with pytest.raises(KeyboardInterrupt):
            store.runs()
        store._conn.set_progress_handler(None, 1)
        assert store.runs().empty  # the store is intact
    finally:
        store.close()


def test_sweep_progress_asks_a_callable_slots_at_each_beat() -> None:
    """A remote Dask cluster's workers come and go: the sweep's progress asks the executor's
    ``slots`` at each beat (daskhunt43's ``Executor.slots``) instead of counting every point
    sent as running ('6 points running' on 2 worker threads)."""
    from depthlab.experiments.progress import SweepProgress

    now = [100.0]
    slots = [2]
    prog = SweepProgress(6, None, clock=lambda: now[0], slots=lambda: slots[0])
    prog.started()
    for i in range(6):
        prog.sent(f"run{i}")
    assert prog.running()[0] == 2
    slots[0] = 5  # a worker joined
    assert prog.running()[0] == 5
    slots[0] = None  # not known: every point sent
    assert prog.running()[0] == 6


def test_run_sweep_reads_the_executors_slots(tmp_path) -> None:
    """run_sweep hands the progress the executor's own ``slots`` (a Dask executor's worker
    threads elsewhere), not only ``local_workers``."""
    from depthlab.experiments import run_sweep
    from depthlab.experiments.executors.base import InProcess
    from depthlab.experiments.progress import SweepProgress

    seen: list = []
    real = SweepProgress.watch

    def spy(self, *a, **k):  # called right after run_sweep sets the progress's slots
        seen.append(self.slots() if callable(self.slots) else self.slots)
        return real(self, *a, **k)

    class Three(InProcess):
        slots = 3  # type: ignore[assignment]

    raw = {"data": {"name": "digits", "n": 60}, "model": {"sizes": ["auto", 4, "auto"]},
           "train": {"max_steps": 1, "batch_size": 8}, "probes": {"every": 0},
           "sweep": {"train.seed": [0, 1]}}
    SweepProgress.watch = spy
    try:
        run_sweep(raw, tmp_path / "o", executor=Three(), echo=lambda s: None)
    finally:
        SweepProgress.watch = real
    assert seen and set(seen) == {3}, seen


def test_load_of_a_data_npz_names_its_arrays_not_numpys_words(tmp_path) -> None:
    """A data .npz (x and y) given where a saved network is expected read "('recipe is not a
    file in the archive')": numpy's KeyError text. It names the arrays it holds."""
    import numpy as np

    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((3, 2)), y=np.zeros(3))
    with pytest.raises(ValueError) as info:
        dl.load(path)
    msg = str(info.value)
    assert "not a file in the archive" not in msg and "\n" not in msg
    assert "it holds the arrays 'x', 'y' and no 'recipe'" in msg and "not a network" in msg


@pytest.mark.parametrize("lr, optimizer, usual", [(1e300, "sgd", 1e-3), (1e38, "adam", 1e-3)])
def test_an_absurd_learning_rate_is_prescribed_the_usual_one(lr, optimizer, usual) -> None:
    """lr 1e300 diverging was prescribed '10x smaller' (1e299), which diverged too (numcli43):
    a rate 1e7 times the optimizer's default or more is prescribed the default."""
    from depthlab.data import load_dataset

    data = load_dataset("spirals", seed=0, standardize=True)
    d = dl.doctor(dict(sizes=[2, 16, 16, 2], activation="tanh", init="glorot_uniform", seed=0),
                  data, steps=30, optimizer=optimizer, lr=lr, verify=False)
    f = d.finding("divergence")
    assert f is not None, d
    assert f.prescription.get("lr") == pytest.approx(usual), f.prescription
    assert "usual learning rate" in f.prescription_text


def test_a_divergence_at_a_plausible_rate_still_gets_a_tenth() -> None:
    from depthlab.diagnosis.prescriptions import for_divergence

    assert for_divergence(3.0, 1e-3)[0] == {"lr": 0.3}
    assert for_divergence(1e3, 1e-3)[0] == {"lr": 100.0}  # the torch doctor's known cases
    assert for_divergence(1e300, None)[0] == {"lr": 1e299}
