"""Round 9 of adversarial playground testing (a demanding teacher at the controls).

* a numeric control read ``1_0`` as 10, ``٣٢`` (Arabic-Indic digits) as 32 and ``０.５``
  (full-width) as 0.5: Python's ``float`` accepts them, and the page showed back another value
  than the one typed; ``9.9999999999999999`` was the integer 10 (read through a float);
  ``depthlab playground --port 8_765`` served on port 8765;
* the decision boundary of a network without batch norm whose output overflowed (or whose
  weights had diverged) said "batch norm has no running statistics before the first step".

Browser tests use Debian's Chromium (they fail, not skip, without it); screenshots go to a
temporary folder (``DEPTHLAB_SCREENSHOTS=DIR`` keeps them in DIR).
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from depthlab.playground.setup import SetupError, parse_setup, to_config

MEASURED = "document.getElementById('grad-summary').dataset.step !== ''"


# -- number text -------------------------------------------------------------------------------
@pytest.mark.parametrize("key, text", [
    ("model.depth", "1_0"), ("train.lr", "1_0e-2"), ("model.width", "\u0663\u0662"),
    ("train.lr", "\uff10.\uff15"), ("train.seed", "\uff17"), ("model.depth", "9.9999999999999999"),
    ("model.depth", "1e999999999"), ("train.lr", "0x1"), ("train.lr", "1e"),
])
def test_number_text_other_than_ascii_digits_is_refused_naming_the_control(key, text):
    # was: 1_0 -> 10, ٣٢ -> 32, ０.５ -> 0.5 (float() reads them), 9.9999999999999999 -> 10
    with pytest.raises(SetupError, match="is not accepted; expected") as e:
        parse_setup({key: text})
    assert e.value.key == key and repr(text) in str(e.value)


@pytest.mark.parametrize("key, text, value", [
    ("model.depth", " 12 ", 12), ("model.depth", "1e3", 1000), ("model.depth", "5.0", 5),
    ("model.depth", "+7", 7), ("train.lr", ".5", 0.5), ("train.lr", "5.", 5.0),
    ("train.lr", "1E-3", 1e-3), ("train.seed", "2147483647", 2**31 - 1),
    ("model.depth", 12, 12), ("model.depth", 12.0, 12), ("train.lr", 1, 1.0),
])
def test_ordinary_number_text_and_json_numbers_are_still_read(key, text, value):
    assert parse_setup({key: text})[key] == value


def test_a_port_with_underscores_or_other_digits_is_refused():
    from depthlab.cli.playground import _port

    assert _port(" 8765 ") == 8765 and _port("0") == 0
    for text in ("8_765", "\u0668\u0667\u0666\u0665", "-1", "+80", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="is not a port number"):
            _port(text)  # was: 8_765 and ٨٧٦٥ served on port 8765


# -- the decision boundary's note ----------------------------------------------------------------
def _monitor(query: dict):
    from depthlab.experiments.runner import prepare
    from depthlab.losses import get_loss
    from depthlab.playground.measure import Monitor

    prep = prepare(to_config(parse_setup(query)))
    ds = prep.data
    return Monitor(prep.net, ds.x_val, prep.y_val, get_loss("cross_entropy"), ds.x_train,
                   prep.y_train)


def test_a_boundary_not_finite_without_batch_norm_does_not_blame_batch_norm():
    mon = _monitor({"model.depth": "4", "model.width": "8", "model.activation": "relu"})
    for p in mon.points:  # weights as an exploding run leaves them: float32 overflows
        p.dense.W.value *= np.float32(1e12)
    note = mon.boundary()["note"]
    # was: "... not finite (batch norm has no running statistics before the first step)"
    assert "batch norm" not in note and "largest float32 number" in note, note
    mon.points[0].dense.W.value[0, 0] = np.nan  # a diverged run
    note = mon.boundary()["note"]
    assert "batch norm" not in note and "weights are no longer finite" in note, note
