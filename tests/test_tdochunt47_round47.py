"""Round 47 (tdochunt47): the torch doctor on models whose loss is NaN from the first step for a
reason no cure touches (a forward that computes NaN itself, a NaN weight), said in one line
before any training instead of 'divergence ... the initial weights overflow'."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from helpers.cli import one_blas_thread, run_cli
from torch import nn

import depthlab.torch as dlt


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 8)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


class SqrtInForward(nn.Module):
    """``head(sqrt(lin(x)))``: the square root of the negative pre-activations is NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.head = nn.Linear(8, 16), nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.sqrt(self.lin(x)))


class Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)


def log_module():
    return nn.Sequential(nn.Linear(8, 16), Log(), nn.Linear(16, 2))


def nan_weight():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    with torch.no_grad():
        model[2].weight[1, 3] = float("nan")
    return model


@pytest.mark.parametrize("verify", [False, True])
def test_a_forward_that_computes_nan_is_refused_in_one_line(blobs, verify):
    # old code: a "divergence" finding, "the initial weights overflow", {"init": "matched"}
    with pytest.raises(ValueError, match=r"the model's forward computes NaN or infinity "
                                         r"itself .*not weights that overflow") as e:
        dlt.doctor(SqrtInForward, blobs, steps=10, batch_size=32, verify=verify)
    assert "\n" not in str(e.value) and "largest 1.7" in str(e.value)


def test_the_module_that_computes_nan_is_named(blobs):
    with pytest.raises(ValueError, match=r"module '1' computes NaN or infinity itself"):
        dlt.doctor(log_module, blobs, steps=10, batch_size=32, verify=False)


def test_a_nan_weight_is_named_in_the_divergence_finding_not_called_an_overflow(blobs):
    # old code: "... before any update: the initial weights overflow" (nothing overflowed)
    diag = dlt.doctor(nan_weight, blobs, steps=10, batch_size=32, max_cures=1)
    f = diag.finding("divergence")
    assert f is not None and f.evidence["step"] == 1, str(diag)
    assert f.evidence["nonfinite_parameter"] == "2.weight"
    assert "Parameter '2.weight' holds 1 non-finite value(s) of 32 before any update: " \
        "nothing overflowed" in f.message and "overflow." not in f.message
    assert "overflow" not in f.prescription_text and "not finite" in f.prescription_text
    (v,) = diag.verifications  # a re-initialization replaces the NaN: verified, it helps
    assert "init" in v.prescription and v.helped, str(diag)


def test_weights_that_overflow_float32_at_init_still_get_the_divergence_finding(blobs):
    # float64 holds the activations (about 1e44 at the output): the weights' overflow, whose
    # cure is a re-initialization, not a refusal
    def make():
        mods: list[nn.Module] = []
        for i in range(20):
            mods += [nn.Linear(8 if i == 0 else 64, 64), nn.ReLU()]
        model = nn.Sequential(*mods, nn.Linear(64, 2))
        for m in model:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 30.0)
        return model

    diag = dlt.doctor(make, blobs, steps=10, batch_size=32, verify=False)
    f = diag.finding("divergence")
    assert f is not None and f.evidence["step"] == 1, str(diag)
    assert f.prescription.get("init") in ("matched", "lsuv")


def test_the_cli_refuses_a_nan_forward_with_exit_2(tmp_path, capsys, monkeypatch):
    (tmp_path / "m.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin, self.head = nn.Linear(64, 16), nn.Linear(16, 10)

            def forward(self, x):
                return self.head(torch.sqrt(self.lin(x)))

        def make():
            return M()
    """))
    # `depthlab doctor` in this process (the message and the exit status are the subject, not
    # the process: a subprocess imported torch and depthlab anew, ~10 s of CPU)
    one_blas_thread(monkeypatch)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "doctor", "--torch", str(tmp_path / "m.py") + ":make",
                           "--data", "digits", "--steps", "5", "--out", tmp_path / "res")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "computes NaN or infinity itself" in lines[0], err


def test_the_numpy_doctor_names_a_nan_weight_not_an_overflow():
    import depthlab as dl

    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 8))
    net = dl.mlp([8, 16, 16, 2], "relu", "he_normal", seed=0)
    weight = next(p for p in net.parameters() if p.name == "dense2.W")
    weight.value[2, 5] = np.inf
    # old code: "divergence ... before any update, so the initial weights overflow", he_normal
    diag = dl.doctor(net, (x, (x[:, 0] > 0).astype(np.int64)), steps=10, lr=0.1, verify=False)
    f = diag.finding("divergence")
    assert f is not None and f.evidence["nonfinite_parameter"] == "dense2.W", str(diag)
    assert "Parameter 'dense2.W' holds 1 non-finite value(s) of 256 before any update" \
        in f.message
    assert "overflow " not in f.message and "overflow" not in f.prescription_text
    assert f.prescription.get("init")
