"""Round 18b: the torch doctor and the bridge on loaders, models and data the earlier rounds
left out."""

from __future__ import annotations

import importlib

import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

tdoc = importlib.import_module("depthlab.torch.doctor")  # (depthlab.torch.doctor: the function)
CPU = torch.device("cpu")


def test_a_sequential_drop_last_loader_gives_only_the_examples_it_yields():
    # DataLoader(batch_size=4, drop_last=True) over 10 examples never yields 8 and 9; the
    # doctor trained on them too. A shuffled one drops a different tail in every pass: all 10
    x = torch.arange(10.0).unsqueeze(1)
    ds = TensorDataset(x, torch.arange(10) % 2)
    seq = DataLoader(ds, batch_size=4, drop_last=True)
    got = tdoc.pairs_from_torch(seq, CPU)[0].flatten().tolist()
    assert got == sorted(float(v) for b in seq for v in b[0].flatten()) == list(range(8))
    listed = DataLoader(ds, batch_size=3, drop_last=True, sampler=[9, 7, 5, 3, 1])
    assert tdoc.pairs_from_torch(listed, CPU)[0].flatten().tolist() == [5.0, 7.0, 9.0]
    shuffled = DataLoader(ds, batch_size=4, drop_last=True, shuffle=True)
    assert tdoc.pairs_from_torch(shuffled, CPU)[0].flatten().tolist() == list(range(10))
    kept = DataLoader(ds, batch_size=4)
    assert tdoc.pairs_from_torch(kept, CPU)[0].flatten().tolist() == list(range(10))
    with pytest.raises(ValueError, match=r"yields no batch \(drop_last=True with "
                                         r"batch_size 16 and 10 "):
        tdoc.pairs_from_torch(DataLoader(ds, batch_size=16, drop_last=True), CPU)
