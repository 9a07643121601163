"""Round-32 regression tests for the torch doctor (``dlt.doctor``, ``depthlab doctor --torch``)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.cli import main  # noqa: E402


def _blobs(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 4, generator=g) + 2.0 * F.one_hot(y, 4).float()
    return x, y


def _raw_scores() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


class _LogProbs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _raw_scores()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.net(x), dim=1)


def test_nll_loss_on_raw_scores_is_refused_not_trained_towards_minus_infinity():
    # NLLLoss reads log-probabilities: on raw scores -out[y] is unbounded below (the CLI's
    # --loss nll on a logits CNN trained to a train loss of -1.8e19 and was diagnosed
    # dead_relu / bn_drift, as if that run meant anything)
    x, y = _blobs()
    with pytest.raises(ValueError, match=r"NLLLoss takes log-probabilities.*LogSoftmax"):
        dlt.doctor(_raw_scores, (x, y), loss_fn=nn.NLLLoss(), steps=3, verify=False)
    with pytest.raises(ValueError, match=r"F\.nll_loss takes log-probabilities"):
        dlt.doctor(_raw_scores, (x, y), loss_fn=F.nll_loss, steps=3, verify=False)
    # log-probabilities (here log_softmax in the forward) train as before
    d = dlt.doctor(_LogProbs, (x, y), loss_fn="nll", steps=3, verify=False)
    assert d.baseline["train_loss"] > 0


def test_cli_nll_on_a_logits_model_is_one_line_and_exit_2(tmp_path, capsys):
    f = tmp_path / "m.py"
    f.write_text("from torch import nn\n"
                 "def make():\n"
                 "    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))\n")
    rc = main(["doctor", "--torch", f"{f}:make", "--data", "digits", "--n", "200",
               "--steps", "3", "--loss", "nll", "--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "log-probabilities" in err[0], err
