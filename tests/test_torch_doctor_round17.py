"""Round 17: the torch doctor, its CLI and the bridge, on models, data and inputs as a
practitioner gives them."""

from __future__ import annotations

import functools

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _xy(n: int = 60, d: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] > 0).long()


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 2))


def test_an_optimizer_factory_trains_as_its_name_and_arguments():
    x, y = _xy()
    run = functools.partial(dlt.doctor, _mlp, (x, y), steps=4, batch_size=16, verify=False)
    by_name = run(optimizer=("sgd", {"lr": 0.05, "momentum": 0.9}))
    d = run(optimizer=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9))
    assert (d.settings["optimizer"], d.settings["lr"]) == ("sgd", 0.05)
    assert d.settings["optimizer_kwargs"] == {"momentum": 0.9}
    assert d.baseline["train_loss"] == by_name.baseline["train_loss"]
    d = run(optimizer=lambda ps: torch.optim.Adam(ps))  # the class defaults: lr 1e-3 only
    assert (d.settings["optimizer"], d.settings["lr"], d.settings["optimizer_kwargs"]) == \
        ("adam", 1e-3, {})
    d = run(optimizer=lambda ps: torch.optim.SGD([{"params": ps, "lr": 0.05, "momentum": 0.9}],
                                                 lr=0.5))  # the group's own lr trains
    assert d.baseline["train_loss"] == by_name.baseline["train_loss"]
    with pytest.raises(TypeError, match=r"returned a int.*expected a torch\.optim optimizer"):
        run(optimizer=lambda ps: 3)
    with pytest.raises(TypeError, match=r"LBFGS is not supported"):
        run(optimizer=lambda ps: torch.optim.LBFGS(ps))
    with pytest.raises(TypeError) as e:  # not a factory of params: one line naming the call
        run(optimizer=lambda: torch.optim.SGD(_mlp().parameters(), lr=0.1))
    assert "optimizer(params)" in str(e.value) and "\n" not in str(e.value)


def test_the_bridge_package_gives_to_torch_and_from_torch_without_importing_torch_first():
    import subprocess
    import sys

    import numpy as np

    import depthlab as dl
    from depthlab.bridge import from_torch, to_torch  # was an ImportError: only in .torch_bridge
    from depthlab.bridge.torch_bridge import to_torch as direct

    assert to_torch is direct
    net = dl.mlp([4, 5, 3], activation="tanh", dtype="float64", seed=1)
    x = np.random.default_rng(0).standard_normal((6, 4))
    back = from_torch(to_torch(net))
    assert np.allclose(back.forward(x), net.forward(x), rtol=0, atol=1e-12)
    # importing the package alone still imports no torch (the engine never needs it)
    code = "import sys, depthlab.bridge; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_from_torch_takes_subclasses_that_keep_their_base_forward():
    import numpy as np

    from depthlab.bridge import from_torch

    class MLP(nn.Sequential):  # the common 'class MLP(nn.Sequential)' of a user's code
        def __init__(self):
            super().__init__(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))

    class Head(nn.Linear):  # its own __init__, torch's forward
        def __init__(self):
            super().__init__(6, 2)

    class Gated(nn.Linear):  # its own forward: not a Linear's computation
        def forward(self, x):
            return super().forward(x) * 2

    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((5, 4))
    for model in (MLP(), nn.Sequential(nn.Linear(4, 6), nn.ReLU(), Head())):
        model = model.double()
        net = from_torch(model)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert np.allclose(net.forward(x), want, rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match=r"cannot express module '1' \(Gated"):
        from_torch(nn.Sequential(nn.Linear(4, 6), Gated(6, 2)))


def test_a_lazy_conv_model_gets_channels_last_images_moved_to_channels_first():
    import numpy as np

    from depthlab.torch.doctor import shape_inputs

    x = np.arange(2 * 8 * 6 * 3, dtype=np.float32).reshape(2, 8 * 6 * 3)  # (H, W, C) files
    lazy = nn.Sequential(nn.LazyConv2d(4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    got = shape_inputs(x, (8, 6, 3), lazy)  # was (2, 8, 6, 3): 8 'channels' of 6 x 3 images
    want = x.reshape(2, 8, 6, 3).transpose(0, 3, 1, 2)
    assert got.shape == (2, 3, 8, 6) and np.array_equal(got, want)
    assert shape_inputs(x, (3, 8, 6), lazy).shape == (2, 3, 8, 6)  # channels first: kept


def _deep_sigmoid() -> nn.Module:
    # N(0, 100): 600x Glorot's variance, beyond the sigmoid's critical 103x (siginit29: N(0, 1),
    # 6x, is no init_mismatch: Glorot's variance lies deep in the ordered phase, chi1 = 0.056)
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(10):
        lin = nn.Linear(6, 6)
        nn.init.normal_(lin.weight, 0, 10)
        layers += [lin, nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(6, 2))


def test_a_finding_no_verified_cure_helped_says_so_beside_its_prescription():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 6, generator=g), torch.randint(0, 2, (60,), generator=g)
    d = dlt.doctor(_deep_sigmoid, (x, y), steps=8, batch_size=16, verify=True, max_cures=2)
    tried = {f.kind: [v for v in d.verifications if v.kind == f.kind] for f in d.findings}
    none_helped = [f for f in d.findings if tried[f.kind] and
                   not any(v.helped for v in tried[f.kind])]
    some_helped = [f for f in d.findings if any(v.helped for v in tried[f.kind])]
    assert none_helped and some_helped  # init_mismatch: neither re-initialization helped
    for f in none_helped:  # was the rule's prescription alone, read as a recommendation
        n = len(tried[f.kind])
        said = "the cure verified did not help" if n == 1 else \
            f"none of the {n} cures verified helped"
        assert f.prescription_text.endswith(f" ({said} within 8 steps)")
        assert f.prescription_text in str(d)
    for f in some_helped:
        assert "verified helped" not in f.prescription_text
        assert "did not help" not in f.prescription_text


def test_the_doctor_api_shows_progress_of_each_training_run(capsys):
    x, y = _xy()
    run = functools.partial(dlt.doctor, _mlp, (x, y), steps=3, batch_size=16, verify=False)
    quiet = run()
    assert capsys.readouterr().err == ""  # default: nothing, as before
    d = run(progress="lines")  # was "unexpected keyword argument 'progress'"
    err = capsys.readouterr().err
    assert "doctor run 1 step 3/3 (100%)" in err and "\r" not in err
    assert d.baseline["train_loss"] == quiet.baseline["train_loss"]
    with pytest.raises(ValueError, match="progress='loud' is not accepted"):
        run(progress="loud")


def test_a_depthlab_network_given_to_the_torch_doctor_names_both_ways():
    import depthlab as dl

    net = dl.mlp([6, 8, 2], seed=0)
    with pytest.raises(TypeError) as e:
        dlt.doctor(net, _xy(), steps=2, verify=False)
    said = str(e.value)  # was only 'expected a torch.nn.Module ..., got Network'
    assert "got a depthlab Network" in said and "dl.doctor(net, data)" in said
    assert "depthlab.bridge.to_torch(net)" in said and "\n" not in said
    from depthlab.bridge import to_torch

    assert dlt.doctor(to_torch(net), _xy(), steps=2, verify=False).baseline["steps"] == 2


def test_from_torch_takes_a_softmax_without_a_dim_as_torch_applies_it_to_rows():
    import warnings

    import numpy as np

    from depthlab.bridge import from_torch

    model = nn.Sequential(nn.Linear(4, 3), nn.Softmax()).double()  # dim=None: torch takes
    x = np.random.default_rng(0).standard_normal((5, 4))  # dim 1 of a 2-D input (it warns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
    net = from_torch(model)  # was 'cannot express module '1' (Softmax(dim=None))'
    assert np.allclose(net.forward(x), want, rtol=0, atol=1e-12)
