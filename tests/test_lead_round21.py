"""Round 21 (lead): a CSV separated by semicolons given to `depthlab predict` was named
"non-numeric column(s) ['a;b;c;label']: ... holds '0.125730;...'" where training names the
separator (cli21's report); both now say it through one `files.other_separator`."""

from __future__ import annotations

import pytest

from depthlab.data.files import other_separator
from depthlab.inference import read_inputs, read_labeled_inputs


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_predict_names_the_separator_of_a_csv_not_separated_by_commas(tmp_path, sep):
    path = tmp_path / "new.csv"
    rows = [sep.join(["a", "b", "c", "label"])] + [sep.join(["0.5", "1.25", "-2", "1"])] * 4
    path.write_text("\n".join(rows) + "\n")
    for read in (lambda: read_inputs(str(path)),
                 lambda: read_labeled_inputs(str(path), "label")):
        with pytest.raises(ValueError) as err:
            read()
        # was: "non-numeric column(s) ['a;b;c;label'] ..."
        assert f"looks separated by {sep!r}; accepted: comma-separated values" in str(err.value)
        assert "non-numeric" not in str(err.value)


def test_other_separator():
    assert other_separator(["a;b;c"]) == ";"
    assert other_separator(["a", "b;c"]) is None  # two columns: commas did separate it
    assert other_separator(["abc"]) is None


def test_chance_accuracy_is_the_best_constant_on_the_validation_set():
    """torchdoctor21b: a relu swap whose train loss stayed at chance (0.8785 -> 0.69, a constant
    prediction's 0.6894) read "helped" for a validation accuracy 0.45 -> 0.47: chance was the
    training majority's share of the validation set (0.45) where the other class scores 0.55."""
    import math

    import numpy as np
    import torch

    from depthlab.diagnosis.doctor import _better, constant_accuracy
    from depthlab.torch.doctor import constant_accuracy as torch_constant_accuracy

    y = np.array([0] * 60 + [1] * 40)  # training majority: class 0
    y_val = np.array([0] * 45 + [1] * 55)  # validation majority: class 1
    assert constant_accuracy("cross_entropy", y, y_val) == 0.55  # was 0.45
    assert constant_accuracy("cross_entropy", np.eye(2)[y], np.eye(2)[y_val]) == 0.55
    assert constant_accuracy("mse", np.eye(2)[y], np.eye(2)[y_val]) == 0.55
    yb, yb_val = y[:, None].astype(float), y_val[:, None].astype(float)
    assert constant_accuracy("binary_cross_entropy", yb, yb_val) == 0.55
    assert torch_constant_accuracy(torch.nn.CrossEntropyLoss(), torch.tensor(y),
                                   torch.tensor(y_val)) == 0.55
    assert torch_constant_accuracy(torch.nn.BCEWithLogitsLoss(), torch.tensor(yb),
                                   torch.tensor(yb_val)) == 0.55
    chance = constant_accuracy("cross_entropy", y, y_val)
    before, after = {"train_loss": 0.8785, "val_acc": 0.45}, {"train_loss": 0.69, "val_acc": 0.47}
    assert not _better(after, before, 100, chance=math.log(2), chance_acc=chance)  # was: helped
    # a real rise above the best constant still helps
    assert _better({"train_loss": 0.5, "val_acc": 0.8}, before, 100, chance=math.log(2),
                   chance_acc=chance)
