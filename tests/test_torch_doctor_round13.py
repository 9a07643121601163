"""depthlab.torch.doctor, round 13: a training and a validation set given as two torch
Datasets/DataLoaders, ``(train, val)``, the usual PyTorch setup (was: taken for ``(x, y)``:
TypeError 'x must be an array or a tensor, got Subset: setting an array element with a
sequence ...')."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

import depthlab.torch as dlt


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 6, generator=g)
    return x, (x[:, 0] > 0).long()


def make() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))


def test_a_train_and_a_validation_dataset_are_taken_as_x_y_x_val_y_val():
    x, y = data()
    tr, va = random_split(TensorDataset(x, y), [90, 30],
                          generator=torch.Generator().manual_seed(0))
    it, iv = list(tr.indices), list(va.indices)
    want = dlt.doctor(make, (x[it], y[it], x[iv], y[iv]), steps=5, batch_size=16,
                      verify=False).baseline
    for pair in ((tr, va), (DataLoader(tr, batch_size=7, shuffle=True), DataLoader(va))):
        got = dlt.doctor(make, pair, steps=5, batch_size=16, verify=False).baseline
        assert {k: v for k, v in got.items() if k != "seconds"} == \
            {k: v for k, v in want.items() if k != "seconds"}


def test_a_dataset_paired_with_something_else_is_named():
    x, y = data()
    with pytest.raises(TypeError, match=r"pair of a torch Dataset/DataLoader and a Tensor; "
                                        r"expected \(train, val\)"):
        dlt.doctor(make, (TensorDataset(x, y), y), steps=2, verify=False)
    with pytest.raises(ValueError, match="the validation data are empty"):
        dlt.doctor(make, (TensorDataset(x, y), random_split(TensorDataset(x, y), [120, 0])[1]),
                   steps=2, verify=False)
