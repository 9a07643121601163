"""depthlab.torch.doctor, round 14: a DataLoader's sampler and collate_fn decide the data (were
ignored: the doctor took the loader's whole dataset, raw), ...."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SubsetRandomSampler, TensorDataset

import depthlab.torch as dlt
from depthlab.torch.doctor import tensor_data

CPU = torch.device("cpu")


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = 10.0 * torch.randn(100, 6, generator=g) + 5.0
    return x, (x[:, 0] > 5).long()


def normalize(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batch)
    return (torch.stack(xs) - 5.0) / 10.0, torch.stack(ys)


def test_a_loaders_collate_fn_makes_the_data():
    """A collate_fn that normalizes: the doctor trained on the raw items (x mean 5.34, std
    10.07) instead of the loader's batches (mean 0.03, std 1.007)."""
    x, y = data()
    d = tensor_data(DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True,
                               collate_fn=normalize), CPU, torch.float32, 0)
    got = torch.cat([d.x, d.x_val])
    assert torch.allclose(got.sort(dim=0).values, ((x - 5.0) / 10.0).sort(dim=0).values)
    # the loader's collate_fn and the same data already normalized: the same diagnosis
    make = lambda: nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))  # noqa: E731
    want = dlt.doctor(make, ((x - 5.0) / 10.0, y), steps=4, batch_size=16, verify=False)
    got = dlt.doctor(make, DataLoader(TensorDataset(x, y), batch_size=8, collate_fn=normalize),
                     steps=4, batch_size=16, verify=False)
    assert got.baseline["train_loss"] == pytest.approx(want.baseline["train_loss"], rel=1e-6)


def test_a_subset_sampler_split_is_kept():
    """Train and validation loaders over one dataset split by SubsetRandomSampler: each was
    taken as the whole dataset (100 and 100 rows, the validation set inside the training
    set); now 80 and 20, the sampled rows."""
    x, y = data()
    ds = TensorDataset(x, y)
    tr = DataLoader(ds, batch_size=8, sampler=SubsetRandomSampler(range(20, 100)))
    va = DataLoader(ds, batch_size=8, sampler=SubsetRandomSampler(range(20)))
    d = tensor_data((tr, va), CPU, torch.float32, 0)
    assert torch.equal(d.x, x[20:]) and torch.equal(d.y, y[20:])
    assert torch.equal(d.x_val, x[:20]) and torch.equal(d.y_val, y[:20])


class Dicts(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, lengths: bool = False) -> None:
        self.x, self.y, self.lengths = x, y, lengths

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        n = 3 + i % 4 if self.lengths else self.x.shape[1]  # sequences of varied length
        return {"input": self.x[i, :n], "label": self.y[i]}


def from_dicts(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(b["input"]) for b in batch)  # padded to the batch's longest
    xs = torch.stack([nn.functional.pad(b["input"], (0, width - len(b["input"])))
                      for b in batch])
    return xs, torch.stack([b["label"] for b in batch])


def test_dict_items_through_a_collate_fn_and_ragged_batches_named():
    x, y = data()
    d = tensor_data(DataLoader(Dicts(x, y), batch_size=16, collate_fn=from_dicts), CPU,
                    torch.float32, 0)
    assert sorted(torch.cat([d.y, d.y_val]).tolist()) == sorted(y.tolist())
    with pytest.raises(ValueError, match=r"collate_fn from_dicts makes batches of different "
                                         r"shapes .*pad to one fixed length"):
        tensor_data(DataLoader(Dicts(x, y, lengths=True), batch_size=2, collate_fn=from_dicts),
                    CPU, torch.float32, 0)
    with pytest.raises(TypeError, match=r"Dicts\[0\] is a dict \(keys \['input', 'label'\]\): "
                                        r"give a DataLoader whose collate_fn returns"):
        tensor_data(DataLoader(Dicts(x, y), batch_size=16), CPU, torch.float32, 0)
    with pytest.raises(TypeError, match=r"collate_fn <lambda> returns a dict with keys "
                                        r"\['input', 'label'\]; expected an \(x, y\) pair"):
        tensor_data(DataLoader(Dicts(x, y), batch_size=16,
                               collate_fn=lambda b: torch.utils.data.default_collate(b)),
                    CPU, torch.float32, 0)
