"""Issue 11, validation up front: every message names the key or argument, the value and what
is accepted; batch norm never meets a one-row batch mid-training."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import depthlab as dl
from depthlab.experiments import ConfigError, ExperimentError, prepare, validate


def _raw(data=None, model=None, train=None) -> dict:
    return {"data": {"name": "spirals", "n": 60, **(data or {})},
            "model": {"sizes": ["auto", 4, "auto"], **(model or {})},
            "train": {"epochs": 1, **(train or {})}, "probes": {"every": 0}}


@pytest.mark.parametrize("raw,fragments", [
    (_raw(train={"seed": -1}), ["train.seed = -1", "accepted: an integer >= 0"]),
    (_raw(train={"seed": "a"}), ['train.seed = "a"', "accepted: an integer >= 0"]),
    (_raw(data={"seed": -1}), ["data.seed = -1", "accepted"]),
    (_raw(data={"path": None, "name": None}), ["exactly one of name"]),
    (_raw(model={"batchnorm": True}, train={"batch_size": 1}),
     ["model.batchnorm = true", "train.batch_size = 1", "accepted: train.batch_size >= 2"]),
])
def test_config_messages_name_key_value_and_accepted(raw, fragments):
    with pytest.raises(ConfigError) as info:
        validate(raw)
    for frag in fragments:
        assert frag in str(info.value), (frag, str(info.value))


def test_label_rule_is_the_loaders(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,label\n1,0\n2,1\n")
    with pytest.raises(ConfigError, match=r"data.label = -1 is out of range; accepted: a column "
                       r"name or a 0-based column index"):
        validate({"data": {"path": str(p), "label": -1}, "model": {"sizes": ["auto", "auto"]}})


def test_data_option_message_names_the_option():
    # refused with the config since cli20 (was: when prepare generated the data)
    with pytest.raises((ConfigError, ExperimentError),
                       match=r"noise='x' is not accepted; accepted: a finite"):
        prepare(validate(_raw(data={"options": {"noise": "x"}})))


@pytest.mark.parametrize("call,error,fragments", [
    (lambda net: dl.fit(net, "abc", np.zeros(3)), TypeError,
     ["x='abc' is not accepted", "shape (n_samples, n_inputs)"]),
    (lambda net: dl.fit(net, np.zeros((3, 2)), "abc"), TypeError, ["y='abc' is not accepted"]),
    (lambda net: dl.fit(net, [["a", "b"]], [0]), TypeError, ["dtype <U1", "real numbers"]),
    (lambda net: dl.fit(net, np.array([[1e300, 1.0]]), [0]), ValueError,
     ["x value 1e+300 (row 0, column 0) does not fit in float32", "accepted"]),
    (lambda net: net.predict("abc"), TypeError,
     ["x='abc' is not accepted", "shape (batch, 2)"]),
    (lambda net: dl.probe(net, np.zeros((3, 2)), "abc"), TypeError, ["y='abc' is not accepted"]),
    (lambda net: dl.mlp([2, 4, 2], seed=-1), ValueError, ["seed=-1 is not accepted",
                                                          "an integer >= 0"]),
    (lambda net: dl.mlp([2, 4, 2], seed="a"), TypeError, ["seed='a' is not accepted"]),
])
def test_api_messages_name_argument_value_and_accepted(call, error, fragments):
    net = dl.mlp([2, 4, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings on the way to the message
        with pytest.raises(error) as info:
            call(net)
    for frag in fragments:
        assert frag in str(info.value), (frag, str(info.value))


def test_batchnorm_trailing_one_row_batch_is_merged_and_said():
    net = dl.mlp([2, 4, 2], batchnorm=True)
    x = np.random.default_rng(0).standard_normal((11, 2)).astype("float32")
    y = np.arange(11) % 2
    seen: list[int] = []
    forward = net.forward

    def spy(xb, training=False, **kw):
        if training:
            seen.append(xb.shape[0])
        return forward(xb, training=training, **kw)

    net.forward = spy
    with pytest.warns(UserWarning, match=r"11 rows in batches of 5 leave 1 row.*merged into "
                      r"the batch before it \(6 rows\)"):
        hist = dl.fit(net, x, y, batch_size=5, epochs=2)
    assert len(hist.step_loss) == 4 and np.isfinite(hist.step_loss).all()
    assert [s for s in seen if s != 11] == [5, 6, 5, 6]  # every row used, no 1-row batch
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 12 rows in batches of 5: a last batch of 2, no note
        dl.fit(dl.mlp([2, 4, 2], batchnorm=True), np.vstack([x, x[:1]]), np.r_[y, 0],
               batch_size=5, epochs=1)


def test_did_you_mean_prefers_a_name_the_typo_is_part_of():
    """``steps`` in [train] meant ``max_steps`` (difflib alone says ``eps``)."""
    from depthlab.experiments.config import validate
    from depthlab.fieldcheck import ConfigError
    from depthlab.validators import closest_name

    assert closest_name("steps", ["eps", "max_steps", "epochs"]) == "max_steps"
    assert closest_name(" Batch ", ["lr", "batch_size"]) == "batch_size"
    assert closest_name("tnah", ["relu", "tanh"]) == "tanh"
    assert closest_name("RELU", ["relu", "tanh"]) == "relu"
    assert closest_name("zzz", ["relu", "tanh"]) is None
    with pytest.raises(ConfigError, match=r"unknown key 'train.steps' in \[train\] \(did you "
                                          r"mean \"max_steps\"\?\)"):
        validate({"model": {"sizes": [4, 3]}, "data": {"name": "xor"}, "train": {"steps": 5}})
