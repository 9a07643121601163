"""Round 30 hunt of the statistics depthlab.torch takes on the model's device (torchnum30):
probe / Watch quantities against a direct float64 computation of the same tensors."""
import warnings

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
dlt = pytest.importorskip("depthlab.torch")
from depthlab.probes import accel  # noqa: E402
from depthlab.torch import accumulators  # noqa: E402


def _identity_net(d: int, act: type) -> nn.Module:
    """Linear(d, d) with W = I, b = 0 (its output is its input, exactly), act, Linear(d, 2)."""
    fc = nn.Linear(d, d)
    with torch.no_grad():
        fc.weight.copy_(torch.eye(d))
        fc.bias.zero_()
    torch.manual_seed(1)
    return nn.Sequential(fc, act(), nn.Linear(d, 2))


def _layer1(model: nn.Module, x: torch.Tensor) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = dlt.probe(model, x, torch.zeros(x.shape[0], dtype=torch.long), "cross_entropy",
                       percentiles=())
    return df[df.layer == 1].set_index("quantity")["value"].to_dict()


def _std64(t: torch.Tensor) -> float:
    return t.double().std(unbiased=False).item()


# shapes: 64x128 (8192 entries: deferred to the record's end), 128x256 (32768: reduced at once)
@pytest.mark.parametrize("rows, d", [(64, 128), (128, 256)])
def test_pre_and_act_std_of_outputs_far_from_zero_match_float64_on_the_torch_path(rows, d):
    # float32 outputs 1000 + 1e-3 z (a net with large biases): the torch operations' one-pass
    # sum x^2 / n - mean^2 cancelled, pre_std 1.2e-3 (deferred) and 1.0e-2 (at once) off, and
    # act_std after a ReLU (positive outputs, the ReLU's own path) likewise
    g = torch.Generator().manual_seed(0)
    x = 1000.0 + 1e-3 * torch.randn(rows, d, generator=g)
    with accel.numpy_only():  # the torch operations (CUDA's), not the compiled kernels
        r = _layer1(_identity_net(d, nn.ReLU), x)
    assert r["pre_mean"] == pytest.approx(x.double().mean().item(), rel=1e-12)
    assert r["pre_std"] == pytest.approx(_std64(x), rel=1e-6)
    assert r["act_std"] == pytest.approx(_std64(torch.relu(x)), rel=1e-6)


def test_the_device_branch_of_large_float32_outputs_matches_float64(monkeypatch):
    # the branch a GPU's float32 tensors of more than 2^20 entries take (no host
    # synchronisation), forced on the CPU: same cancellation as above (1.0e-2 off)
    monkeypatch.setattr(accumulators, "_synced", lambda f: f.dtype == torch.float64)
    g = torch.Generator().manual_seed(2)
    x = -50.0 + 1e-4 * torch.randn(128, 256, generator=g)
    with accel.numpy_only():
        r = _layer1(_identity_net(256, nn.Tanh), x)
    assert r["pre_mean"] == pytest.approx(x.double().mean().item(), rel=1e-12)
    assert r["pre_std"] == pytest.approx(_std64(x), rel=1e-6)
    assert r["act_std"] == pytest.approx(_std64(torch.tanh(x)), rel=1e-5)
    # and a mean small against the std keeps its float64 precision there (float32 x - c)
    x = 1e-3 + torch.randn(128, 256, generator=g)
    with accel.numpy_only():
        r = _layer1(_identity_net(256, nn.Tanh), x)
    assert r["pre_mean"] == pytest.approx(x.double().mean().item(), rel=1e-9)
    assert r["pre_std"] == pytest.approx(_std64(x), rel=1e-6)
    # an infinite first entry (the shift): the mean is inf, as the entries' own
    model = _identity_net(256, nn.Tanh)
    with torch.no_grad():
        model[0].bias[0] = float("inf")
    with accel.numpy_only():
        r = _layer1(model, x)
    assert r["pre_mean"] == float("inf")
    # entries of both signs near float32's limit: x - c must not overflow (std 3.4e38 here)
    x = torch.full((128, 256), 3.0e38)
    x[:, 1::2] = -3.0e38
    x[0, 0] = -3.4e38
    with accel.numpy_only():
        r = _layer1(_identity_net(256, nn.Tanh), x)
    assert r["pre_std"] == pytest.approx(_std64(x), rel=1e-6)


def test_a_watch_records_the_std_of_outputs_far_from_zero_on_the_torch_path():
    g = torch.Generator().manual_seed(3)
    x = 1000.0 + 1e-3 * torch.randn(128, 256, generator=g)
    model = _identity_net(256, nn.ReLU)
    with accel.numpy_only(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dlt.Watch(model, every=1, theory=False) as watch:
            loss = nn.functional.cross_entropy(model(x), torch.zeros(128, dtype=torch.long))
            loss.backward()
            watch.step(loss)
    f = watch.frame()
    got = f[(f.layer == 1) & (f.quantity == "pre_std")]["value"].iloc[0]
    assert got == pytest.approx(_std64(x), rel=1e-6)


def test_float32_outputs_near_float32s_limit_have_their_mean_and_std_on_the_kernels_path():
    # std 3e37 (an exploding float32 net, entries below 3.4e38): the compiled kernels' float32
    # block sums overflowed to inf - inf, and pre_mean/pre_std read NaN (the torch operations
    # and a float64 computation: -4.8e35 and 3.0e37)
    pytest.importorskip("numba")
    if not accel.available():
        pytest.skip("compiled kernels disabled")
    g = torch.Generator().manual_seed(4)
    x = 3e37 * torch.randn(64, 64, generator=g)
    r = _layer1(_identity_net(64, nn.Tanh), x)
    assert r["pre_mean"] == pytest.approx(x.double().mean().item(), rel=1e-9)
    assert r["pre_std"] == pytest.approx(_std64(x), rel=1e-9)
    assert r["act_std"] == pytest.approx(_std64(torch.tanh(x)), rel=1e-9)


@pytest.mark.parametrize("torch_ops", [False, True])
def test_a_constant_layer_output_has_std_exactly_zero(torch_ops):
    # bias 3.7 (or 1000.3) on zero weights: every entry equal; the kernels' path summed again
    # around the float32 sums' rounded mean and read pre_std 7e-15 (3.7) and 1e-10-ish (1000.3)
    # where the NumPy probes (and a float64 computation) give 0
    for value in (3.7, 1000.3):
        x = torch.full((96, 200), value)
        ctx = accel.numpy_only() if torch_ops else warnings.catch_warnings()
        with ctx:
            r = _layer1(_identity_net(200, nn.Tanh), x)
        assert r["pre_mean"] == pytest.approx(x.double().mean().item(), rel=1e-15)
        assert (r["pre_std"], r["act_std"]) == (0.0, 0.0), value
