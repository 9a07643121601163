"""Round 33 (torchhunt33): dlt.probe, dlt.Watch and dlt.predict on models not used before."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _prelu_net(per_channel: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.PReLU(per_channel), nn.Linear(32, 32),
                         nn.PReLU(per_channel), nn.Linear(32, 4)).double()


def test_predict_takes_a_per_channel_prelu_whose_slopes_are_all_equal():
    """nn.PReLU(C) at its init has C equal slopes (0.25): one leaky ReLU, as nn.PReLU() is.
    predict refused it ("has a learned slope per channel (32 of them)") and so the Watch of
    such a model had no theory; the prediction is that of the single-slope model."""
    x = torch.randn(64, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 4, (64,), generator=torch.Generator().manual_seed(2))
    one = dlt.predict(_prelu_net(1), x, y, nn.CrossEntropyLoss())
    per = dlt.predict(_prelu_net(32), x, y, nn.CrossEntropyLoss())
    assert list(per.quantity) == list(one.quantity)
    assert per.predicted.to_numpy() == pytest.approx(one.predicted.to_numpy(), rel=1e-9)
    assert per.value.to_numpy() == pytest.approx(one.value.to_numpy(), rel=1e-9)
    model = _prelu_net(32)
    with torch.no_grad():  # slopes that differ stay refused by name
        model[1].weight[0] = 0.5
    with pytest.raises(ValueError, match=r"'1' \(PReLU\) has a learned slope per channel"):
        dlt.predict(model, x, y, nn.CrossEntropyLoss())


class _GRUHead(nn.Module):
    """A sequence model that returns its scores with the GRU's last state, (scores, h_n),
    as nn.GRU/LSTM/MultiheadAttention return tuples."""

    def __init__(self) -> None:
        super().__init__()
        self.gru, self.fc = nn.GRU(5, 3, batch_first=True), nn.Linear(5, 3)

    def forward(self, x):
        out, h = self.gru(x)
        return out, h


class _TupleMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        return self.fc2(h), h


class _DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        h = self.fc(x)
        return {"logits": h, "h": h}


@pytest.mark.parametrize("call", ["probe", "predict"])
def test_a_tuple_output_given_to_a_torch_loss_is_one_line_naming_the_parts(call):
    """A model whose output is a tuple or dict, given a torch loss that takes one tensor, got
    torch's "cross_entropy_loss(): argument 'input' (position 1) must be Tensor, not tuple",
    which named neither the model's output nor the remedy (a loss that picks the part)."""
    torch.manual_seed(0)
    with pytest.raises(TypeError, match=r"the model's output is a tuple of 2 tensors "
                       r"\(shapes \(4, 3\), \(4, 8\)\), but CrossEntropyLoss takes one "
                       r"tensor.*lambda out, y: .*\(out\[0\], y\)"):
        getattr(dlt, call)(_TupleMLP(), torch.randn(4, 5), torch.randint(0, 3, (4,)),
                           nn.CrossEntropyLoss())
    if call == "probe":
        with pytest.raises(TypeError, match=r"a tuple of 2 tensors \(shapes \(4, 6, 3\), "
                           r"\(1, 4, 3\)\)"):
            dlt.probe(_GRUHead(), torch.randn(4, 6, 5), torch.randint(0, 3, (4, 6)),
                      nn.CrossEntropyLoss())
        with pytest.raises(TypeError, match=r"a dict with keys \['logits', 'h'\].*"
                           r"F.cross_entropy.*\(out\['logits'\], y\)"):
            dlt.probe(_DictOut(), torch.randn(4, 5), torch.randint(0, 3, (4,)),
                      torch.nn.functional.cross_entropy)


def test_the_approximation_note_of_a_groupnorm_cnn_under_a_pool_names_its_group_size():
    """GroupNorm(C, C) (one channel per group) -> ReLU -> global average pool: the measured
    grad_pre_std is about 0.42x the prediction (4 seeds, 0.41-0.43x at every layer), where
    the note said "GroupNorm CNNs with a global average pool: grad_pre_std 0.7-0.9x".
    (gnpool33: predict models the pooled gradient now, 0.99-1.06x at one channel per group;
    the note states that range.)"""
    torch.manual_seed(0)
    c = 16
    model = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.GroupNorm(c, c), nn.ReLU(),
                          nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(c // 2, c), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 3))
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 3, (8,))
    note = dlt.predict(model, x, y, nn.CrossEntropyLoss()).attrs["approximation"]
    assert "0.96-1.06x the prediction at 1 channel per group" in note  # (torchhunt36)
    assert "this model's GroupNorm has 1 channel per group" in note
