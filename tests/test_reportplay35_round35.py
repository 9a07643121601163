"""Round 35 (reportplay35): what a person sees in the HTML report and the playground."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _drawn_segments(line) -> list[tuple[float, float]]:
    """The (x0, x1) of every segment a matplotlib line draws: consecutive points both finite
    (a NaN point breaks the line)."""
    xy = np.asarray(line.get_xydata(), float)
    ok = np.isfinite(xy).all(axis=1)
    return [(xy[i, 0], xy[i + 1, 0]) for i in range(len(xy) - 1) if ok[i] and ok[i + 1]]


def test_the_training_loss_is_not_drawn_across_steps_whose_loss_was_not_finite():
    """A depthlab.torch Watch run whose loop skipped two bad batches (loss NaN at steps 5, 6,
    as a GradScaler skips an overflowed step) and trained on. The figure's title said "not
    drawn: not finite (NaN/inf) at steps 5, 6", but the per-step line joined step 4 to step 7
    with a straight segment: losses never recorded, drawn as if they were (the update-ratio
    and activation figures beside it break their lines there). Also 120 steps (with the EMA):
    the smoothed line must not cross the gap either, and a finite step alone between two NaN
    steps is still shown (a dot)."""
    from depthlab.report import figures

    for n, bad in ((20, [5, 6]), (120, [40, 41, 42, 60, 62])):
        x = np.arange(n)
        loss = 1.1 - 0.002 * x
        loss[bad] = np.nan
        fig = figures.training_curves(pd.DataFrame({"step": x, "loss": loss}))
        ax = fig.axes[0]
        assert "not finite (NaN/inf)" in ax.get_title()
        finite = set(x[np.isfinite(loss)].tolist())
        drawn: set[float] = set()
        for line in ax.lines:
            for x0, x1 in _drawn_segments(line):
                # every drawn segment joins two recorded neighbours (was: 4 -> 7)
                assert (x0, x1) in {(a, a + 1) for a in finite if a + 1 in finite}, \
                    (line.get_label(), x0, x1)
            xy = np.asarray(line.get_xydata(), float)
            drawn |= set(xy[np.isfinite(xy).all(axis=1), 0].tolist())
        assert finite <= drawn  # step 61 (NaN at 60 and 62) is still drawn
        import matplotlib.pyplot as plt
        plt.close(fig)


def test_a_runs_validation_every_k_steps_is_drawn_beside_its_epochs():
    """`train.eval_every = 25` records a validation every 25 steps (Store.evals); the report's
    training figure drew only the per-epoch values when the run also had epochs (every NumPy
    run does): the 12 evaluations a user asked for appeared nowhere in the report. Now both
    panels draw them over training steps, the epochs' values at their steps beside them."""
    import matplotlib.pyplot as plt

    from depthlab.report import figures

    x = np.arange(1, 301)
    steps = pd.DataFrame({"step": x, "loss": 1.0 / np.sqrt(x)})
    ep_steps = np.array([44, 88, 132, 176, 220, 264, 300])
    epochs = pd.DataFrame({"epoch": np.arange(1, 8), "step": ep_steps,
                           "train_loss": 1 / np.sqrt(ep_steps), "val_loss": 1.1 / np.sqrt(ep_steps),
                           "train_acc": 0.6 + ep_steps / 2000, "val_acc": 0.58 + ep_steps / 2000})
    ev_steps = np.arange(25, 301, 25)
    evals = pd.DataFrame({"step": ev_steps, "epoch": np.ceil(ev_steps / 44),
                          "val_loss": 1.2 / np.sqrt(ev_steps), "val_acc": 0.5 + ev_steps / 1500})
    fig = figures.training_curves(steps, epochs, evals)
    loss_ax, acc_ax = fig.axes[:2]

    def has_line(ax, xs, ys) -> bool:
        return any(len(ln.get_xdata()) == len(xs)
                   and np.allclose(np.asarray(ln.get_xdata(), float), xs)
                   and np.allclose(np.asarray(ln.get_ydata(), float), ys)
                   for ln in ax.lines)

    assert has_line(acc_ax, ev_steps, evals["val_acc"]), "the evaluations' accuracy"
    assert has_line(loss_ax, ev_steps, evals["val_loss"]), "the evaluations' loss"
    # the epochs' accuracy, on the same axis of training steps (at the step each epoch ended)
    assert has_line(acc_ax, ep_steps, epochs["val_acc"])
    assert acc_ax.get_xlabel() == "training step"
    labels = [t.get_text() for t in acc_ax.get_legend().get_texts()]
    assert any("every 25 steps" in t for t in labels), labels
    plt.close(fig)


def test_the_report_shows_the_recorded_input_output_jacobian_singular_values(tmp_path):
    """`[probes] jacobian = true` (README's example config, examples/digits_run.toml) records
    the input-output Jacobian's singular values at the start and the end (Store.jacobian);
    the report drew them nowhere. Now a run's section has a figure of them, and its caption
    gives each step's mean σ² (the quantity variance propagation predicts) and range, equal
    to a direct computation from the stored values."""
    import dataclasses
    import re

    from test_report import synthetic_record

    from depthlab.experiments import Store
    from depthlab.report import write_report

    g = np.random.default_rng(3)
    rows = []
    for step, scale in ((0, 0.7), (200, 1.3)):
        for example in range(4):
            for idx, v in enumerate(np.sort(scale * g.lognormal(0, 0.8, 10))[::-1]):
                rows.append((step, example, idx, float(v)))
    jac = pd.DataFrame(rows, columns=["step", "example", "idx", "value"])
    store = Store(tmp_path)
    rec = synthetic_record("jj01aaaaaaaa", depth=3, sweep=None, probes=False)
    store.add_run(dataclasses.replace(rec, name="with-jacobian", jacobian=jac))
    store.close()
    html = write_report(tmp_path).read_text(encoding="utf-8")
    assert "Input–output Jacobian singular values" in html
    assert (tmp_path / "figures" / "with-jacobian_jacobian.png").is_file()
    cap = html[html.index("Input–output Jacobian singular values"):]
    cap = cap[:cap.index("</figcaption>")]
    for step, vals in jac.groupby("step")["value"]:
        v = vals.to_numpy()
        num = r"([0-9.e+-]*[0-9])"
        m = re.search(rf"step {step}: mean σ² {num}, σ {num} to {num}", cap)
        assert m, cap
        got = [float(t) for t in m.groups()]
        np.testing.assert_allclose(got, [np.mean(v ** 2), v.min(), v.max()], rtol=6e-4)


EXPLODING = "model.depth=20&model.width=32&model.activation=relu&model.init=normal"
