"""Round-32 hardening: refuse work that cannot fit before allocating it (crafted archives)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

import depthlab as dl
from depthlab.memory import MemoryRefusal
from depthlab.persist import load_meta


def _npy_header(shape: tuple[int, ...], descr: str) -> bytes:
    h = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}".ljust(118)
    h += "\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h.encode()


def _craft(tmp_path: Path, member: str, payload: bytes) -> Path:
    """A network saved by depthlab.save whose entry ``member`` is replaced by ``payload``."""
    good = tmp_path / "net.npz"
    dl.save(dl.mlp([4, 8, 2], seed=0), good)
    out = tmp_path / "crafted.npz"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            zout.writestr(name, payload if name == member else zin.read(name))
        if member not in zin.namelist():
            zout.writestr(member, payload)
    return out


def test_load_refuses_an_entry_whose_header_declares_more_than_it_holds(tmp_path):
    # a 200-byte recipe entry declaring 10^11 bytes: numpy allocated 93.1 GiB (MemoryError)
    path = _craft(tmp_path, "recipe.npy", _npy_header((10**11,), "|u1") + b"\0" * 64)
    with pytest.raises(ValueError) as info:
        dl.load(path)
    msg = str(info.value)
    assert "crafted.npz" in msg and "recipe" in msg and "93.1 GiB" in msg, msg
    assert "\n" not in msg


def test_load_meta_refuses_an_entry_larger_than_the_memory_limit(tmp_path, monkeypatch):
    big = np.zeros((512, 1024), np.float32)  # 2 MiB of zeros: a few KiB compressed
    import io

    buf = io.BytesIO()
    np.save(buf, big)
    path = _craft(tmp_path, "meta:huge.npy", buf.getvalue())
    assert load_meta(path)["huge"].shape == (512, 1024)  # fits: read as before
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "1M")
    with pytest.raises(MemoryRefusal, match=r"meta:huge.*2 MiB.*1 MiB is available"):
        load_meta(path)


def _wide_net() -> tuple[dl.Network, np.ndarray]:
    net = dl.mlp([64, 512, 512], seed=0)  # 512 outputs: 16 examples need 8,192 backward rows
    x = np.random.default_rng(0).normal(size=(16, 64)).astype(np.float32)
    return net, x


def test_jacobian_refusal_names_the_examples_and_outputs_before_allocating(monkeypatch):
    from depthlab.probes import input_output_jacobian

    net, x = _wide_net()
    # 16 rows through the network fit in 4 MiB; their Jacobian's 8,192 rows need ~107 MiB
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "4M")
    with pytest.raises(MemoryRefusal) as info:
        input_output_jacobian(net, x)
    msg = str(info.value)
    assert "16 examples" in msg and "512 outputs" in msg and "8,192" in msg, msg


def test_probe_recorder_refuses_an_end_jacobian_before_training(monkeypatch):
    net, x = _wide_net()
    y = np.arange(16) % 512
    w0 = net.dense_layers()[0].W.value.copy()
    rec = dl.ProbeRecorder(probe_x=x, probe_y=y, jacobian_steps=["end"], jacobian_examples=16)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "16M")
    with pytest.raises(MemoryRefusal, match="Jacobian"):
        dl.fit(net, x, y, epochs=2, batch_size=8, callbacks=[rec])
    # refused before the first update (it trained to the end, then failed on the Jacobian)
    np.testing.assert_array_equal(net.dense_layers()[0].W.value, w0)


def test_torch_doctor_refuses_a_step_budget_whose_history_cannot_fit(monkeypatch):
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(64) % 3

    def make() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

    # 200,000 steps keep at least 200,000 x 48 B (9.2 MiB) of loss history: over 4 MiB it
    # trained every step first (then grew without bound for steps=10**10, never refused)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "4M")
    with pytest.raises(MemoryRefusal) as info:
        dlt.doctor(make, (x, y), loss_fn="cross_entropy", steps=200_000, batch_size=64)
    msg = str(info.value)
    assert "200,000" in msg and "4 MiB is available" in msg and "steps" in msg, msg


def test_watch_refuses_a_weight_snapshot_that_cannot_fit(monkeypatch):
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 1024))  # 4.1 MiB of float32 weights
    x = torch.randn(4, 32)
    watch = dlt.Watch(model, every=1)
    # the snapshot for update_ratio copies every weight: 4.1 MiB more than a 2 MiB machine has
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "2M")
    loss = model(x).pow(2).mean()
    loss.backward()
    with pytest.raises(MemoryRefusal) as info:
        watch.step(loss)
    msg = str(info.value)
    assert "Watch" in msg and "4.12 MiB" in msg and "2 MiB is available" in msg, msg
    watch.close()


def test_torch_probe_and_predict_name_the_batch_when_the_forward_runs_out_of_memory():
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    class Greedy(torch.nn.Module):  # its forward asks the allocator for 256 TiB
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(x).repeat(1, 2**40)

    x = torch.randn(16, 8)
    y = torch.arange(16) % 4
    for call in (lambda: dlt.probe(Greedy(), x, y, "cross_entropy"),
                 lambda: dlt.predict(Greedy(), x)):
        with pytest.raises(MemoryRefusal) as info:  # was torch's "[enforce fail at ...]"
            call()
        msg = str(info.value)
        assert "16 examples" in msg and "256 TiB" in msg and "\n" not in msg, msg
