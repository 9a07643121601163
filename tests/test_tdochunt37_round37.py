"""Round 37 torch-doctor hunt (tdochunt37)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from depthlab.cli.common import UserError  # noqa: E402
from depthlab.cli.torch_doctor import load_factory  # noqa: E402


def test_cli_factory_name_typo_suggests_the_functions_in_the_file(tmp_path):
    """Before: "'models.py' has no 'make_modle'", no hint of the name meant."""
    f = tmp_path / "models.py"
    f.write_text("from torch import nn\nimport math\n"
                 "def make_model():\n    return nn.Linear(2, 2)\n"
                 "def make_cnn():\n    return nn.Linear(2, 2)\n")
    with pytest.raises(UserError, match=r"has no 'make_modle' \(did you mean 'make_model'\?\)"):
        load_factory(f"{f}:make_modle")
    with pytest.raises(UserError, match=r"has no 'zzz'; its functions: make_cnn, make_model$"):
        load_factory(f"{f}:zzz")


def _sequences(n: int = 64, t: int = 6, f: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, t, f, generator=g)
    return x, (x[:, -3:, 0].sum(1) > 0).long()


class _RNNClassifier(torch.nn.Module):
    def __init__(self, std: float) -> None:
        super().__init__()
        self.rnn = torch.nn.RNN(4, 32, batch_first=True)
        self.head = torch.nn.Linear(32, 2)
        torch.nn.init.normal_(self.rnn.weight_hh_l0, 0.0, std)  # weight_ih_l0 as PyTorch's

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def test_recurrent_matrix_too_large_is_an_init_mismatch():
    """Before: an nn.RNN(4, 32) whose weight_hh was N(0, 1), 32x Glorot's (chaotic), got no
    init finding: the pooled weight std was judged against weight_ih_l0's fans (4 -> 32),
    whose Glorot range allows 0.25. Each matrix is now judged for its own fans."""
    import depthlab.torch as dlt

    d = dlt.doctor(lambda: _RNNClassifier(1.0), _sequences(), steps=4, batch_size=32,
                   optimizer=("sgd", {"lr": 0.05}), verify=False)
    f = d.finding("init_mismatch")
    assert f is not None, d.kinds
    assert 20 < f.evidence["variance_ratio"] < 45  # 32 expected (Var 1 vs Glorot's 1/32)
    assert "layer 1" in f.message and "glorot" in f.message
    # PyTorch's default recurrent init (Var 1/(3 H), below Glorot's) is still not judged
    d = dlt.doctor(lambda: _RNNClassifier(1.0 / (3 * 32) ** 0.5), _sequences(), steps=4,
                   batch_size=32, optimizer=("sgd", {"lr": 0.05}), verify=False)
    assert d.finding("init_mismatch") is None, d.kinds


class _StemNormed(torch.nn.Module):
    """A BatchNorm after the first layer only, then 12 sigmoid layers of N(0, 1) weights."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Sigmoid())
        self.body = nn.Sequential(*[m for _ in range(12) for m in (nn.Linear(16, 16),
                                                                  nn.Sigmoid())])
        self.head = nn.Linear(16, 3)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 1.0)

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


def test_one_normalized_layer_does_not_rule_out_the_batchnorm_cure():
    """Before: one BatchNorm in the model (after the stem) dropped the batch-norm cure for a
    vanishing gradient through the 12 unnormalized sigmoid layers after it, which it would
    normalize (insert_batchnorm skips normalized layers)."""
    import depthlab.torch as dlt

    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 8, generator=g)
    y = x[:, :3].abs().argmax(1)  # 64 held out: batch norm's gradients read on 64 rows
    d = dlt.doctor(_StemNormed, (x[:96], y[:96], x[96:], y[96:]), steps=4, batch_size=32,
                   verify=True, max_cures=2)
    f = d.finding("vanishing_gradients")
    assert f is not None, d.kinds
    tried = [v.prescription for v in d.verifications if v.kind == "vanishing_gradients"]
    assert {"normalization": "batchnorm"} in tried, tried
