"""Round 10: engine activations against torch autograd at the last bits and at inf/NaN."""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.activations import get_activation

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["tanh", "penalized_tanh"])
def test_tanh_derivative_near_saturation_matches_torch_to_an_ulp(dtype, name):
    # 1 - a*a lost the last bits of a*a: float32 tanh'(5) was 1.8156e-4 against torch's
    # 1.8155e-4 (8.6e-5 relative over [-12, 12]; float64 3.7e-9). Compared where NumPy's and
    # torch's tanh agree, so only the derivative formula is tested.
    s = np.linspace(-12, 12, 4001).astype(dtype)
    x = torch.tensor(s, requires_grad=True)
    a = torch.tanh(x)
    (a if name == "tanh" else torch.where(x > 0, a, 0.5 * a)).sum().backward()
    want = x.grad.numpy()
    fn = get_activation("penalized_tanh", a=0.5) if name == "penalized_tanh" else get_activation(
        name)
    got = fn.derivative(s, fn.forward(s))
    assert got.dtype == dtype
    same = (np.tanh(s) == a.detach().numpy()) & (want != 0)
    assert same.mean() > 0.5
    rel = np.abs(got[same] / want[same] - 1)
    assert rel.max() <= 2 * np.finfo(dtype).eps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_zeroes_an_infinite_gradient_at_inactive_units_as_torch(dtype):
    # torch's threshold_backward selects: 0 where s <= 0 whatever the incoming gradient;
    # grad *= (s > 0) made inf * 0 = NaN there (an overflowed gradient of an exploding net)
    s = np.array([-2.0, -0.0, 0.0, 3.0, np.nan, -np.inf, np.inf, 1.0], dtype)
    g = np.array([np.inf, np.inf, np.nan, np.inf, 2.0, -np.inf, 1.0, np.nan], dtype)
    x = torch.tensor(s, requires_grad=True)
    F.relu(x).backward(torch.tensor(g))
    fn = get_activation("relu")
    with np.errstate(invalid="ignore"):  # inf * 0 before the fix-up (the trainer ignores it)
        got = fn.backward(s, fn.forward(s), g.copy())
    np.testing.assert_array_equal(got, x.grad.numpy())  # NaN where torch's is NaN, only there
    assert got.dtype == dtype
    np.testing.assert_array_equal(fn.derivative(s, fn.forward(s)),
                                  [0, 0, 0, 1, 1, 0, 1, 1])


@pytest.mark.parametrize("name, kwargs, torch_fn", [
    ("relu", {}, F.relu),
    ("leaky_relu", {}, F.leaky_relu),
    ("leaky_relu", {"negative_slope": -0.5}, lambda x: F.leaky_relu(x, -0.5)),
    ("leaky_relu", {"negative_slope": 2.0}, lambda x: F.leaky_relu(x, 2.0)),
    ("elu", {}, F.elu),
    ("elu", {"alpha": -0.5}, lambda x: F.elu(x, -0.5)),
    ("selu", {}, F.selu),
])
def test_piecewise_derivative_at_nan_follows_torch(name, kwargs, torch_fn):
    # torch picks the branch with one comparison (relu, elu: s <= 0; leaky_relu: s > 0), so
    # a NaN input gets the other branch's slope; the engine gave 0 (relu, leaky) or NaN (elu)
    s = np.array([np.nan, -1.0, 0.0, 2.0, -np.inf], np.float64)
    x = torch.tensor(s, requires_grad=True)
    torch_fn(x).sum().backward()
    fn = get_activation(name, **kwargs)
    a = fn.forward(s)
    np.testing.assert_allclose(fn.derivative(s, a), x.grad.numpy(), rtol=1e-15, atol=0)
    np.testing.assert_allclose(fn.backward(s, a, np.ones_like(s)), x.grad.numpy(),
                               rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.1, 0.123, 0.3, 0.45, 0.5, 0.7, 0.9])
def test_dropout_scale_is_torchs_to_the_last_bit(dtype, p):
    # torch scales the kept units by noise.div_(1 - p), i.e. 1 / (1 - p) with 1 - p rounded to
    # the dtype first; the engine's float32 m * (1 / (1 - p)) was an ulp off (p = 0.45:
    # 1.8181819 vs torch's 1.8181817)
    from depthlab.layers import Dropout

    tdt = torch.float32 if dtype == np.float32 else torch.float64
    with torch.random.fork_rng():  # the global torch RNG is left as it was
        torch.manual_seed(0)
        y = F.dropout(torch.ones(2000, dtype=tdt), p, training=True)
    want = y[y != 0].unique().numpy()
    layer = Dropout(p, rng=0)
    x = np.full((40, 50), 3.0, dtype)
    out = layer.forward(x, training=True)
    assert out.dtype == dtype
    np.testing.assert_array_equal(np.unique(layer.mask[layer.mask != 0]), want)
    grad = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(np.unique(grad[grad != 0]), want)
    np.testing.assert_array_equal(out[out != 0], dtype(3.0) * want[0])


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_an_activation_after_dropout_keeps_its_own_gradient_for_the_probes(dropout):
    # mlp(residual=True) without batch norm: a branch is act -> Dense -> Dropout -> act ->
    # Dense. Dropout's in-place backward ran on the second act's grad_s: the probes read
    # dL/ds times the mask / (1 - p). (The first act's input is the residual sum: its grad_s
    # is that tensor's gradient, skip included, as torch's s.grad.)
    import depthlab as dl
    from depthlab.bridge.torch_bridge import to_torch
    from depthlab.layers import Activation, Dropout
    from depthlab.losses import get_loss

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    net = dl.mlp([4, 6, 6, 6, 3], residual=True, activation="tanh", dropout=dropout,
                 dtype="float64", seed=1)
    loss = get_loss("cross_entropy")
    loss.forward(net.forward(x, training=True), y)
    net.backward(loss.backward())
    acts = [la for la in net.leaves() if isinstance(la, Activation)]
    masks = [la.mask for la in net.leaves() if isinstance(la, Dropout)]

    class Mask(torch.nn.Module):  # the engine's dropout mask, replayed
        def __init__(self, m):
            super().__init__()
            self.m = torch.tensor(m)

        def forward(self, t):
            return t * self.m

    tnet = to_torch(net)
    drops = [(parent, name) for parent in tnet.modules()
             for name, child in parent.named_children() if isinstance(child, torch.nn.Dropout)]
    assert len(drops) == len(masks)
    for (parent, name), m in zip(drops, masks):
        setattr(parent, name, Mask(m))
    inputs = []

    def keep(_mod, inp, _out):
        inp[0].retain_grad()
        inputs.append(inp[0])

    for m in tnet.modules():
        if isinstance(m, torch.nn.Tanh):
            m.register_forward_hook(keep)
    F.cross_entropy(tnet(torch.tensor(x)), torch.tensor(y)).backward()
    assert len(inputs) == len(acts) == 5
    for act, s in zip(acts, inputs):
        np.testing.assert_allclose(act.grad_s, s.grad.numpy(), rtol=1e-12, atol=1e-15,
                                   err_msg=act.name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ema_start", ["zero", "first_batch"])
def test_batchnorm_momentum_none_is_torchs_cumulative_average(dtype, ema_start):
    # torch's BatchNorm1d(momentum=None) averages the batch statistics with factor
    # 1 / num_batches_tracked; BatchNorm(momentum=None) was a TypeError
    from depthlab.bridge.torch_bridge import from_torch, to_torch
    from depthlab.layers import BatchNorm

    tdt = torch.float32 if dtype == np.float32 else torch.float64
    rng = np.random.default_rng(3)
    bn = BatchNorm(4, momentum=None, ema_start=ema_start, dtype=dtype)
    ref = torch.nn.BatchNorm1d(4, momentum=None, dtype=tdt)
    batches = [(rng.standard_normal((m, 4)) * 2 + 5).astype(dtype) for m in (3, 7, 2, 5, 4)]
    for x in batches:
        bn.forward(x, training=True)
        ref(torch.tensor(x))
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(bn.running_mean, ref.running_mean.numpy(), rtol=tol)
    np.testing.assert_allclose(bn.running_var, ref.running_var.numpy(), rtol=tol)
    np.testing.assert_allclose(bn.running_mean, np.mean([x.mean(0) for x in batches], 0),
                               rtol=10 * tol)
    assert bn.running_mean.dtype == dtype and "momentum=None" in repr(bn)
    x = batches[0]
    np.testing.assert_allclose(bn.forward(x, training=False),
                               ref.eval()(torch.tensor(x)).detach().numpy(), rtol=tol,
                               atol=tol)
    # the bridge keeps it both ways, and the statistics go on averaging as torch's
    back = from_torch(torch.nn.Sequential(torch.nn.Linear(4, 4, dtype=tdt), ref.train()))
    assert back.batchnorms()[0].momentum is None
    assert to_torch(back)[1].momentum is None
    extra = (rng.standard_normal((6, 4)) * 3).astype(dtype)
    lin = back.dense_layers()[0]
    back.forward(extra, training=True)
    ref(torch.tensor(extra @ lin.W.value + lin.b.value))
    np.testing.assert_allclose(back.batchnorms()[0].running_var, ref.running_var.numpy(),
                               rtol=10 * tol)


def test_batchnorm_momentum_out_of_range_still_names_none_as_accepted():
    from depthlab.layers import BatchNorm

    with pytest.raises(ValueError, match=r"momentum must be in \(0, 1\], got 0 \(or None"):
        BatchNorm(3, momentum=0)
    with pytest.raises(TypeError, match="momentum must be a real number"):
        BatchNorm(3, momentum="0.1")
