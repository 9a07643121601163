"""Round 25 (lead): predict's refusal of an activation applied to another operation's result
names that operation, not only the activation (``tanh(h - h.mean(0))`` was refused as
'computed by the torch operation 'Tanh'', as if tanh were unsupported)."""
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
import depthlab.torch as dlt  # noqa: E402


class _Centered(nn.Module):
    def __init__(self, act, op):
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 4)
        self.act, self.op = act, op

    def forward(self, x):
        return self.b(self.act(self.op(self.a(x))))


@pytest.mark.parametrize(("act", "op", "fn", "under"), [
    (torch.tanh, lambda h: h - h.mean(0), "tanh", "Sub"),
    (torch.relu, lambda h: h * 2, "relu", "Mul"),
    (torch.sigmoid, lambda h: h.flatten(1) + 1, "sigmoid", "Add"),
])
def test_predict_names_the_operation_under_a_functional_activation(act, op, fn, under):
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=rf"the input of 'b' is not the previous layer's output "
                                         rf".*; it is the output of the function {fn} applied "
                                         rf"to the result of the torch operation '{under}' "
                                         rf"\(autograd node {under}Backward0\)"):
        dlt.predict(_Centered(act, op), torch.randn(32, 8))


def test_predict_still_models_a_functional_activation_of_a_layer_output():
    torch.manual_seed(0)
    table = dlt.predict(_Centered(torch.tanh, lambda h: h), torch.randn(32, 8))
    assert "act_std" in set(table.quantity[table.layer == 1])


# -- the update ratio of float32 weights far from 1 (NumPy engine) ----------------------------

@pytest.mark.parametrize("scale", [1e35, 1e-25, 1.0])
@pytest.mark.parametrize("path", ["kernels", "numpy"])
def test_the_update_ratio_of_float32_weights_far_from_one_is_finite_and_exact(scale, path):
    """float32 weights of 1e35 (a depth-50 identity net with N(0, 1) weights after one step,
    found in the playground) squared past float32's range: the recorder's ``update_ratio`` was
    NaN (inf / inf); weights of 1e-25 squared to 0 in float32 blocks and read a norm of 0. Both
    paths now sum in float64 where the float32 sum overflowed or underflowed."""
    import contextlib

    import numpy as np

    from depthlab.probes import accel
    from depthlab.probes.recorder import update_norms

    if path == "kernels" and accel.kernels() is None:
        pytest.skip("the compiled kernels (depthlab[fast]) are not installed")
    rng = np.random.default_rng(0)
    w0 = (rng.standard_normal((64, 300)) * scale).astype(np.float32)
    w = (w0.astype(np.float64) + rng.standard_normal(w0.shape) * scale * 1e-2).astype(np.float32)
    want0 = np.linalg.norm(w0.astype(np.float64))
    want1 = np.linalg.norm(w.astype(np.float64) - w0.astype(np.float64))
    with accel.numpy_only() if path == "numpy" else contextlib.nullcontext():
        n0, n1 = update_norms(w, w0.copy())
    assert np.isfinite(n0) and np.isfinite(n1)
    assert n0 == pytest.approx(want0, rel=1e-5)
    assert n1 == pytest.approx(want1, rel=1e-4)
    assert n1 / n0 == pytest.approx(want1 / want0, rel=1e-4)


# -- a loss non-finite before any update (NumPy doctor) ---------------------------------------

def test_a_loss_non_finite_before_any_update_prescribes_the_initializer_not_the_lr():
    """A float32 ReLU net with N(0, 1) weights whose forward overflows on the first mini-batch
    diverged 'at step 1 with learning rate 0.01', cured by '10x smaller learning rate' (verified:
    did not help; the playground's own note says the learning rate plays no part there). The
    finding now says so and prescribes the activation's initializer, as the torch doctor tries
    re-initializations first."""
    import numpy as np

    import depthlab as dl

    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 32)).astype(np.float32)
    y = rng.integers(0, 3, 96)
    net = dl.mlp([32] + [256] * 40 + [3], activation="relu", init="normal", seed=0)
    d = dl.doctor(net, (x, y), steps=3, batch_size=32)
    div = next(f for f in d.findings if f.kind == "divergence")
    assert div.prescription == {"init": "he_normal"}, div
    assert "before any update" in div.message and "plays no part" in div.message
    assert div.evidence["before_update"] is True
    healthy = dl.doctor(dl.mlp([32, 64, 3], activation="relu", init="he_normal", seed=0),
                        (x * 1e3, y), steps=30, lr=50.0, batch_size=32)
    late = [f for f in healthy.findings if f.kind == "divergence"]
    # after updates: the lr, scaled to the first update (5.4e3x the weights' norm: 1e5x smaller,
    # which trains; lr/10 diverged too)
    assert late and late[0].prescription == {"lr": 0.0005}, healthy
    assert late[0].evidence["first_update_ratio"] > 1e3


def test_the_at_init_cure_falls_back_to_batch_norm_then_to_none():
    from depthlab.diagnosis import prescriptions as rx

    assert rx.for_divergence_at_init("tanh", {}, None)[0] == {"init": "glorot_uniform"}
    assert rx.for_divergence_at_init("relu", {}, "he_normal")[0] == {"batchnorm": True}
    assert rx.for_divergence_at_init("relu", {"batchnorm": True}, "he_normal") is None
