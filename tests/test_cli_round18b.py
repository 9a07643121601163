"""Round 18b, the experiment machinery: the demo's words for a ratio of 0, the store's large
probe tables, huge data files refused before they are read."""

from __future__ import annotations

import pandas as pd


def test_a_gradient_ratio_of_exactly_0_is_vanishing_not_unmeasured():
    # a first layer whose units are all dead gets no gradient: the ratio is measured, and 0;
    # the demo said "not measured" (the report had its own workaround)
    from depthlab.demo import describe_ratio, summary_lines
    from depthlab.plot import gradient_ratio

    table = pd.DataFrame({"step": [0, 0, 0], "layer": [1, 2, 3],
                          "quantity": ["grad_pre_std"] * 3, "value": [0.0, 0.3, 0.5]})
    ratio = gradient_ratio(table)
    assert ratio == 0.0
    assert describe_ratio(ratio) == "vanishing: the first layer gets no gradient at all (0)"
    assert describe_ratio(-0.0).startswith("vanishing")
    line = summary_lines([{"name": "dead", "meaning": "", "ratio": ratio, "status": "finished",
                           "val_acc": 0.1}])[0]
    assert "no gradient at all" in line and "not measured" not in line, line
    for unmeasured in (None, float("nan"), float("inf"), -1.0):
        assert describe_ratio(unmeasured) == "not measured"
