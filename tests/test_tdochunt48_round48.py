"""Round 48 (tdochunt48): the torch doctor on fine-tuned models (a frozen sigmoid backbone: the
mean shift judged on the layers training can change), on a cure whose re-training raises (said
in its verification, the diagnosis goes on), and the CLI's factory errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt
from depthlab.diagnosis import Diagnosis


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16)) * 2
    y = rng.integers(0, 4, 200)
    x = centers[y] + rng.normal(size=(200, 16))
    return x.astype(np.float32), y


def sigmoid_stack(depth: int, frozen: int = 0) -> nn.Sequential:
    """``depth`` Linear(., 32)-Sigmoid layers with N(0, 1) weights and a Linear(32, 4) head;
    the first ``frozen`` layers (and their sigmoids) with ``requires_grad=False``."""
    layers: list[nn.Module] = []
    width = 16
    for _ in range(depth):
        lin = nn.Linear(width, 32)
        nn.init.normal_(lin.weight, 0.0, 1.0)
        layers += [lin, nn.Sigmoid()]
        width = 32
    model = nn.Sequential(*layers, nn.Linear(32, 4))
    for module in model[:2 * frozen]:
        module.requires_grad_(False)
    return model


def test_mean_shift_of_a_frozen_backbone_is_judged_on_the_trainable_layers_only(blobs):
    """Six frozen N(0, 1) sigmoid layers under four trainable ones: the finding named layers
    1-10 with the frozen layer 1's mean (0.54) as its metric, which no swap changes (the swap
    keeps frozen layers' sigmoids): both verified cures read 'did not help', 0.5374 -> 0.5374.
    Now its layers and metric are the trainable layers' (7-10)."""
    dg = dlt.doctor(lambda: sigmoid_stack(10, frozen=6), blobs, steps=20, verify=False)
    f = dg.finding("mean_shift")
    assert f is not None
    assert f.layers and min(f.layers) >= 7, f.layers
    assert f.evidence["worst_layer"] >= 7


def test_mean_shift_without_frozen_layers_still_names_the_first_layers(blobs):
    dg = dlt.doctor(lambda: sigmoid_stack(10), blobs, steps=20, verify=False)
    f = dg.finding("mean_shift")
    assert f is not None and 1 in f.layers


class SigmoidOnly(nn.Module):
    """A sigmoid stack whose forward raises from its 9th call on once its second module is no
    longer the sigmoid it was built with: every cure that swaps the activation or inserts a
    norm fails in training, after the one step the doctor checks before it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = sigmoid_stack(10)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 8 and not isinstance(self.net[1], nn.Sigmoid):
            raise RuntimeError("only sigmoid here")
        return self.net(x)


def test_a_cure_whose_retraining_raises_is_said_in_its_verification(blobs):
    """The doctor raised 'the model or loss_fn failed in the probe at step 8 ...' out of the
    first such cure's re-training, losing the whole diagnosis."""
    dg = dlt.doctor(SigmoidOnly, blobs, steps=12, max_cures=2)
    failed = [v for v in dg.verifications if v.error]
    assert failed, [v.summary() for v in dg.verifications]
    for v in failed:
        assert "only sigmoid here" in v.error and not v.helped and not v.resolved
        assert v.after == {}
        line = v.summary()
        assert "its re-training failed" in line and "only sigmoid here" in line
        assert "\n" not in line
    assert "its re-training failed" in str(dg)
    back = Diagnosis.from_dict(json.loads(json.dumps(dg.to_dict())), dg.probes)
    assert back == dg
    assert [v.error for v in back.verifications] == [v.error for v in dg.verifications]


def test_a_verification_that_ran_writes_no_error_key():
    from depthlab.diagnosis.findings import Verification

    v = Verification(kind="saturation", prescription={"init": "matched"},
                     before={"train_loss": 1.0}, after={"train_loss": 0.5}, metric="m",
                     metric_before=0.6, metric_after=0.1, resolved=True, helped=True)
    assert "error" not in v.to_dict()
    assert Verification.from_dict(v.to_dict()).error == ""


@pytest.fixture()
def factory_file(tmp_path, blobs):
    x, y = blobs
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "m.py").write_text(
        "from torch import nn\n\n\ndef make():\n"
        "    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))\n")
    return tmp_path


@pytest.mark.parametrize("device, said", [
    ("tpu", "--device 'tpu' is not accepted; accepted: cpu, cuda"),
    ("meta", "a 'meta' device cannot train here"),
    ("", "--device '' is not accepted"),
])
def test_cli_device_refused_in_one_line(factory_file, capsys, monkeypatch, device, said):
    """``--device`` did not exist ('unrecognized arguments: --device'); an unusable one is now
    refused in one line, exit 2, before the factory runs."""
    from helpers.cli import one_blas_thread, run_cli

    one_blas_thread(monkeypatch)
    monkeypatch.chdir(factory_file)
    code, _, err = run_cli(capsys, "doctor", "--torch", str(factory_file / "m.py") + ":make",
                           "--data", str(factory_file / "d.npz"), "--steps", "2",
                           "--device", device, "--out", factory_file / "res")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and said in lines[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is there")
def test_cli_device_cuda_without_a_gpu_is_one_line(factory_file, capsys, monkeypatch):
    from helpers.cli import one_blas_thread, run_cli

    one_blas_thread(monkeypatch)
    monkeypatch.chdir(factory_file)
    for device in ("cuda", "cuda:1"):
        code, _, err = run_cli(capsys, "doctor", "--torch", str(factory_file / "m.py") + ":make",
                               "--data", str(factory_file / "d.npz"), "--device", device,
                               "--out", factory_file / "res")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "no CUDA GPU is available" in lines[0], err
    assert not (factory_file / "res").exists()


def test_cli_device_cpu_diagnoses_and_is_torch_only(factory_file, capsys, monkeypatch):
    from helpers.cli import one_blas_thread, run_cli

    one_blas_thread(monkeypatch)
    monkeypatch.chdir(factory_file)
    code, out, err = run_cli(capsys, "doctor", "--torch", str(factory_file / "m.py") + ":make",
                             "--data", str(factory_file / "d.npz"), "--steps", "3",
                             "--device", "cpu", "--out", factory_file / "res", "--json")
    assert code == 0, err
    assert json.loads(out)["settings"]["device"] == "cpu"
    (factory_file / "c.toml").write_text("")
    code, _, err = run_cli(capsys, "doctor", str(factory_file / "c.toml"), "--device", "cpu")
    assert code == 2 and "--device applies only with --torch" in err, err


class StrictSigmoid(nn.Module):
    """A sigmoid stack whose forward asserts its second module is the sigmoid it was built
    with: a cure that swaps it or inserts a norm fails on the first forward the transform
    runs, with an AssertionError (not torch's ValueError or RuntimeError)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = sigmoid_stack(10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert isinstance(self.net[1], nn.Sigmoid), "sigmoid expected"
        return self.net(x)


def test_a_cure_the_models_forward_refuses_with_an_assert_does_not_apply(blobs):
    """The AssertionError out of the activation swap's traced forward ended the diagnosis;
    now that cure 'does not apply: AssertionError: sigmoid expected' and the others run."""
    dg = dlt.doctor(StrictSigmoid, blobs, steps=4, max_cures=1)
    text = str(dg)
    assert "does not apply: AssertionError: sigmoid expected" in text, text
    assert dg.verifications, text
    assert all("activation" not in v.prescription and "normalization" not in v.prescription
               for v in dg.verifications)
