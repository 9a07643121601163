"""Round 9 (bridge): from_torch of an MLP that starts with nn.Flatten. Expected numbers are
torch's own outputs on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
tb = pytest.importorskip("depthlab.bridge.torch_bridge")


def test_a_leading_flatten_is_accepted_and_outputs_match_torch_on_images():
    """``nn.Flatten()`` (start_dim=1) in front of an MLP flattens each example, which is what
    depthlab does to images: the network has the Linear/activation layers only and gives
    torch's outputs on the flattened rows (it was refused: 'cannot express module 0')."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Flatten(),
                      nn.Linear(8, 3)).double()
    net = tb.from_torch(m)
    assert [type(la).__name__ for la in net.layers] == ["Dense", "Activation", "Dense"]
    assert net.n_inputs == 12
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    y_t = m(x).detach().numpy()
    y_n = net.forward(x.reshape(5, -1).numpy(), training=False)
    np.testing.assert_allclose(y_n, y_t, rtol=1e-14, atol=1e-15)
    back = tb.to_torch(net)  # and back: the same outputs on rows
    np.testing.assert_allclose(back(x.reshape(5, -1)).detach().numpy(), y_t, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("flat", [nn.Flatten(0), nn.Flatten(1, 2)])
def test_a_flatten_that_is_not_per_example_is_refused_by_name(flat):
    m = nn.Sequential(flat, nn.Linear(12, 3))
    with pytest.raises(TypeError, match=r"module '0' \(Flatten\(start_dim=") as e:
        tb.from_torch(m)
    assert "\n" not in str(e.value) and "start_dim=1, end_dim=-1" in str(e.value)


def test_complex_parameters_are_refused_not_cast_to_real():
    """A complex64 Linear was taken as float32 (complex tensors are not floating point, so the
    dtype check saw none) and its imaginary parts dropped: a network computing something else
    than the module, with only a ComplexWarning."""
    m = nn.Sequential(nn.Linear(3, 2, dtype=torch.complex64))
    with pytest.raises(TypeError, match="float32 or float64 parameters.*complex64") as e:
        tb.from_torch(m)
    assert "\n" not in str(e.value)


def test_parameters_on_the_meta_device_are_one_line_naming_them():
    """A model built on the meta device (shapes, no values) raised torch's bare
    NotImplementedError 'Cannot copy out of meta tensor; no data!'."""
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2, device="meta"))
    with pytest.raises(TypeError, match=r"cannot read '2\.weight': it is on the 'meta' device"):
        tb.from_torch(m)
