"""Round 36 torch-doctor hunt (tdochunt36): unfair verifications and misleading verdicts."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _data(n: int = 96, d: int = 8, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (np.abs(x[:, :k]).argmax(1)).astype(np.int64)
    return x, y


def test_factory_building_another_architecture_each_call_is_refused():
    """Before: the cures' models were another width than the baseline's, whose weights
    were silently not loaded, so 'verified' compared two different models."""
    calls = [0]

    def make_model():
        calls[0] += 1
        width = 8 * calls[0]
        return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 3))

    with pytest.raises(ValueError, match=r"different model on a later call \(the doctor's "
                                         r"call 2\): '0.weight' has shape \(16, 8\) "
                                         r"\(\(8, 8\) in the first call\)"):
        dlt.doctor(make_model, _data(), steps=2, batch_size=32, verify=True)


def test_factory_swapping_its_activation_is_refused():
    acts = iter([nn.Tanh, nn.ReLU, nn.ReLU, nn.ReLU, nn.ReLU, nn.ReLU])

    def make_model():
        return nn.Sequential(nn.Linear(8, 8), next(acts)(), nn.Linear(8, 3))

    with pytest.raises(ValueError, match=r"module '1' is ReLU \(Tanh in the first call\)"):
        dlt.doctor(make_model, _data(), steps=2, batch_size=32, verify=True)


def test_accuracy_within_a_guess_spread_of_chance_is_not_above_it():
    """Before: one SGD step, LSUV's val acc 0.0278 -> 0.15 on 180 digits against a constant
    prediction's 0.1222 (1.2 standard errors), its train loss above the constant's, 'helped'."""
    from depthlab.diagnosis.doctor import _better
    from depthlab.diagnosis.findings import Verification

    before = {"train_loss": 2.317, "val_acc": 0.02778}
    after = {"train_loss": 2.494, "val_acc": 0.15}
    assert not _better(after, before, 180, 2.301, 0.1222)
    assert _better({"train_loss": 2.494, "val_acc": 0.2056}, before, 180, 2.301, 0.1222)
    assert _better(after, before, None, 2.301, 0.1222)  # no n_val: the one-point tolerance
    v = Verification(kind="init_mismatch", prescription={"init": "lsuv"}, before=before,
                     after=after, metric="m", metric_before=5.9, metric_after=1.1,
                     resolved=True, helped=False, chance_loss=2.301, chance_acc=0.1222,
                     n_val=180)
    assert ("did not end above a constant prediction's, 0.1222 by more than 0.049, 2 standard "
            "errors of an accuracy on 180 examples" in v.summary())
    assert Verification.from_dict(v.to_dict()).n_val == 180


def test_cli_max_cures_without_verify_is_refused(tmp_path, capsys):
    """Before: --max-cures 2 without --verify ran the doctor, exit 0, and verified nothing."""
    from depthlab.cli import main

    f = tmp_path / "m.py"
    f.write_text("from torch import nn\n"
                 "def make_model():\n    return nn.Sequential(nn.Linear(64, 10))\n")
    code = main(["doctor", "--torch", f"{f}:make_model", "--data", "digits", "--max-cures", "2",
                 "--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--max-cures 2 applies only with --verify" in err[0]


def test_unhelpful_cures_name_a_one_step_budget_in_the_singular():
    """Before: '(none of the 2 cures verified helped within 1 steps)'."""
    def make_model():
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
        for layer in (m[0], m[2]):
            nn.init.normal_(layer.weight, 0.0, 0.01)
        return m

    d = dlt.doctor(make_model, _data(), steps=1, batch_size=32, verify=True, max_cures=1)
    texts = [f.prescription_text for f in d.findings]
    assert any("within 1 step)" in t for t in texts), texts


def test_frozen_input_layers_are_off_the_gradient_path():
    """Before: two frozen layers (no gradient is back-propagated into them) under six
    sigmoid ones read 'at least: the gradient at layer 1 is not finite in the network's float
    type (it overflowed), so the ratio is taken from layer 3', the depth counted over 8."""
    def make_model():
        layers = [nn.Linear(8, 16), nn.Sigmoid()]
        for _ in range(7):
            layers += [nn.Linear(16, 16), nn.Sigmoid()]
        m = nn.Sequential(*layers, nn.Linear(16, 3))
        for p in [*m[0].parameters(), *m[2].parameters()]:
            p.requires_grad_(False)
        return m

    d = dlt.doctor(make_model, _data(), steps=10, batch_size=32, verify=False)
    f = next(f for f in d.findings if f.kind == "vanishing_gradients")
    assert "overflowed" not in f.message
    assert "in layer 3 is" in f.message and "the 6 hidden layers span" in f.message


def test_saturated_frozen_input_layers_are_no_finding():
    """Before: two frozen N(0, 1) tanh layers under a trainable head read 'saturation ... the
    flat units pass little gradient back', a finding no cure can change (the cures keep
    frozen layers): saturated fraction 0.68 -> 0.68, 'did not help'."""
    def make_model():
        m = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))
        for layer in (m[0], m[2]):
            nn.init.normal_(layer.weight, 0.0, 1.0)
            for p in layer.parameters():
                p.requires_grad_(False)
        return m

    d = dlt.doctor(make_model, _data(), steps=10, batch_size=32, verify=False)
    assert "saturation" not in [f.kind for f in d.findings], [f.message for f in d.findings]


def test_saturation_counts_the_hidden_layers_of_its_activation():
    """Before: N(0, 1) tanh layers under a ReLU layer read '1 of 3 hidden tanh layers are
    saturated' (the ReLU layer counted among them)."""
    def make_model():
        m = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))
        for layer in (m[0], m[2]):
            nn.init.normal_(layer.weight, 0.0, 1.0)
        return m

    d = dlt.doctor(make_model, _data(), steps=10, batch_size=32, verify=False)
    f = next(f for f in d.findings if f.kind == "saturation")
    assert " of 2 hidden tanh layers are saturated" in f.message, f.message
