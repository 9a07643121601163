"""Round 19, the lead's own fixes."""

from __future__ import annotations

import json

from helpers.cli import run_cli


def test_the_cli_doctor_trains_an_mse_config_on_the_targets_run_trains_on(tmp_path, capsys):
    """`depthlab run` trains an mse config of a classification set on one-hot rows; the doctor
    of the same config failed: "mse: pred shape (1400, 2) and target shape (1400,) differ"."""
    cfg = tmp_path / "mse.toml"
    cfg.write_text('[data]\nname = "spirals"\n[model]\nsizes = [2, 16, 16, 2]\n'
                   'activation = "tanh"\n[train]\nloss = "mse"\nlr = 0.05\nepochs = 1\n')
    code, _, err = run_cli(capsys, "run", str(cfg), "--out", str(tmp_path / "run"))
    assert code == 0, err
    code, out, err = run_cli(capsys, "doctor", str(cfg), "--steps", "30", "--json",
                             "--out", str(tmp_path / "doc"))
    assert code == 0, err
    baseline = json.loads(out)["baseline"]
    assert 0 < baseline["train_loss"] < 1  # a mean squared error on one-hot rows of 2 classes


# -- an accuracy at a constant prediction's is no improvement ------------------------------------
def test_an_accuracy_that_ends_at_a_constant_predictions_did_not_help():
    """A diverged baseline's cure at chance read "train loss nan (diverged at step 7) -> 2.383,
    val acc nan -> 0.1: helped" (ten classes), and a rise from below chance to the constant
    prediction's own accuracy (0.028 -> 0.061) read "helped" too."""
    import math

    from depthlab.diagnosis.doctor import _better
    from depthlab.diagnosis.findings import Verification

    diverged = {"train_loss": math.nan, "val_acc": math.nan}
    at_chance = {"train_loss": 2.383, "val_acc": 0.1}
    assert _better(at_chance, diverged, 200, 2.303)  # what the accuracy alone decided
    assert not _better(at_chance, diverged, 200, 2.303, 0.1)
    assert not _better({"train_loss": 2.304, "val_acc": 0.0611},
                       {"train_loss": 2.317, "val_acc": 0.0278}, 180, 2.303, 0.0611)
    # above the constant prediction's accuracy it still counts, the train loss notwithstanding
    # (up to 1.5x the constant prediction's: beyond, the run did not learn, doctorfix26)
    assert _better({"train_loss": 3.4, "val_acc": 0.35}, diverged, 200, 2.303, 0.1)
    assert not _better({"train_loss": 6.8, "val_acc": 0.35}, diverged, 200, 2.303, 0.1)
    v = Verification(kind="divergence", prescription={"clip_grad_norm": 1.0}, before=diverged,
                     after=at_chance, metric="m", metric_before=math.inf, metric_after=1.0,
                     resolved=True, helped=False, chance_loss=2.303, chance_acc=0.1)
    assert v.verdict() == ("did not help (the train loss did not end below a constant "
                           "prediction's, 2.303, nor the validation accuracy above its 0.1)")
    v.after = {"train_loss": 2.0, "val_acc": 0.1}  # the loss below chance: the accuracy's reason
    assert v.verdict() == ("did not help (the validation accuracy did not end above a constant "
                           "prediction's, 0.1)")
    back = Verification.from_dict(json.loads(json.dumps(v.to_dict())))
    assert back.chance_acc == 0.1 and back.verdict() == v.verdict()


def test_constant_accuracy_of_each_kind_of_target():
    import math

    import numpy as np

    from depthlab.diagnosis.doctor import constant_accuracy

    y = np.array([0, 1, 1, 2, 1])
    assert constant_accuracy("cross_entropy", y, np.array([1, 1, 0, 2])) == 0.5
    assert constant_accuracy("cross_entropy", np.eye(3)[y], np.eye(3)[[1, 1, 0, 2]]) == 0.5
    yb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # columns' majorities: 1 and 0
    assert constant_accuracy("binary_cross_entropy", yb, np.array([[1.0, 1.0], [0.0, 0.0]])) \
        == 0.5
    # one-hot rows under mse are scored by arg-max since numpy20's 1f992c6: the majority share
    assert constant_accuracy("mse", np.eye(3)[y], np.eye(3)[y]) == 0.6
    assert math.isnan(constant_accuracy("mse", np.eye(3)[y] * 0.5, np.eye(3)[y] * 0.5))
    assert math.isnan(constant_accuracy("cross_entropy", y, None))


def test_torch_constant_accuracy_leaves_out_the_ignored_labels():
    import math

    import torch
    from torch import nn

    from depthlab.torch.doctor import constant_accuracy

    y = torch.tensor([2, 2, -1, -1, -1, 0])  # -1 ignored: the majority is 2, not -1
    yv = torch.tensor([2, -1, 0, 0])
    # the best constant on the kept validation labels [2, 0, 0] (round 21: was the training
    # majority's share, 1/3); with the -1 counted it would be 2/4
    assert constant_accuracy(nn.CrossEntropyLoss(ignore_index=-1), y, yv) == 2 / 3
    yb = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    assert constant_accuracy(nn.BCEWithLogitsLoss(), yb, torch.tensor([[1.0, 0.0], [0.0, 0.0]])) \
        == 0.75
    assert math.isnan(constant_accuracy(nn.MSELoss(), torch.randn(4, 2), torch.randn(3, 2)))
    assert math.isnan(constant_accuracy(nn.CrossEntropyLoss(), y, None))


def _digits_relu_doctor(optimizer: tuple, steps: int):
    """The torch doctor (verify=True, seed 0) of a 4-layer He ReLU MLP of width 64 on digits."""
    import torch
    from torch import nn

    import depthlab.torch as dlt
    from depthlab.data import load_dataset

    ds = load_dataset("digits")
    x, y = torch.tensor(ds.x_train, dtype=torch.float32), torch.tensor(ds.y_train)

    def make():
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        for _ in range(4):
            lin = nn.Linear(64, 64)
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            layers += [lin, nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(64, 10))

    return dlt.doctor(make, (x, y), loss_fn=nn.CrossEntropyLoss(), optimizer=optimizer,
                      steps=steps, seed=0, verify=True)


def test_the_torch_doctor_does_not_call_a_cure_at_chance_help():
    """digits, a 4-layer He ReLU MLP at SGD lr 2 (momentum 0.9, Nesterov), 30 steps: the loss
    diverges; the gradient clipping cure ends at chance and read 'helped (finding resolved)'."""
    d = _digits_relu_doctor(("sgd", {"lr": 2.0, "momentum": 0.9, "nesterov": True}), steps=30)
    clips = [v for v in d.verifications if v.prescription == {"clip_grad_norm": 1.0}]
    assert clips, [v.prescription for v in d.verifications]
    for v in clips:
        assert v.after["val_acc"] <= v.chance_acc + 0.01, v.summary()
        assert not v.helped, v.summary()
        assert "nor the validation accuracy above its" in v.verdict(), v.summary()


def test_the_torch_doctor_finds_a_learning_rate_too_low_to_move():
    """digits, a 4-layer He ReLU MLP at SGD lr 1e-5 for 60 steps: the loss stays at ln 10
    (2.305, val acc 0.115) and the torch doctor gave a clean bill of health (its rules never
    got the constant prediction's loss that lr_too_low judges against)."""
    d = _digits_relu_doctor(("sgd", {"lr": 1e-5}), steps=60)
    assert [f.kind for f in d.findings] == ["lr_too_low"], str(d)
    raised = [v for v in d.verifications if v.prescription == {"lr": 0.01}]
    assert raised and raised[0].helped, str(d)  # the rule's own cure (never "lr / 10")
    assert all(v.prescription.get("lr", 1.0) > 1e-5 for v in d.verifications), str(d)
