"""Round 32 (enginespeed32): a training step no longer reads the available memory every time.

``Network.forward`` refuses a batch whose layer outputs cannot fit before allocating them; for a
batch of 1 MiB or more it read /proc/meminfo and the cgroup's files at every step (about 70 us:
8% of the float64 784-100-100-100-10 step at batch 60, the step that made float64 cost 2.3x
float32 in issue 14's table). A need no larger than one found to fit is now trusted for
``MEMORY_RECHECK_S`` seconds under the same ``DEPTHLAB_MEMORY_LIMIT``; the refusals stay.
"""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl
from depthlab import memory, network
from depthlab.memory import MemoryRefusal


def _net_and_batch(rows: int = 128):
    # float64 512-64-10 at 128 rows: (512 + 64 + 10) * 8 B * 3 * 128 = 1.8 MB >= CHECK_FROM_BYTES
    net = dl.mlp([512, 64, 10], activation="sigmoid", seed=0, dtype="float64")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 512))
    y = rng.integers(0, 10, rows)
    return net, x, y


def _count_reads(monkeypatch):
    calls = []
    real = memory.available_memory

    def counted() -> int:
        calls.append(1)
        return real()

    monkeypatch.setattr(memory, "available_memory", counted)
    return calls


def test_a_training_loop_reads_the_available_memory_once_not_every_step(monkeypatch):
    net, x, y = _net_and_batch()
    assert memory.batch_bytes(net, x.shape[0]) >= memory.CHECK_FROM_BYTES  # the checked case
    calls = _count_reads(monkeypatch)
    loss = dl.loss("cross_entropy")
    opt = dl.optimizer("sgd", net.parameters(), lr=0.1)
    first = None
    for _ in range(30):
        value = loss.forward(net.forward(x), y)
        first = value if first is None else first
        net.backward(loss.backward(), input_grad=False)
        opt.step()
    assert value < first  # it trained
    assert 1 <= len(calls) <= 3  # was 30: /proc/meminfo and the cgroup files at every step


def test_the_refusals_stay_a_larger_batch_a_lower_limit_and_after_the_recheck_time(monkeypatch):
    net, x, _ = _net_and_batch()
    net.forward(x)  # fits: remembered
    need = memory.batch_bytes(net, 4 * x.shape[0])
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", str(need - 1))
    with pytest.raises(MemoryRefusal, match=r"x of 512 rows x 512 features .*needs about"):
        net.forward(np.ones((4 * x.shape[0], 512)))  # a larger need is checked
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "1M")  # another limit: checked again
    with pytest.raises(MemoryRefusal, match=r"x of 128 rows .*but only 1 MiB is available"):
        net.forward(x)
    monkeypatch.delenv("DEPTHLAB_MEMORY_LIMIT")
    net.forward(x)  # fits again: remembered under no limit
    monkeypatch.setattr(memory, "available_memory", lambda: 1000)  # memory ran out since
    monkeypatch.setattr(network, "MEMORY_RECHECK_S", 0.0)  # ... longer ago than the recheck time
    with pytest.raises(MemoryRefusal, match=r"but only 1000 B is available"):
        net.forward(x)
