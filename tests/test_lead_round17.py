"""Lead's round-17 regression tests."""

from __future__ import annotations

import inspect

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def test_watch_names_a_mistyped_keyword_and_the_one_meant():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"Watch\(\) got an unexpected keyword argument 'evry'"
                                        r" \(did you mean 'every'\?\)"):
        dlt.Watch(model, evry=5)
    with pytest.raises(TypeError, match=r"'percentile'.*did you mean 'percentiles'"):
        dlt.Watch(model, percentile=(50,))
    # the signature (and so help() and the defaults) stays the one written
    params = inspect.signature(dlt.Watch).parameters
    assert list(params)[:3] == ["model", "every", "out"] and params["every"].default == 10
    with dlt.Watch(model, every=2, theory=False) as w:  # the usual call still works
        loss = model(torch.randn(5, 3)).sum()
        loss.backward()
        w.step(loss)
    assert w.steps_seen == 1


def test_a_runs_seconds_do_not_hold_the_probe_kernels_load():
    """The first run of a process (a sweep worker's first point) stored 1-5.6 s as its
    ``seconds``: Numba's import and the kernels' cache load happened inside the clock. In a
    fresh process, the kernels the run's probes use must be loaded when the clock starts."""
    import subprocess
    import sys

    code = r"""
import time
import numpy as np
from depthlab.experiments import execute, runner
from depthlab.probes import accel

seen = {}
real = time.perf_counter

def clock():
    if "t0" not in seen:  # the run's first clock read: its start
        k = accel._state["kernels"]
        seen["t0"] = (k is not accel._UNSET and k is not None
                      and any(str(s[0].dtype) == "float64" for s in k.layer.signatures))
    return real()

class Clock:  # the runner's clock only (time itself is left alone)
    perf_counter = staticmethod(clock)

runner.time = Clock
rec = execute({"data": {"name": "spirals", "n": 60},
               "model": {"sizes": [2, 8, 8, 2], "dtype": "float64"},
               "train": {"epochs": 1}, "probes": {"every": 1}})
assert rec.status == "finished", rec.error
print("loaded" if seen["t0"] else "not loaded")
"""
    accel = pytest.importorskip("depthlab.probes.accel")
    if not accel.available():
        pytest.skip("no compiled kernels (Numba) here")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "loaded"


def test_importing_the_lsuv_module_leaves_dl_lsuv_the_function():
    """``from depthlab.lsuv import lsuv`` (or ``import depthlab.lsuv``) made ``dl.lsuv`` the
    module: ``dl.lsuv(net, x)`` raised "'module' object is not callable" (found by numpy17;
    tests failed or passed by the order they ran in)."""
    import subprocess
    import sys

    code = """
import numpy as np
import depthlab as dl
from depthlab.lsuv import lsuv
import depthlab.lsuv
assert dl.lsuv is lsuv, dl.lsuv
net = dl.mlp([4, 8, 3], activation="tanh", seed=0)
dl.lsuv(net, np.random.default_rng(0).standard_normal((32, 4)))
import depthlab.plot
assert type(dl.plot).__name__ == "module", dl.plot  # a public module stays a module
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("text,fragment", [
    ("1,2,3,4\n1,2\n", "line 2 has 2 values but the file has 4 columns"),
    ("1,2,3,4\n1,,3,4\n", "line 2 has an empty cell in column 2 of 4"),
    ("a,b,c,d\n1,2,3,4\n5,6,7\n", "line 3 has 3 values but the file has 4 columns"),
])
def test_predict_names_a_short_row_or_an_empty_cell_of_a_csv(tmp_path, capsys, text, fragment):
    """A CSV with a short row or an empty cell was refused as 'contains NaN or infinity'
    though it holds none (pandas fills missing cells with NaN; found by numpy17); a written
    'nan' is still the finite check's."""
    import depthlab as dl
    from depthlab.cli import main

    net = dl.save(dl.mlp([4, 5, 2], seed=0), tmp_path / "net.npz")
    (tmp_path / "r.csv").write_text(text)
    assert main(["predict", str(net), str(tmp_path / "r.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    (tmp_path / "n.csv").write_text("1,2,3,4\n1,nan,3,4\n")
    assert main(["predict", str(net), str(tmp_path / "n.csv")]) == 2
    assert "NaN or infinity" in capsys.readouterr().err


def test_a_results_folder_that_is_a_device_is_named(tmp_path, capsys):
    """``--out /dev/null`` said "cannot create results folder '/dev/null': File exists"
    (the search for what is in the way looked for regular files only; found by cli17)."""
    from depthlab.cli import main

    cfg = tmp_path / "r.toml"
    cfg.write_text('[data]\nname = "spirals"\nn = 40\n[model]\nsizes = [2, 3, 2]\n'
                   '[train]\nepochs = 1\n')
    assert main(["run", str(cfg), "--out", "/dev/null"]) == 2
    err = capsys.readouterr().err
    assert "'/dev/null' is not a folder (a device or a pipe)" in err, err


@pytest.mark.parametrize("wrap", ["tuple", "dict"])
def test_probe_gives_the_accuracy_of_a_tuple_or_dict_output(wrap):
    """A model returning ``(logits, aux)`` or ``{"logits": ..., "aux": ...}`` (its loss_fn
    taking the whole) had no ``acc`` row from dlt.probe, while the doctor read its logits
    (found by torchdoctor17b)."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))

        def forward(self, x):
            z = self.body(x)
            return (z, z.sum()) if wrap == "tuple" else {"aux": z.mean(1), "logits": z}

    model = Net()
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    pick = (lambda o: o[0]) if wrap == "tuple" else (lambda o: o["logits"])
    df = dlt.probe(model, x, y, lambda o, t: nn.functional.cross_entropy(pick(o), t))
    acc = df[(df.layer == 0) & (df.quantity == "acc")].value
    with torch.no_grad():
        expected = (model.body(x).argmax(1) == y).double().mean().item()
    assert len(acc) == 1 and acc.iloc[0] == pytest.approx(expected, abs=1e-12)
