"""Round 27 hunt of depthlab.torch.Watch in real training loops (watchhunt27)."""
import tracemalloc

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
dlt = pytest.importorskip("depthlab.torch")


def _mlp():
    return nn.Sequential(nn.Linear(32, 128), nn.Tanh(), nn.Linear(128, 128), nn.ReLU(),
                         nn.Linear(128, 4))


def _train_step(model, opt, watch, x, y):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    watch.step(loss)
    opt.step()


@pytest.mark.parametrize("percentiles, theory", [((50.0,), False), ((), True)])
def test_validation_forwards_with_gradients_while_armed_are_not_kept(percentiles, theory):
    # A validation loop that forgets torch.no_grad() while the Watch is armed (before its first
    # record, or before any record's training forward): every forward with gradients and no
    # backward was kept as an "earlier pass" (up to 4096 of them) that settle() might pool,
    # with its copies of every layer output for the percentiles (201 MiB after 50 batches of a
    # small MLP) and, before the first record, a clone of its input for the theory. Their
    # graphs were freed, so no backward can ever grade them: they are dropped.
    torch.manual_seed(0)
    x, y = torch.randn(64, 32), torch.randint(0, 4, (64,))
    x_val = torch.randn(128, 32)
    model = _mlp()
    twin = _mlp()
    twin.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt_twin = torch.optim.SGD(twin.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=2, percentiles=percentiles, theory=theory)
    clean = dlt.Watch(twin, every=2, percentiles=percentiles, theory=theory)
    tracemalloc.start()
    try:
        for step in range(3):
            if step % 2:  # not armed: runs without hooks
                _train_step(model, opt, watch, x, y)
                _train_step(twin, opt_twin, clean, x, y)
                continue
            model.eval()
            for i in range(16):  # no torch.no_grad(): graphs built and dropped
                if i == 4:  # (the first calls' one-time allocations left out)
                    before = tracemalloc.get_traced_memory()[0]
                model(x_val).argmax(1)
            model.train()
            held = tracemalloc.get_traced_memory()[0] - before
            # (main: 3.1 MiB with percentiles, the copies of 12 forwards' layer outputs)
            assert held < 1 << 20, f"{held / 2**20:.1f} MiB held by 12 validation forwards"
            assert len(watch._rec._earlier) <= 2, step
            assert sum(q.input is not None for q in watch._rec._earlier) <= 2
            _train_step(model, opt, watch, x, y)
            _train_step(twin, opt_twin, clean, x, y)
    finally:
        tracemalloc.stop()
    watch.close()
    clean.close()
    a, b = watch.frame(), clean.frame()
    assert len(a) == len(b) and set(a.step) == {0, 2}
    # (a ReLU's act_* rows of step 0 differ in the last bit: the fused ReLU pass is not taken
    # after a validation forward, on main too)
    assert a[["step", "layer", "quantity"]].equals(b[["step", "layer", "quantity"]])
    assert a.value.to_numpy() == pytest.approx(b.value.to_numpy(), rel=1e-6, abs=0)
    assert watch.theory_note == clean.theory_note


def _percentile_table(percentiles, steps=(0, 3, 6, 9)):
    import pandas as pd

    rows = []
    for step in steps:
        for k in percentiles:
            rows.append((step, 1, f"pre_p{k:g}", step * 0.1 + (k - 50) / 25))
        rows.append((step, 1, "act_mean", 0.0))
    return pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])


@pytest.mark.parametrize("percentiles, bands, lines", [
    ((5, 50, 95), ["5–95th pct"], []),
    ((10, 25, 50, 75, 90), ["10–90th pct", "25–75th pct"], []),
    ((2, 15, 50, 85, 98), ["2–98th pct", "15–85th pct"], []),
    ((1, 50, 90, 99), ["1–99th pct"], ["90th pct"]),
])
def test_the_percentile_figure_draws_the_percentiles_the_run_recorded(percentiles, bands, lines):
    # a Watch (or dlt.probe) with percentiles=(5, 50, 95) stored pre_p5/pre_p95 rows that the
    # report's percentile figure ignored: it drew only 2-98 and 15-85 bands, so its figure
    # showed the median alone
    from matplotlib.collections import PolyCollection

    from depthlab.report import figures

    table = _percentile_table(percentiles)
    ax = figures.percentile_bands(table).axes[0]
    filled = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert [c.get_label() for c in filled] == bands
    # each band spans its two recorded percentiles
    lo, hi = (float(k) for k in bands[0].split("th")[0].split("–"))
    top = filled[0].get_paths()[0].vertices[:, 1]
    assert top.min() == pytest.approx((lo - 50) / 25)
    assert top.max() == pytest.approx(0.9 + (hi - 50) / 25)
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert "median" in labels and all(k in labels for k in lines)
    # few recorded steps: the innermost pair as error bars
    few = figures.percentile_bands(_percentile_table(percentiles, steps=(0, 5))).axes[0]
    assert any(c.get_label() == f"{bands[-1]} (few steps)" for c in few.containers)
