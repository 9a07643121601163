"""tdochunt39 (round 39): the torch doctor on data forms a torch user has at hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import depthlab.torch as dlt

KW = dict(steps=6, batch_size=16, verify=False, probe_every=3)


def _data(n=60, d=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (x[:, :k].argmax(1)).astype(np.int64)


def _mlp():
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))


def _same_run(a, b):
    assert a.baseline["train_loss"] == b.baseline["train_loss"]
    pd.testing.assert_frame_equal(a.probes, b.probes)


@pytest.mark.parametrize("form", ["pairs", "tensor_pairs", "dicts", "whole_dict"])
def test_per_example_lists_and_an_xy_dict_are_the_data_as_x_y(form):
    """A list of per-example ``(x_i, y_i)`` pairs (what ``list(dataset)`` gives, what a
    DataLoader takes as a map-style dataset) or of ``{'x': ..., 'y': ...}`` dicts, and a dict
    ``{'x': x, 'y': y}`` of whole arrays, are the same data as ``(x, y)``: they were refused
    with 'data must be ..., got list' / 'got dict' although a Dataset's items and a loader's
    batches may take those forms."""
    x, y = _data()
    ref = dlt.doctor(_mlp, (x, y), **KW)
    data = {"pairs": [(a, int(b)) for a, b in zip(x, y)],
            "tensor_pairs": [(torch.tensor(a), torch.tensor(b)) for a, b in zip(x, y)],
            "dicts": [{"x": a, "y": b} for a, b in zip(x, y)],
            "whole_dict": {"x": x, "y": y}}[form]
    _same_run(dlt.doctor(_mlp, data, **KW), ref)


def test_an_xy_dict_with_its_validation_part_is_the_four_tuple():
    x, y = _data(80)
    ref = dlt.doctor(_mlp, (x[:60], y[:60], x[60:], y[60:]), **KW)
    got = dlt.doctor(_mlp, {"x": x[:60], "y": y[:60], "x_val": x[60:], "y_val": y[60:]}, **KW)
    _same_run(got, ref)
    assert got.baseline["val_acc"] == ref.baseline["val_acc"]


def test_a_dict_without_x_and_y_is_refused_naming_its_keys():
    x, y = _data()
    with pytest.raises(TypeError, match=r"keys \['inputs', 'labels'\].*'x' and 'y'"):
        dlt.doctor(_mlp, {"inputs": x, "labels": y}, **KW)


def test_a_pair_of_example_lists_is_train_and_validation():
    """``(train_examples, val_examples)``, as ``(train_ds, val_ds)`` of Datasets is read."""
    x, y = _data(80)
    ref = dlt.doctor(_mlp, (x[:60], y[:60], x[60:], y[60:]), **KW)
    got = dlt.doctor(_mlp, ([(a, int(b)) for a, b in zip(x[:60], y[:60])],
                            [(a, int(b)) for a, b in zip(x[60:], y[60:])]), **KW)
    _same_run(got, ref)
    assert got.baseline["val_acc"] == ref.baseline["val_acc"]


def test_a_tensor_lr_in_name_kwargs_trains_as_the_same_lr_in_a_factory():
    """torch.optim takes ``lr=torch.tensor(1e-3)``; the factory form read it (``.item()``)
    but ``('adam', {'lr': tensor})`` was refused 'lr must be a positive finite number'."""
    x, y = _data()
    lr = torch.tensor(1e-3)
    got = dlt.doctor(_mlp, (x, y), optimizer=("adam", {"lr": lr}), **KW)
    ref = dlt.doctor(_mlp, (x, y), optimizer=lambda ps: torch.optim.Adam(ps, lr=lr), **KW)
    assert got.settings["lr"] == ref.settings["lr"] == lr.item()
    _same_run(got, ref)


@pytest.mark.parametrize("loss", ["mse", "l1", "huber", "bce_with_logits"])
def test_a_regression_loss_on_more_outputs_than_targets_names_both_counts(loss):
    """A 3-class model under MSELoss with one real target per example: torch's 'The size of
    tensor a (3) must match the size of tensor b (2) at non-singleton dimension 1' (the 2 rows
    checked) was the whole message; it now says 3 outputs per example against 1 target and the
    remedy."""
    x, labels = _data()
    y = x.sum(1).astype(np.float32) if loss != "bce_with_logits" else \
        (labels > 0).astype(np.float32)  # BCE: torch's 'Target size ... must be the same'
    with pytest.raises(ValueError, match=r"returns 3 outputs per example, the targets hold 1: "
                                         r"give the model 1 output per example"):
        dlt.doctor(_mlp, (x, y), loss_fn=loss, **KW)


@pytest.mark.parametrize("n_out, k", [(1, 3), (3, 1)])
def test_a_broadcast_of_unequal_output_and_target_counts_names_the_outputs_to_give(n_out, k):
    """Outputs (N, 1) against targets (N, 3) (or (N, 3) against (N, 1)) broadcast in MSELoss;
    the refusal said only 'reshape the targets or the outputs', which cannot make 1 value 3."""
    x, _ = _data()
    y = np.repeat(x[:, :1], k, axis=1)

    def make():
        return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, n_out))

    with pytest.raises(ValueError, match=rf"broadcasts.*returns {n_out} outputs? per example, "
                                         rf"the targets hold {k}: give the model {k} output"):
        dlt.doctor(make, (x, y), loss_fn="mse", **KW)
