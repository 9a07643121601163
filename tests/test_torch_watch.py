"""depthlab.torch.Watch: bit-identical training, the recorded rows equal a probe of the same
batch, update ratios, losses, hooks only on recorded steps, the stored run and its report, bad
input. CUDA variants run when a GPU is present."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import depthlab.torch as dlt
from depthlab.experiments.store import Store
from depthlab.probes import accel
from depthlab.torch import zoo

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


def _model(dropout=True):
    mods = [nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(inplace=True)]
    if dropout:
        mods.append(nn.Dropout(0.3))
    mods += [nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)]
    return nn.Sequential(*mods)


def _data(device, n=96):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 6, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return x.to(device), y.to(device)


def _train(device, every=None, steps=12, dropout=True, before_step=None, **kw):
    torch.manual_seed(0)
    model = _model(dropout).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = _data(device)
    watch = dlt.Watch(model, every=every, **kw) if every else None
    losses = []
    for step in range(steps):
        idx = torch.arange(step * 8, step * 8 + 16) % x.shape[0]
        if before_step is not None:
            before_step(step, model, x[idx], y[idx])
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        if watch is not None:
            watch.step(loss)
        opt.step()
        losses.append(loss.detach().clone())
    if watch is not None:
        watch.close()
    return model, losses, watch


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("every", [1, 3])
def test_training_is_bit_identical(device, every):
    ref, ref_losses, _ = _train(device)
    got, got_losses, watch = _train(device, every=every)
    assert all(torch.equal(a, b) for a, b in zip(ref_losses, got_losses))
    for (n, a), b in zip(ref.state_dict().items(), got.state_dict().values()):
        assert torch.equal(a, b), n
    assert sorted(watch.frame().step.unique()) == list(range(0, 12, every))
    assert torch.equal(torch.get_rng_state(), _rng_after(device))


def _rng_after(device):
    _train(device)
    return torch.get_rng_state()


@pytest.mark.parametrize("device", DEVICES)
def test_recorded_rows_equal_a_probe_of_the_same_batch(device):
    probes = {}

    def before(step, model, xb, yb):
        if step % 4 == 0:
            probes[step] = dlt.probe(model, xb, yb, nn.CrossEntropyLoss())

    model, losses, watch = _train(device, every=4, dropout=False, before_step=before,
                                  percentiles=(2, 15, 50, 85, 98))
    table = watch.frame()
    assert list(table.columns) == ["step", "layer", "module", "quantity", "value"]
    for step, want in probes.items():
        got = table[(table.step == step) & (table.quantity != "update_ratio")]
        want = want[want.quantity != "acc"]
        merged = want.merge(got, on=["layer", "module", "quantity"], how="outer", indicator=True)
        assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"]
        np.testing.assert_allclose(merged.value_y, merged.value_x, rtol=1e-5, atol=1e-9)
    assert set(table[table.layer > 0].module) == {"0", "3", "5"}
    lt = watch.losses()
    assert list(lt.step) == list(range(12))
    np.testing.assert_array_equal(lt.loss.to_numpy(), [float(v) for v in losses])


def test_update_ratio_is_the_relative_weight_change():
    snaps = {}

    def before(step, model, xb, yb):
        snaps[step] = [m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)]

    model, _, watch = _train("cpu", every=5, steps=11, before_step=before)
    snaps[11] = [m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)]
    table = watch.frame()
    ur = table[table.quantity == "update_ratio"]
    assert sorted(ur.step.unique()) == [5, 10]
    for step in (5, 10):
        for layer in (1, 2, 3):
            w0, w1 = snaps[step - 1][layer - 1], snaps[step][layer - 1]
            want = float((w1 - w0).norm() / w0.norm())
            got = ur[(ur.step == step) & (ur.layer == layer)].value.item()
            assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("kernels", [True, False], ids=["cpu-kernels", "torch-ops"])
def test_update_ratio_across_a_change_of_the_models_dtype(monkeypatch, kernels):
    """``model.double()`` between two steps: the step after it still gets its update ratio
    (the float32 snapshot read in float64), on both paths."""
    if not kernels:
        monkeypatch.setattr(accel, "kernels", lambda: None)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    snaps = []
    with dlt.Watch(model, every=1) as watch:
        for step in range(4):
            if step == 2:
                model.double()
                x = x.double()
            snaps.append([m.weight.detach().clone().double() for m in model[::2]])
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    ur = watch.frame().query("quantity == 'update_ratio'")
    assert sorted(ur.step.unique()) == [1, 2, 3]
    for step in (1, 2, 3):
        for layer in (1, 2):
            w0, w1 = snaps[step - 1][layer - 1], snaps[step][layer - 1]
            want = float((w1 - w0).norm() / w0.norm())
            got = ur[(ur.step == step) & (ur.layer == layer)].value.item()
            assert got == pytest.approx(want, rel=1e-5)


def _scaled_run(scaler_given: bool, scale: float | None, unscale_first: bool = False):
    """Four steps of a small Tanh/ReLU net under Watch(every=1); with ``scale`` through a
    GradScaler of that (power-of-two, so exact) scale."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    scaler = None if scale is None else torch.amp.GradScaler("cpu", init_scale=scale)
    gen = torch.Generator().manual_seed(1)
    with dlt.Watch(model, every=1, scaler=scaler if scaler_given else None) as watch:
        for _ in range(4):
            x, y = torch.randn(32, 6, generator=gen), torch.randint(0, 3, (32,), generator=gen)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            if scaler is None:
                loss.backward()
            else:
                scaler.scale(loss).backward()
                if unscale_first:  # as before clip_grad_norm_
                    scaler.unscale_(opt)
            watch.step(loss)
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)
                scaler.update()
    return watch.frame()


@pytest.mark.parametrize("unscale_first", [False, True])
def test_grad_scaler_rows_are_the_gradients_of_the_loss(unscale_first):
    plain = _scaled_run(False, None)
    scaled = _scaled_run(True, 1024.0, unscale_first)
    pd.testing.assert_frame_equal(scaled, plain, rtol=1e-12)  # an exact power-of-two scale
    # without the scaler given, the Watch finds the one stepping its optimizer (warned) and
    # takes it as its own: the rows are the gradients of the loss all the same (watchhunt42)
    with pytest.warns(RuntimeWarning, match="GradScaler steps the optimizer"):
        raw = _scaled_run(False, 1024.0, unscale_first)
    pd.testing.assert_frame_equal(raw, plain, rtol=1e-12)


def test_scaler_must_be_a_grad_scaler():
    with pytest.raises(TypeError, match="scaler must be a torch.amp.GradScaler or None, got "
                                        "float"):
        dlt.Watch(zoo.mlp([3, 4, 2]), scaler=1024.0)


def test_hooks_only_on_recorded_steps_and_removed_at_close():
    torch.manual_seed(0)
    model = zoo.mlp([4, 8, 2])
    watch = dlt.Watch(model, every=3)

    def n_hooks():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    armed = []
    for _ in range(7):
        armed.append(n_hooks() > 0)
        model.zero_grad()
        model(torch.randn(5, 4)).sum().backward()
        watch.step(model(torch.randn(2, 4)).sum())
    assert armed == [True, False, False, True, False, False, True]
    watch.close()
    assert n_hooks() == 0
    with pytest.raises(RuntimeError, match="close"):
        watch.step(torch.tensor(1.0))


def test_run_is_stored_and_reported(tmp_path):
    model, _, watch = _train("cpu", every=4, out=tmp_path, name="torch-mlp")
    with Store(tmp_path) as store:
        runs = store.runs()
        assert list(runs.name) == ["torch-mlp"]
        rid = runs.id.iloc[0]
        probes = store.probes(rid)
        steps = store.steps(rid)
    assert len(probes) == len(watch.frame())
    assert len(steps) == 12
    from depthlab.report import write_report

    write_report(tmp_path)
    text = (tmp_path / "report.html").read_text()
    assert "torch-mlp" in text and "Layers (module names)" in text


def test_context_manager_and_close_idempotent():
    torch.manual_seed(0)
    model = zoo.mlp([4, 8, 2])
    with dlt.Watch(model, every=1) as watch:  # default: no percentiles
        model(torch.randn(5, 4)).sum().backward()
        watch.step(1.5)
    watch.close()
    df = watch.frame()
    assert set(df.step) == {0} and not df.quantity.str.contains(r"_p\d").any()
    assert df[df.quantity == "loss"].value.item() == 1.5


def test_resnet_watch_records_blocks():
    torch.manual_seed(0)
    model = zoo.resnet18(num_classes=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    watch = dlt.Watch(model, every=2)
    for _ in range(3):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)),
                                           torch.tensor([0, 2]))
        loss.backward()
        watch.step(loss)
        opt.step()
    watch.close()
    df = watch.frame()
    assert set(df.step) == {0, 2}
    blocks = df[df.quantity == "block_grad_std"]
    assert len(blocks[blocks.step == 2]) == 8
    assert (df[df.quantity == "update_ratio"].value > 0).all()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"every": 0}, ValueError, "every"),
    ({"every": 2.5}, ValueError, "every"),
    ({"every": True}, ValueError, "every"),
    ({"out": 3}, TypeError, "folder"),
    ({"percentiles": (25, 25)}, ValueError, "distinct"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        dlt.Watch(zoo.mlp([3, 4, 2]), **kwargs)


def test_bad_model_and_step_before_backward():
    with pytest.raises(TypeError, match="nn.Module"):
        dlt.Watch(copy.deepcopy)
    with pytest.raises(ValueError, match="no weight layers"):
        dlt.Watch(nn.Sequential(nn.Tanh()))
    model = zoo.mlp([3, 4, 2])
    watch = dlt.Watch(model)
    loss = model(torch.randn(2, 3)).sum()
    with pytest.raises(ValueError, match="before any backward"):
        watch.step(loss)
    with pytest.raises(ValueError, match="scalar"):
        watch.step(torch.ones(3))
    with pytest.raises(TypeError, match="loss"):
        watch.step("1.0")
    watch.close()


@pytest.mark.parametrize("kernels", [False, True], ids=["torch-ops", "cpu-kernels"])
def test_one_host_transfer_per_recorded_step(monkeypatch, kernels):
    """During a recorded step (forward, backward, watch.step) the only device-to-host reads
    are one ``tolist`` of the stacked statistics; unrecorded steps read nothing. That is the
    device path (CUDA, or the CPU without Numba). With the CPU kernels the statistics are
    computed on ``numpy()`` views of the CPU tensors (no copy) and the few that remain device
    tensors still travel in at most one ``tolist``."""
    if kernels and not accel.available():
        pytest.skip("Numba (depthlab[fast]) is not installed")
    if not kernels:
        monkeypatch.setattr(accel, "kernels", lambda: None)
    torch.manual_seed(0)
    model = _model()
    x, y = _data("cpu")
    # theory off: the prediction at the first record (a one-off pass, now that train-mode
    # dropout is covered) reads its own numbers
    watch = dlt.Watch(model, every=2, theory=False)
    reads = []
    for name in ("tolist", "item", "numpy", "__float__", "__bool__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _name=name, _original=original, **k):
            reads.append(_name)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    per_step = []
    for _ in range(4):
        reads.clear()
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x[:16]), y[:16])
        loss.backward()
        watch.step(loss)
        per_step.append(list(reads))
    monkeypatch.undo()
    watch.close()
    if kernels:
        assert per_step[1] == per_step[3] == []
        for reads in (per_step[0], per_step[2]):
            assert reads.count("tolist") <= 1 and "numpy" in reads
            assert set(reads) <= {"tolist", "numpy", "__float__"}
    else:
        assert per_step == [["tolist"], [], ["tolist"], []]
    assert set(watch.frame().step) == {0, 2}


def test_interrupted_training_is_stored_as_failed(tmp_path):
    torch.manual_seed(0)
    model = zoo.mlp([4, 8, 2])
    with pytest.raises(KeyboardInterrupt):
        with dlt.Watch(model, every=1, out=tmp_path, name="stopped") as watch:
            model(torch.randn(5, 4)).sum().backward()
            watch.step(1.0)
            raise KeyboardInterrupt
    with Store(tmp_path) as store:
        runs = store.runs()
    assert list(runs.status) == ["failed"] and list(runs.name) == ["stopped"]
    assert set(watch.frame().step) == {0}


@pytest.mark.parametrize("every", [1, 2])
def test_update_ratio_of_a_weight_tied_between_two_layers(every):
    """Two modules sharing one weight (tied embeddings): each layer's update ratio is the
    relative change of that weight, counted once."""
    torch.manual_seed(0)
    a, b = nn.Linear(6, 6), nn.Linear(6, 6)
    b.weight = a.weight
    model = nn.Sequential(a, nn.Tanh(), b)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(16, 6), torch.randint(0, 6, (16,))
    watch = dlt.Watch(model, every=every)
    snaps = {}
    for step in range(1, 5):
        snaps[step - 1] = a.weight.detach().clone()
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
    snaps[4] = a.weight.detach().clone()
    watch.close()
    ur = watch.frame().query("quantity == 'update_ratio'")
    assert set(ur.layer) == {1, 2} and len(ur)
    for row in ur.itertuples():
        w0, w1 = snaps[row.step - 1], snaps[row.step]
        assert row.value == pytest.approx(float((w1 - w0).norm() / w0.norm()), rel=1e-5)


def _cnn():
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
                         nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 5 * 5, 16), nn.ReLU(inplace=True), nn.Linear(16, 3))


def _both_paths(monkeypatch, make, every: int, steps: int, lr: float, momentum: float = 0.0):
    """The Watch tables of the same training with the CPU kernels and with the torch
    operations (the CUDA path): ``make()`` -> (model, x)."""
    if not accel.available():
        pytest.skip("Numba (depthlab[fast]) is not installed")
    frames = []
    for kernels in (True, False):
        if not kernels:
            monkeypatch.setattr(accel, "kernels", lambda: None)
        torch.manual_seed(0)
        model, x = make()
        y = torch.randint(0, 3, (x.shape[0],))
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        watch = dlt.Watch(model, every=every)
        for _ in range(steps):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
        watch.close()
        monkeypatch.undo()
        frames.append(watch.frame())
    return frames


def _assert_same_tables(fast, slow, rtol: float, atol: float) -> None:
    """Same rows; counts and fractions equal exactly, everything else to ``rtol``/``atol``."""
    key = ["step", "layer", "module", "quantity"]
    assert fast[key].equals(slow[key])
    exact = fast.quantity.str.endswith("_frac")
    np.testing.assert_array_equal(fast.value[exact], slow.value[exact])
    np.testing.assert_allclose(fast.value[~exact], slow.value[~exact], rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize("kind", ["mlp", "cnn", "tied"])
def test_cpu_kernels_and_torch_ops_give_the_same_table(monkeypatch, kind, every, dtype):
    """The compiled CPU path (Numba) and the torch operations (the CUDA path) record the same
    rows, with values equal to rounding: float32 statistics to 1e-4 relative, float64 to 1e-9;
    counts and fractions exactly."""

    def make():
        if kind == "cnn":
            model, x = _cnn(), torch.randn(24, 2, 5, 5)
        elif kind == "tied":  # one weight in two layers: read once per record
            model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                                  nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
            model[4].weight = model[2].weight
            x = torch.randn(24, 6)
        else:
            model, x = _model(dropout=False), torch.randn(24, 6)
        return model.to(dtype), x.to(dtype)

    fast, slow = _both_paths(monkeypatch, make, every, steps=7, lr=0.1, momentum=0.9)
    assert {"update_ratio", "dead_frac", "inactive_frac", "grad_pre_std"} <= set(fast.quantity)
    _assert_same_tables(fast, slow, rtol=1e-4 if dtype == torch.float32 else 1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["resnet18", "transformer", "lstm", "channels_last"])
def test_cpu_kernels_match_torch_ops_on_zoo_models(monkeypatch, kind):
    """The same parity on a ResNet-18 (BatchNorm, in-place ReLU, residual blocks), a
    transformer (Embedding, attention projections, ReLU feed-forward), an LSTM (several
    weights per layer, views of its output) and a CNN in ``channels_last`` memory (strided
    outputs: the kernels read a copy)."""

    def make():
        if kind == "resnet18":
            return zoo.resnet18(num_classes=3), torch.randn(4, 3, 16, 16)
        if kind == "transformer":
            return zoo.transformer_classifier(), torch.randint(0, 50, (6, 10))
        if kind == "lstm":
            return zoo.lstm_classifier(), torch.randn(6, 7, 8)
        return (_cnn().to(memory_format=torch.channels_last),
                torch.randn(24, 2, 5, 5).to(memory_format=torch.channels_last))

    fast, slow = _both_paths(monkeypatch, make, every=2, steps=3, lr=0.05)
    # rounding only: a batch-normalized output's mean is ~1e-9 either way, hence atol
    _assert_same_tables(fast, slow, rtol=2e-4, atol=1e-6)


def test_vanishing_gradients_do_not_underflow_on_either_path(monkeypatch):
    """Gradients of ~1e-26 (float32 squares ~1e-52 underflow to 0): both paths still give
    ``weight_grad_std`` equal to a float64 computation, and the same table."""

    def make():
        model, x = _model(dropout=False), torch.randn(24, 6)
        return model, x

    class Tiny(nn.Module):  # the loss scaled down by 1e-25 through the model's output
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) * 1e-25

    def tiny():
        model, x = make()
        return Tiny(model), x

    fast, slow = _both_paths(monkeypatch, tiny, every=1, steps=3, lr=1.0)
    torch.manual_seed(0)
    model, x = tiny()
    y = torch.randint(0, 3, (x.shape[0],))
    nn.functional.cross_entropy(model(x), y).backward()
    grads = [m.weight.grad.double() for m in model.inner if isinstance(m, nn.Linear)]
    for frame in (fast, slow):
        step0 = frame[(frame.step == 0) & (frame.quantity == "weight_grad_std")]
        got = step0.sort_values("layer").value.to_numpy()
        want = [g.std(unbiased=False).item() for g in grads]
        assert min(want) > 0
        np.testing.assert_allclose(got, want, rtol=1e-4)
        assert (frame[frame.quantity == "grad_pre_std"].value > 0).all()
    _assert_same_tables(fast, slow, rtol=1e-4, atol=0)


@pytest.mark.parametrize("kind", ["mlp_relu", "cnn", "tied", "resnet18", "lstm", "transformer",
                                  "tanh"])
def test_host_collect_equals_the_general_collect(kind):
    """:meth:`Recording.collect`'s special case for passes whose statistics are all host floats
    (CPU kernels, no percentiles) gives the general path's values and layout exactly, update
    ratios included; where it does not apply (a Tanh measured by torch operations) it steps
    aside and the general path runs."""
    if not accel.available():
        pytest.skip("Numba (depthlab[fast]) is not installed")
    from depthlab.torch.hooks import Recording

    torch.manual_seed(0)
    if kind == "cnn":
        model, x = _cnn(), torch.randn(24, 2, 5, 5)
    elif kind == "resnet18":
        model, x = zoo.resnet18(num_classes=3), torch.randn(4, 3, 16, 16)
    elif kind == "tanh":
        model, x = _model(dropout=False), torch.randn(24, 6)
    elif kind == "lstm":  # several weights per layer
        model, x = zoo.lstm_classifier(), torch.randn(6, 7, 8)
    elif kind == "transformer":
        model, x = zoo.transformer_classifier(), torch.randint(0, 50, (6, 10))
    else:
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(inplace=True), nn.Linear(16, 16),
                              nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
        if kind == "tied":
            model[4].weight = model[2].weight
        x = torch.randn(24, 6)
    y = torch.randint(0, 3, (x.shape[0],))
    rec = Recording(model, ())
    for _ in range(2):  # the second pass runs with the plan cached after the first
        rec.arm()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        rec.disarm()
    weights = {id(p): p for info in rec.layers for p in info.weights}
    snapshot = {key: (p.detach() * 0.9).contiguous() for key, p in weights.items()}
    results = []
    for host in (True, False):
        previous = {key: w0.clone() for key, w0 in snapshot.items()}
        extra = [(0, "", "loss", loss.detach())]
        if not host:  # hide the kernels from the special case only
            wk, rec._wk = rec._wk, None
        rows = rec.collect(extra=extra, also=[loss.detach()], previous=previous, refresh=True)
        if not host:
            rec._wk = wk
        results.append((rows, rec.also, dict(rec.update_sums), rec.refreshed,
                        {k: float(v) for k, v in rec.weight_norms.items()},
                        [previous[key].clone() for key in snapshot]))
    (rows_h, also_h, upd_h, ref_h, norms_h, snap_h), (rows_g, also_g, upd_g, ref_g, norms_g,
                                                       snap_g) = results
    assert [r[:3] for r in rows_h] == [r[:3] for r in rows_g]
    np.testing.assert_array_equal([r[3] for r in rows_h], [r[3] for r in rows_g])
    assert also_h == also_g and upd_h == upd_g and ref_h == ref_g and norms_h == norms_g
    for a, b in zip(snap_h, snap_g):  # refresh copied W into the snapshot on both paths
        assert torch.equal(a, b)
    quantities = {r[2] for r in rows_h}
    assert "update_ratio" in quantities and "grad_pre_std" in quantities
    special = rec._collect_host(None, extra, [loss.detach()], None, False)
    if kind == "tanh":  # the Tanh is measured by torch operations: the general path ran
        assert special is None
    elif kind == "lstm":  # the special case, with four weight tensors per layer
        assert special is not None and max(len(i.weights) for i in rec.layers) > 1
    elif kind == "transformer":  # the special case, with residual blocks (no ReLU modules)
        assert special is not None and "block_grad_std" in quantities
    else:  # the special case ran for the first call
        assert special is not None and "dead_frac" in quantities


def test_rearming_keeps_the_users_own_hooks():
    """Arming again puts the plan's hooks back under their handle ids; a hook the user
    registered meanwhile stays, runs, and is removed by its own handle only."""
    from depthlab.torch.hooks import Recording

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(5, 4)
    rec = Recording(model, ())
    calls = []
    for k in range(4):
        rec.arm()
        assert rec.armed
        if k == 1:
            handle = model[0].register_forward_hook(lambda m, a, o: calls.append(1))
        model(x).sum().backward()
        rec.disarm()
        assert not rec.armed
        assert [r[2] for r in rec.collect()].count("pre_mean") == 2
    assert len(calls) == 3  # passes 1, 2 and 3
    assert len(model[0]._forward_hooks) == 1
    handle.remove()
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


@pytest.mark.parametrize("device", DEVICES)
def test_theory_at_the_first_record_leaves_training_bit_identical(device):
    """The theory's extra forward/backward (batch norm in training mode: running statistics)
    changes nothing; it equals depthlab.torch.predict of the untrained model on step 0's
    batch."""
    torch.manual_seed(0)
    untrained = _model(dropout=False).to(device)
    x, _ = _data(device)
    from depthlab.torch.predict import theory_rows

    expected, note = theory_rows(copy.deepcopy(untrained), x[torch.arange(16)])
    ref, ref_losses, off = _train(device, dropout=False, every=3, theory=False)
    got, got_losses, watch = _train(device, dropout=False, every=3)
    assert all(torch.equal(a, b) for a, b in zip(ref_losses, got_losses))
    for (n, a), b in zip(ref.state_dict().items(), got.state_dict().values()):
        assert torch.equal(a, b), n
    assert off.theory is None and "theory=False" in off.theory_note
    assert expected is not None and watch.theory_note == note
    pd.testing.assert_frame_equal(watch.theory, pd.DataFrame(expected))
    assert list(watch.theory.layer) == [1, 2, 3] and watch.theory.grad_pre_var.iloc[-1] == 1.0


def test_theory_is_stored_and_drawn_beside_the_measurement(tmp_path):
    from depthlab import plot

    _, _, watch = _train("cpu", every=4, dropout=False, out=tmp_path)
    record = watch.record()
    rows = record.config["model"]["theory"]
    pd.testing.assert_frame_equal(pd.DataFrame(rows).astype(float), watch.theory.astype(float))
    with Store(tmp_path) as store:
        rid = store.runs().id.iloc[0]
        config, probes = store.run(rid)["config"], store.probes(rid)
    theory, note = plot.theory_for_config(config)  # what the report draws with
    assert theory is not None and "depthlab.torch.predict" in note
    assert theory.grad_pre_var.tolist() == watch.theory.grad_pre_var.tolist()
    fig = plot.gradient_per_layer(probes, theory=theory)
    assert any(line.get_linestyle() == "--" for line in fig.axes[0].lines)


def test_no_theory_for_a_model_it_does_not_cover_says_why():
    torch.manual_seed(0)  # alpha dropout between two layers (train-mode Dropout is covered)
    model = nn.Sequential(nn.Linear(6, 16), nn.SELU(), nn.AlphaDropout(0.3), nn.Linear(16, 3))
    x, y = _data("cpu")
    watch = dlt.Watch(model, every=4)
    for _ in range(5):
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
    watch.close()
    assert watch.theory is None
    assert watch.theory_note.startswith("no theory: ") and "AlphaDropout" in watch.theory_note
    assert "theory" not in watch.record().config["model"]
    _, _, covered = _train("cpu", every=4)  # train-mode dropout: predicted since round 7
    assert covered.theory is not None and "variance propagation" in covered.theory_note


def test_no_theory_when_the_models_input_is_unknown():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = _data("cpu")
    watch = dlt.Watch(model, every=2)
    loss = nn.functional.cross_entropy(model[2](model[1](model[0](x))), y)  # submodules only
    loss.backward()
    watch.step(loss)
    assert watch.theory is None and "did not run" in watch.theory_note

    class Keyword(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 3)

        def forward(self, *, inputs):
            return self.lin(inputs)

    model = Keyword()
    watch = dlt.Watch(model, every=2)
    loss = nn.functional.cross_entropy(model(inputs=x), y)
    loss.backward()
    watch.step(loss)
    assert watch.theory is None and "no tensor as its first" in watch.theory_note
