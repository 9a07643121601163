"""Round 43 (theoryloss43): the theory note's output-gradient terms follow the loss trained with.

``predict_gradients`` warned every deep relu-like net, and every net with a wide output layer,
that "a regression loss (mse, huber)" makes its gradients near the input larger than predicted
(mse: 1.4x at 10 layers of 256, 2.8x at 20 of 128): it could not be told the loss, so the
playground's gradient panel (cross-entropy by default) and the report's theory curve told
cross-entropy runs of a correction they do not have. ``predict_gradients(loss=)`` takes it now
(a name as a config's ``train.loss``, a Loss, or None = not known: the old wording), and the
playground's ``theory_profile`` and ``plot.theory_for_config`` pass the config's ``train.loss``.
No number changes.
"""

from __future__ import annotations

import pandas as pd
import pytest

import depthlab as dl
from depthlab.theory import predict_gradients

DEEP_RELU = {"sizes": [32] + [128] * 16 + [10], "activation": "relu", "init": "he_normal"}
WIDE_OUT = {"sizes": [32] + [300] * 5 + [300], "activation": "relu", "init": "he_normal"}
REGRESSION = "regression loss"


def test_a_cross_entropy_run_is_not_told_the_regression_losses_correction():
    unknown = predict_gradients(DEEP_RELU)
    assert REGRESSION in unknown.note and "2.8x at 20 of 128" in unknown.note  # not known: as was
    for name in ("cross_entropy", "ce", "CrossEntropyLoss", "nll_loss"):
        note = predict_gradients(DEEP_RELU, loss=name).note
        assert REGRESSION not in note and "2.8x" not in note and "mse" not in note, (name, note)
        # the figure measured with cross-entropy, the deep-narrow sum still named
        assert "softmax(f) - y" in note and "1.1x" in note and "0.125" in note, (name, note)
    note = predict_gradients(DEEP_RELU, loss=dl.losses.CrossEntropy()).note
    assert REGRESSION not in note and "softmax(f) - y" in note


@pytest.mark.parametrize("name, canonical", [("mse", "mse"), ("huber", "huber"),
                                             ("l1", "l1_loss"), ("MSELoss", "mse"),
                                             ("smooth_l1_loss", "smooth_l1_loss")])
def test_a_regression_loss_gets_the_correction_with_its_name(name, canonical):
    for model, figure in ((DEEP_RELU, "2.8x at 20 of 128"), (WIDE_OUT, "1.9x at 300")):
        note = predict_gradients(model, loss=name).note
        assert f"the regression loss {canonical} the output gradient f - y" in note, note
        assert figure in note, note


def test_wide_output_and_binary_cross_entropy_get_their_own_figures():
    ce = predict_gradients(WIDE_OUT, loss="cross_entropy").note
    assert "the output layer is wide (300 outputs" in ce and REGRESSION not in ce, ce
    assert "1.01-1.02x" in ce and "1.9x" not in ce, ce
    for name in ("binary_cross_entropy", "bce", "bce_loss"):
        deep = predict_gradients(DEEP_RELU, loss=name).note
        wide = predict_gradients(WIDE_OUT, loss=name).note
        assert REGRESSION not in deep + wide and "sigmoid(f) - y" in deep, deep
        assert "the first layer's 1.4x" in deep and "the first layer's 1.5x" in wide, wide


def test_the_loss_changes_no_number():
    models = [DEEP_RELU, WIDE_OUT,
              {"sizes": [16, 64, 64, 64, 32], "activation": "relu", "init": "he_normal",
               "batchnorm": True},
              {"sizes": [16] + [64] * 5 + [10], "activation": "tanh", "residual": True},
              {"sizes": [4] + [64] * 4 + [3], "activation": "gelu", "init": "he_normal",
               "bias_init": "normal"}]
    for model in models:
        ref = predict_gradients(model)
        for loss in ("mse", "cross_entropy", "binary_cross_entropy", "l1"):
            pred = predict_gradients(model, loss=loss)
            pd.testing.assert_frame_equal(pred.frame, ref.frame)
            assert pred.relative_std == ref.relative_std and pred.covered == ref.covered


def test_a_bad_loss_is_one_clear_error():
    with pytest.raises(ValueError, match=r"unknown loss 'msee' \(did you mean 'mse'\?\)"):
        predict_gradients(DEEP_RELU, loss="msee")
    with pytest.raises(TypeError, match=r"loss must be a loss name .* got int 3$"):
        predict_gradients(DEEP_RELU, loss=3)


def _playground(loss: str | None) -> dict:
    from depthlab.experiments.runner import prepare
    from depthlab.playground.setup import parse_setup, to_config

    query = {"model.activation": "relu", "model.init": "he_normal", "model.depth": "8"}
    if loss is not None:
        query["train.loss"] = loss
    return prepare(to_config(parse_setup(query))).config


def test_the_playgrounds_theory_note_speaks_of_the_loss_the_page_trains_with():
    from depthlab.playground.prediction import theory_profile

    default = _playground(None)  # the page's default: cross-entropy
    assert default["train"]["loss"] == "cross_entropy"
    note = theory_profile(default)["note"]
    assert REGRESSION not in note and "with cross_entropy the output gradient" in note, note
    mse = theory_profile(_playground("mse"))
    assert "the regression loss mse" in mse["note"], mse["note"]
    assert mse["relative_std"] == theory_profile(default)["relative_std"]


def test_the_reports_theory_curve_note_speaks_of_the_runs_loss():
    model = {"sizes": [16, 64, 64, 64, 32], "activation": "relu", "init": "he_normal",
             "batchnorm": True}  # a wide output layer (32 for 64): predict_gradients' note
    ce_frame, ce = dl.plot.theory_for_config({"model": model,
                                              "train": {"loss": "cross_entropy"}})
    assert ce_frame is not None and REGRESSION not in ce and "1.01-1.02x" in ce, ce
    mse_frame, mse = dl.plot.theory_for_config({"model": model, "train": {"loss": "mse"}})
    assert "the regression loss mse" in mse, mse
    pd.testing.assert_frame_equal(ce_frame, mse_frame)
    # no loss (an mlp() config) or one edited by hand: the curve stays, the note as it was
    for config in (dict(model), {"model": model, "train": {"loss": "msee"}}):
        frame, note = dl.plot.theory_for_config(config)
        assert frame is not None and "a regression loss (mse, huber)" in note, note


def test_a_run_config_tells_its_own_loss():
    # a run config carries train.loss: the loss is known there without loss=
    run = {"model": DEEP_RELU, "train": {"loss": "cross_entropy"}}
    note = predict_gradients(run).note
    assert REGRESSION not in note and "with cross_entropy the output gradient" in note, note
    assert "the regression loss mse" in predict_gradients(run, loss="mse").note  # loss= wins
    pd.testing.assert_frame_equal(predict_gradients(run).frame,
                                  predict_gradients(DEEP_RELU).frame)
