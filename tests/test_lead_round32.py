"""Lead's round-32 regression tests."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import depthlab.torch as dlt  # noqa: E402


def test_watch_losses_mid_run_lists_every_step_so_far():
    """``watch.losses()`` between records lists every step seen, not only those up to the
    last record (every=3 after 5 steps: steps 0..4, each the loss the loop computed)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    loss_fn = torch.nn.CrossEntropyLoss()
    watch = dlt.Watch(model, every=3)
    seen = []

    def train(steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
            seen.append(loss.item())

    try:
        train(5)
        mid = watch.losses()
        assert mid["step"].tolist() == [0, 1, 2, 3, 4]
        assert mid["loss"].tolist() == pytest.approx(seen, rel=1e-7)
        # and nothing is listed twice when the next record or close transfers again
        train(2)
    finally:
        watch.close()
    end = watch.losses()
    assert end["step"].tolist() == list(range(7))
    assert end["loss"].tolist() == pytest.approx(seen, rel=1e-7)


def test_a_hand_built_networks_final_activation_is_its_output_not_a_hidden_layer(tmp_path):
    """``dl.Network([Dense, tanh, Dense, softmax])`` probes one hidden layer, as the same
    network built by ``dl.mlp(output_activation="softmax")`` and as its saved copy (the final
    softmax was probed as a second hidden layer before saving and not after)."""
    import numpy as np

    import depthlab as dl
    from depthlab.layers import Activation, Dense

    rng = np.random.default_rng(0)
    net = dl.Network([Dense(4, 6, rng=rng, dtype="float64"), Activation("tanh"),
                      Dense(6, 3, rng=rng, dtype="float64"), Activation("softmax")],
                     n_inputs=4, dtype="float64")
    x, y = rng.normal(size=(8, 4)), np.eye(3)[rng.integers(0, 3, 8)]
    table = dl.probe(net, x, y, loss="mse")
    assert sorted(set(table["layer"])) == [0, 1]
    dl.save(net, tmp_path / "n.npz")
    again = dl.probe(dl.load(tmp_path / "n.npz"), x, y, loss="mse")
    assert table.shape == again.shape
    np.testing.assert_array_equal(table["value"].to_numpy(), again["value"].to_numpy())


def test_runs_sweep_takes_the_hex_part_of_a_sweeps_id(tmp_path, capsys):
    """``depthlab runs DIR --sweep 3477`` (the id as shown without its ``sw-``) lists that
    sweep's points, as ``--sweep sw-3477`` does (it was 'not a sweep of DIR')."""
    import json

    from helpers.cli import assert_one_line_error, run_cli

    from depthlab.experiments import Store
    from depthlab.experiments.store import RunRecord

    with Store(tmp_path) as s:
        for sweep, rid in (("sw-3477bc", "r1"), ("sw-34aa00", "r2"), ("sw-bb33", "r3")):
            s.add_run(RunRecord(id=rid, kind="sweep-point", sweep=sweep))
    code, out, err = run_cli(capsys, "runs", tmp_path, "--sweep", "3477", "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)] == ["r1"]
    code, _, err = run_cli(capsys, "runs", tmp_path, "--sweep", "34")
    assert_one_line_error(code, err, "'34' is the start of 2 sweeps")
