"""reprohunt39 (round 39): the reproductions' tables and claims judged honestly."""

from __future__ import annotations

import numpy as np

from depthlab.reproduce import klambauer2017 as kl
from depthlab.theory import selu_trajectory


def test_klambauer_moments_table_shows_the_fixed_points_exact_mean(monkeypatch) -> None:
    # the standard input's theory mean read 5.551e-17 (float64 round-off of an exact 0) in
    # every row of moments_per_layer
    monkeypatch.setattr(kl, "_settings", lambda quick: dict(depths=(2,), width=8, steps=20))
    res = kl.run(quick=True)
    m = res.tables["moments_per_layer"]
    std = m[m["input"] == "standard (0, 1)"]
    assert (std["mean_theory"] == 0.0).all(), std["mean_theory"].unique()
    assert (std["var_theory"] == 1.0).all()
    # a real (not round-off) departure is kept: the shifted input still converging
    sh = m[m["input"] == "shifted (1, 9)"]
    assert (sh["mean_theory"] != 0.0).all()
    assert "round-off" in res.captions["moments_per_layer"]


def test_snap_to_fixed_point_is_a_rule_not_one_number() -> None:
    raw = selu_trajectory(1.0, 9.0, 64)
    snapped = kl.snap_to_fixed_point(raw)
    np.testing.assert_array_equal(snapped["mean"], raw["mean"])  # 3.6e-8 off: real
    odd = raw.assign(mean=[3e-15, -2e-13] + [1e-3] * (len(raw) - 2),
                     var=[1 - 4e-16, 1 + 1e-11] + [2.0] * (len(raw) - 2))
    out = kl.snap_to_fixed_point(odd)
    assert out["mean"].tolist()[:3] == [0.0, 0.0, 1e-3]
    assert out["var"].tolist()[:3] == [1.0, 1.0 + 1e-11, 2.0]


def test_he2015_xavier_stall_does_not_hold_when_nothing_trains(monkeypatch) -> None:
    # with a step too small for anything to learn, Xavier 'stalled' (final loss 100% of the
    # initial) and the claim held although He init did not train either
    from depthlab.reproduce import he2015

    monkeypatch.setattr(he2015, "LR", 1e-9)
    monkeypatch.setattr(he2015, "_settings", lambda quick: dict(
        width=8, steps=30, probe_every=10, n_probe=32, train_ratio=0.05, seeds=(1,)))
    res = he2015.run(quick=True)
    stall = next(c for c in res.claims if "stalls" in c.claim)
    trains = next(c for c in res.claims if "He init: trains" in c.claim)
    assert not trains.holds
    assert not stall.holds, stall.measured
    assert "did not train either" in stall.measured


def test_ioffe_bn_stable_percentiles_do_not_hold_when_bn_did_not_learn(monkeypatch) -> None:
    # at lr 1e-5 nothing moves: 'with BN the percentiles stay stable' held at drift 0.00
    from depthlab.reproduce import ioffe2015

    monkeypatch.setattr(ioffe2015, "_settings", lambda quick: dict(steps=60, evals=3))
    monkeypatch.setattr(ioffe2015, "LR", 1e-5)
    res = ioffe2015.run(quick=True)
    stable = next(c for c in res.claims if c.claim.startswith("with BN the percentiles"))
    assert not stable.holds, stable.measured
    assert "did not learn" in stable.measured


def _xu_training(monkeypatch, acc: dict[str, float]):
    import pandas as pd

    from depthlab.reproduce import xu2016
    from depthlab.reproduce.base import Result

    frame = pd.DataFrame([{"network": c["label"], "gain vs Glorot": c["gain"], "seed": 3,
                           "train_acc": acc.get(c["label"], 0.1), "diverged": False}
                          for c in xu2016._train_configs()])
    monkeypatch.setattr(xu2016, "training_table", lambda *a, **k: frame)
    res = Result("xu2016", "t")
    d = xu2016.Inputs(width=8, seeds=[0], ds=None, dname="synthetic", train_width=8,
                      train_steps=10, train_seeds=[3], progress=None)
    xu2016.stage_training(d, res)
    return next(c for c in res.claims if "sigmoid net fails to train" in c.claim)


def test_xu_sigmoid_fails_does_not_hold_when_nothing_trains(monkeypatch) -> None:
    # every net at chance (nothing learning): 'the sigmoid net fails' held at 0.100
    fails = _xu_training(monkeypatch, {})
    assert not fails.holds, fails.measured
    assert "nothing trains" in fails.measured
    fails = _xu_training(monkeypatch, {"rescaled sigmoid 4σ−2": 0.95, "penalized tanh": 0.93})
    assert fails.holds, fails.measured


def test_depth_ladder_naive_fails_does_not_hold_when_nothing_trains() -> None:
    # every recipe at chance (deepest trainable 0): 'naive sigmoid recipes fail by depth 10'
    # held, the one claim of the ladder that passed where nothing trains
    from depthlab.reproduce import depth_ladder

    depths = [2, 5, 10, 20, 50]
    nothing = {k: 0 for k in depth_ladder.RECIPES}
    naive = next(c for c in depth_ladder.claims(nothing, depths)
                 if c.claim.startswith("naive sigmoid"))
    assert not naive.holds, naive.measured
    assert "nothing trains deep" in naive.measured
    assert not any(c.holds for c in depth_ladder.claims(nothing, depths))
    works = dict(nothing, **{k: 20 for k in depth_ladder.GOOD})
    assert next(c for c in depth_ladder.claims(works, depths)
                if c.claim.startswith("naive sigmoid")).holds


def _glorot_fig2(monkeypatch, top: list[float]):
    import pandas as pd

    from depthlab.reproduce import glorot2010
    from depthlab.reproduce.base import Result

    steps = range(len(top))
    f2 = pd.DataFrame([dict(step=t, layer=k, act_mean=top[t] if k == 4 else 0.5)
                       for t in steps for k in (1, 2, 3, 4)])
    monkeypatch.setattr(glorot2010, "_fig2", lambda shapes, cfg, progress: (
        f2, {"diverged": False}))
    monkeypatch.setattr(glorot2010, "_plot_fig2", lambda f2, cfg: None)
    res = Result("glorot2010", "t")
    glorot2010.stage_fig2(glorot2010.Inputs(None, None, {}, None), res)
    return res.claims


def test_glorot_lower_layers_unsaturated_needs_the_top_layer_saturated(monkeypatch) -> None:
    # nothing learning: every layer at its initial 0.5; '…while layers 1–3 stay unsaturated'
    # held alone
    top_claim, lower = _glorot_fig2(monkeypatch, [0.5, 0.5, 0.49])
    assert not top_claim.holds
    assert not lower.holds, lower.measured
    assert "did not saturate" in lower.measured
    top_claim, lower = _glorot_fig2(monkeypatch, [0.5, 0.05, 0.02])
    assert top_claim.holds and lower.holds, lower.measured


def test_yang_does_not_train_claims_need_the_residual_net_to_train(monkeypatch) -> None:
    # every net at chance: 'a plain 100-layer net does not train' and 'a smaller lr does not'
    # held although the residual control did not train either
    from depthlab.data import load_dataset
    from depthlab.progress import ExperimentProgress
    from depthlab.reproduce import yang2019
    from depthlab.reproduce.base import Result

    def run_with(acc: dict[str, float]):
        monkeypatch.setattr(yang2019, "build", lambda *a, **k: None)
        labels = [c[0] for c in yang2019.cures(10)]
        it = iter(labels)
        monkeypatch.setattr(yang2019, "train_accuracy",
                            lambda net, ds, n, seed, lr, progress=None: (acc[next(it)], False))
        ds = load_dataset("digits", seed=0)
        d = yang2019.Inputs([10], [8], [0], 8, ds, "digits", 10, 4,
                            ExperimentProgress.planned(
                                [yang2019.cure_label(lb) for lb in labels]))
        res = Result("yang2019", "t")
        yang2019.stage_cures(d, res)
        return res.claims, labels

    labels = [c[0] for c in yang2019.cures(10)]
    claims, _ = run_with(dict.fromkeys(labels, 0.1))
    plain, resid, slow = claims
    assert not resid.holds
    assert not plain.holds and not slow.holds, (plain.measured, slow.measured)
    assert "did not train either" in plain.measured
    claims, _ = run_with(dict(zip(labels, (0.1, 0.95, 0.1))))
    assert all(c.holds for c in claims), [c.measured for c in claims]
