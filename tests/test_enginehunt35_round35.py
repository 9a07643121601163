"""Round 35 (enginehunt35): the NumPy engine against PyTorch on inputs not tried before."""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.layers import Activation, Dense, Sequential


def test_dense_takes_leading_dimensions_as_torch_linear_does() -> None:
    """``nn.Linear`` maps (*, in) to (*, out); depthlab's Dense forward did too, but its backward
    crashed (matmul core-dimension mismatch) on a (2, 5, 4) input."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    seq = Sequential([Dense(4, 3, dtype="float64", rng=1), Activation("tanh"),
                      Dense(3, 2, dtype="float64", rng=2)])
    x = rng.standard_normal((2, 5, 4))
    gy = rng.standard_normal((2, 5, 2))
    out = seq.forward(x.copy())
    gx = seq.backward(gy.copy())
    d1, d2 = seq.layers[0], seq.layers[2]
    lin1 = torch.nn.Linear(4, 3, dtype=torch.float64)
    lin2 = torch.nn.Linear(3, 2, dtype=torch.float64)
    with torch.no_grad():
        for lin, d in ((lin1, d1), (lin2, d2)):
            lin.weight.copy_(torch.from_numpy(d.W.value.T.copy()))
            lin.bias.copy_(torch.from_numpy(d.b.value.copy()))
    tx = torch.tensor(x, requires_grad=True)
    tout = lin2(torch.tanh(lin1(tx)))
    tout.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-12, atol=1e-14)
    for d, lin in ((d1, lin1), (d2, lin2)):
        np.testing.assert_allclose(d.W.grad, lin.weight.grad.numpy().T, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(d.b.grad, lin.bias.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_from_torch_reads_the_module_a_wrapper_holds() -> None:
    """``nn.DataParallel(model)`` (and ``torch.compile(model)``, not run here: importing
    torch._dynamo takes seconds) computes what the model it holds computes, with its
    parameters: from_torch refused it as 'cannot express the model itself (DataParallel)'."""
    torch = pytest.importorskip("torch")
    from depthlab.bridge import from_torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    net = from_torch(torch.nn.DataParallel(model))
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.predict(x), expected, rtol=1e-5, atol=1e-6)
    assert [type(la).__name__ for la in net.layers] == ["Dense", "Activation", "Dense"]


def test_batchnorm_refuses_an_input_of_another_width_or_rank() -> None:
    """BatchNorm(4) in eval mode broadcast a (3, 1) input against its 4 statistics and
    returned a (3, 4) output (torch: 'running_mean should contain 1 elements not 4'); a
    (3, 5) or (2, 5, 4) input in training was a NumPy broadcast/einsum message."""
    from depthlab.layers import BatchNorm

    bn = BatchNorm(4, dtype="float64")
    bn.forward(np.random.default_rng(0).standard_normal((3, 4)))  # running statistics set
    for x, training in ((np.ones((3, 1)), False), (np.ones((3, 5)), True),
                        (np.ones((2, 5, 4)), True), (np.ones((2, 5, 4)), False)):
        with pytest.raises(ValueError, match=r"expected \(batch, 4\)") as info:
            bn.forward(x, training=training)
        assert str(x.shape) in str(info.value)


def test_one_layer_object_used_twice_is_refused() -> None:
    """torch reuses a stateless module (one nn.Tanh at two places) correctly; a depthlab layer
    keeps its forward's values for backward, so one Activation object at two places gave the
    first place the second's values: dL/dW of the first Dense -0.8177 where finite
    differences give -0.8570, silently."""
    from depthlab.layers import Residual
    from depthlab.network import Network

    act = Activation("tanh")

    def dense(i: int, o: int) -> Dense:
        return Dense(i, o, dtype="float64", rng=1)

    with pytest.raises(ValueError, match=r"layers\[3\].*same.*layers\[1\]") as info:
        Network([dense(3, 4), act, dense(4, 4), act, dense(4, 2)], n_inputs=3)
    assert "Activation('tanh')" in str(info.value)
    with pytest.raises(ValueError, match="same"):
        Network([dense(3, 4), act, Residual([act, dense(4, 4)]), dense(4, 2)], n_inputs=3)


def test_standardize_refuses_an_input_of_another_width() -> None:
    """Standardize(mean, std) of 3 features broadcast a (2, 1) input into a (2, 3) output; a
    fitted one said 'apply_standardizer: mean of shape (3,) ... expected 1 finite numbers'."""
    from depthlab.layers import Standardize

    fitted = Standardize.fit(np.random.default_rng(0).standard_normal((5, 3)), "float64")
    given = Standardize(np.zeros(3), np.ones(3))
    for layer in (fitted, given):
        for x in (np.ones((2, 1)), np.ones((2, 4))):
            with pytest.raises(ValueError, match=r"expected \(batch, 3\)") as info:
                layer.forward(x)
            assert str(x.shape) in str(info.value)


def test_one_weight_in_two_layers_is_refused() -> None:
    """d2.W = d1.W (tied weights): each backward overwrote W.grad, so the shared weight got the
    first layer's gradient only (torch sums both uses); refused naming the weight."""
    from depthlab.network import Network

    d1, d2 = Dense(4, 4, dtype="float64", rng=1), Dense(4, 4, dtype="float64", rng=2)
    d2.W = d1.W
    with pytest.raises(ValueError, match=r"layers\[2\].*same.*layers\[0\]"):
        Network([d1, Activation("tanh"), d2], n_inputs=4)
