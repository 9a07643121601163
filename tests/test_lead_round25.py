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
