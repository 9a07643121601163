"""Round 29 hunt of depthlab.torch.Watch in real training loops (watchhunt29)."""
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
dlt = pytest.importorskip("depthlab.torch")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))


@pytest.mark.parametrize("in_graph", [False, True])
def test_losses_of_a_loss_tensor_the_loop_reuses_in_place_are_each_steps_own(in_graph):
    # gradient accumulation into one running-loss tensor zeroed each step: the Watch kept a
    # view of it for the unrecorded steps, and losses() gave each of them the value the tensor
    # held at the next record (steps 1, 2: 0.231 where they were 1.504 and 0.721)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    total = torch.zeros(())
    true = []
    with dlt.Watch(model, every=3, theory=False) as watch:
        for _ in range(7):
            opt.zero_grad()
            if in_graph:
                total = torch.zeros(())
            else:
                total.zero_()
            for _ in range(2):  # two micro-batches
                x, y = torch.randn(4, 3, generator=g), torch.randn(4, 1, generator=g)
                part = nn.functional.mse_loss(model(x), y) / 2
                if in_graph:
                    total += part  # in place, in the graph: one backward of the sum
                else:
                    part.backward()
                    total += part.detach()
            if in_graph:
                total.backward()
            true.append(total.item())
            watch.step(total)
            opt.step()
            total.mul_(0.0) if in_graph else None  # the loop reuses it
    assert watch.losses()["loss"].tolist() == true
    recorded = watch.frame().query("quantity == 'loss'")["value"].tolist()
    assert recorded == [true[0], true[3], true[6]]


@pytest.mark.parametrize("name", ["", "   ", "run\udcff"])
def test_a_name_the_store_cannot_hold_is_refused_before_training(tmp_path, name):
    # a blank name (refused by `depthlab run --name`) made a run the report titled "Run    ",
    # and a name with a lone surrogate (os.fsdecode of a non-UTF-8 file name) trained, then
    # failed at close() with UnicodeEncodeError, and again at every close() after
    with pytest.raises(ValueError, match="name"):
        dlt.Watch(_mlp(), out=tmp_path, name=name)
    assert not (tmp_path / "depthlab.db").exists()


def test_the_torch_doctor_refuses_a_name_the_store_cannot_hold_before_its_runs(tmp_path):
    # the doctor trained and diagnosed, then failed to store with UnicodeEncodeError
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    with pytest.raises(ValueError, match="not UTF-8 text"):
        dlt.doctor(lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), (x, y),
                   steps=2, batch_size=8, out=tmp_path, name="doc\udcff")
    assert not (tmp_path / "depthlab.db").exists()


def test_a_ctrl_c_in_the_theory_run_of_the_first_record_leaves_the_step_counted_once():
    # the theory's forward (one more forward of the model inside the first recorded
    # watch.step) interrupted: the step's record was kept but the call not counted, so the
    # loop going on (a notebook cell run again) gave step 0 twice (losses() steps [0, 0]) and
    # the stored run said "after 0 steps"
    calls = []

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 5), nn.Linear(5, 2)

        def forward(self, x):
            calls.append(1)
            if len(calls) == 2:  # the theory's forward
                raise KeyboardInterrupt
            return self.b(torch.tanh(self.a(x)))

    torch.manual_seed(0)
    model = Net()
    watch = dlt.Watch(model, every=1)
    x = torch.randn(6, 3)
    losses = []
    for step in range(3):
        model.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        losses.append(loss.item())
        if step == 0:
            with pytest.raises(KeyboardInterrupt):
                watch.step(loss)
            assert watch.steps_seen == 1
        else:
            watch.step(loss)
    watch.close()
    assert watch.losses()["step"].tolist() == [0, 1, 2]
    assert watch.losses()["loss"].tolist() == losses
    assert not watch.frame().duplicated(["step", "layer", "quantity"]).any()  # recorded once
    assert watch.theory is not None  # computed at the next record


def test_a_store_that_refuses_the_runs_rows_is_refused_before_training(tmp_path):
    # a store that opens but refuses writes (read-only, full, or a later version's tables:
    # here a trigger) passed Watch(out=...) and failed at close(), after the training, as the
    # doctor and `depthlab run` refuse it before theirs (Store.check_writable)
    import sqlite3

    from depthlab.experiments.store import Store

    with Store(tmp_path):
        pass
    con = sqlite3.connect(tmp_path / "depthlab.db")
    con.execute("CREATE TRIGGER refuse BEFORE INSERT ON probes "
                "BEGIN SELECT RAISE(ABORT, 'this store takes no rows'); END")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="cannot hold the run.*not writable"):
        dlt.Watch(_mlp(), out=tmp_path)


def test_a_stored_watch_run_has_its_parameter_count_as_the_numpy_runs_do(tmp_path):
    # runs()/export's n_parameters column (METRIC_KEYS) was empty for a Watch run, though its
    # config holds model.parameters
    from depthlab.experiments.store import Store

    model = _mlp()
    with dlt.Watch(model, every=1, out=tmp_path, theory=False) as watch:
        loss = model(torch.randn(4, 3)).pow(2).mean()
        loss.backward()
        watch.step(loss)
    with Store(tmp_path) as store:
        assert store.runs()["n_parameters"].tolist() == [3 * 8 + 8 + 8 + 1]


def _stored(tmp_path):
    from depthlab.experiments.store import Store

    with Store(tmp_path) as store:
        runs = store.runs()
    return runs["status"].tolist(), runs["error"].tolist()


def test_a_with_block_left_by_a_clean_exit_stores_a_finished_run(tmp_path):
    # sys.exit(0) (early stopping in a script) and GeneratorExit (a generator-based loop whose
    # consumer stops, as a `break` would) stored a 'failed' run: "SystemExit: 0"
    import sys

    model = _mlp()

    def one_step(watch):
        model.zero_grad()
        loss = model(torch.randn(4, 3)).pow(2).mean()
        loss.backward()
        watch.step(loss)
        return loss

    with pytest.raises(SystemExit):
        with dlt.Watch(model, every=1, out=tmp_path / "exit", theory=False) as watch:
            one_step(watch)
            sys.exit(0)
    assert _stored(tmp_path / "exit") == (["finished"], [None])

    def loop():
        with dlt.Watch(model, every=1, out=tmp_path / "gen", theory=False) as watch:
            while True:
                yield one_step(watch)

    steps = loop()
    next(steps)
    next(steps)
    steps.close()
    assert _stored(tmp_path / "gen") == (["finished"], [None])

    with pytest.raises(SystemExit):  # an exit with an error status is a failure
        with dlt.Watch(model, every=1, out=tmp_path / "fail", theory=False) as watch:
            one_step(watch)
            sys.exit("out of data")
    assert _stored(tmp_path / "fail") == (["failed"], ["SystemExit: out of data"])
