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


def _sequences(n: int = 96, t: int = 8, f: int = 4, seed: int = 0):
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

    d = dlt.doctor(lambda: _RNNClassifier(1.0), _sequences(), steps=10, batch_size=32,
                   optimizer=("sgd", {"lr": 0.05}), verify=False)
    f = d.finding("init_mismatch")
    assert f is not None, d.kinds
    assert 20 < f.evidence["variance_ratio"] < 45  # 32 expected (Var 1 vs Glorot's 1/32)
    assert "layer 1" in f.message and "glorot" in f.message
    # PyTorch's default recurrent init (Var 1/(3 H), below Glorot's) is still not judged
    d = dlt.doctor(lambda: _RNNClassifier(1.0 / (3 * 32) ** 0.5), _sequences(), steps=10,
                   batch_size=32, optimizer=("sgd", {"lr": 0.05}), verify=False)
    assert d.finding("init_mismatch") is None, d.kinds
