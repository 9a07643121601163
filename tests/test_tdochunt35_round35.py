"""Round 35 (tdochunt35): the torch doctor on known-answer models nobody tried before."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _memory_task(n: int, steps: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of 8 features whose label is the sign of the first step's first feature."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, steps, 8)).astype(np.float32)
    return s, (s[:, 0, 0] > 0).astype(np.int64)


class _Recurrent(nn.Module):
    def __init__(self, std: float) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, 2)
        for w in (self.rnn.weight_ih_l0, self.rnn.weight_hh_l0):
            nn.init.normal_(w, 0.0, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def test_lsuv_cure_leaves_a_recurrent_layers_weights_at_their_orthogonal_scale():
    # An LSTM(8, 16) drawn from N(0, 1): init_mismatch, 8x Glorot's upper variance 1/8. LSUV
    # divides a layer's weights by its output's std until the output variance is 1; an
    # LSTM's output h = o * tanh(c) lies in (-1, 1) and its variance stays below 1 however
    # large the weights: the cure multiplied them up pass after pass, its verification read
    # 'init variance factor 8 -> 1.8e+08'. The recurrent layer keeps LSUV's orthogonal
    # matrices (gain 1): Var(W_ih) = Var(W_hh) = 1/64, inside Glorot's band [1/64, 1/8].
    x, y = _memory_task(160)
    diag = dlt.doctor(lambda: _Recurrent(1.0), (x[:128], y[:128], x[128:], y[128:]), steps=4,
                      batch_size=32, verify=True, max_cures=2)
    lsuv = [v for v in diag.verifications
            if v.kind == "init_mismatch" and v.prescription.get("init") == "lsuv"]
    assert lsuv, [(v.kind, v.prescription) for v in diag.verifications]
    torch.manual_seed(0)
    w = torch.cat([p.detach().double().flatten() for p in _Recurrent(1.0).rnn.parameters()
                   if p.dim() == 2])
    assert lsuv[0].metric_before == pytest.approx(float(w.var()) * 8, rel=0.02)
    assert lsuv[0].resolved and not lsuv[0].metric_after > 2.0, lsuv[0].metric_after


class _ConvLSTM(nn.Module):
    """A CRNN: Conv1d, a ReLU applied in the forward, channels moved last into an LSTM."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(8, 16, 3, padding=1)
        self.lstm = nn.LSTM(16, 16, batch_first=True)
        self.head = nn.Linear(16, 2)
        for w in (self.lstm.weight_ih_l0, self.lstm.weight_hh_l0):
            nn.init.normal_(w, 0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x.transpose(1, 2)))
        out, _ = self.lstm(h.transpose(1, 2))
        return self.head(out[:, -1])


def test_a_functional_relu_before_a_transpose_is_the_conv_layers_activation():
    # torch.relu(conv(x)).transpose(1, 2): the LSTM reads the ReLU's entries in another order,
    # and the entry-by-entry match read the conv as linear: the network had no activation,
    # so no initialization was judged, the LSTM drawn from N(0, 1) (16x Glorot's 1/16) too.
    x, y = _memory_task(96)
    diag = dlt.doctor(_ConvLSTM, (x[:64], y[:64], x[64:], y[64:]), steps=3, batch_size=32,
                      verify=False)
    found = {f.kind: f for f in diag.findings}
    assert "init_mismatch" in found, [f.kind for f in diag.findings]
    assert found["init_mismatch"].layers == [2]
    torch.manual_seed(0)
    w = torch.cat([p.detach().double().flatten() for p in _ConvLSTM().lstm.parameters()
                   if p.dim() == 2])
    assert found["init_mismatch"].evidence["metric"] == pytest.approx(float(w.var()) * 16,
                                                                      rel=0.02)
