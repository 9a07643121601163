"""A new user's walk through README.md, round 14: every documented example and command tried
with the variations a user tries next (other data sets, options, wrong inputs, Ctrl-C in the
middle of a long command). The bugs it found, one regression test each."""

from __future__ import annotations

import pytest
from helpers.cli import assert_one_line_error, one_blas_thread, run_cli

TINY = """name = "tiny"
[data]
name = "spirals"
[model]
sizes = ["auto", 4, "auto"]
[train]
epochs = 1
seed = {seed}
[probes]
every = 20
"""


def test_discover_lists_layers_in_one_short_line_each():
    """README: ``dlt.discover(model, x)`` lists the layers. Its ``LayerInfo`` repr was the
    dataclass's: the whole ``owner`` module and every weight tensor, so printing the list for
    the README's 3-layer MLP gave ~60 lines of numbers. Now one line per layer, the weights
    as their shapes."""
    torch = pytest.importorskip("torch")
    from torch import nn

    import depthlab.torch as dlt

    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(inplace=True), nn.Linear(64, 64),
                          nn.Tanh(), nn.Linear(64, 3))
    layers = dlt.discover(model, torch.randn(8, 20))
    text = repr(layers)
    assert "tensor(" not in text and "Parameter containing" not in text, text
    lines = [repr(info) for info in layers]
    assert all("\n" not in line and len(line) < 160 for line in lines), lines
    assert lines[0] == ("LayerInfo(index=1, name='0', kind='Linear', weights=[(64, 20)], "
                        "feature_axis=-1, norm=None, activation='1', calls=1)")
    assert "weights=[(3, 64)]" in lines[2] and "activation=None" in lines[2]


def test_fit_with_a_model_option_says_it_belongs_to_mlp():
    """README's regularization row lists ``dropout=`` beside ``dl.fit(..., l1=, l2=)``; a user's
    ``dl.fit(net, x, y, dropout=0.2)`` was "unknown option 'dropout'" with a 40-name list and
    no word of where dropout goes. Now the message says it is a model option of ``dl.mlp``
    (and the README row says ``dl.mlp(..., dropout=)``)."""
    import numpy as np

    import depthlab as dl

    net = dl.mlp([4, 8, 2], seed=0)
    x, y = np.ones((4, 4), np.float32), np.array([0, 1, 0, 1])
    for key, value in (("dropout", 0.2), ("batchnorm", True)):
        with pytest.raises(TypeError, match=rf"'{key}' \({key} is a model option: "
                           rf"dl\.mlp\(\.\.\., {key}=\.\.\.\)\)"):
            dl.fit(net, x, y, epochs=1, **{key: value})
    with pytest.raises(TypeError, match=r"did you mean 'momentum'"):  # the typo hint stays
        dl.fit(net, x, y, epochs=1, momentun=0.9)


def test_interrupted_export_keeps_the_previous_export_whole(tmp_path, monkeypatch, capsys):
    """README: Ctrl-C stops any command; nothing is left half-written. ``depthlab export`` wrote
    its 9 tables one after the other, each renamed into place when done: interrupted while
    writing histograms.csv (`timeout -s INT 2.5 depthlab export`), it left runs.csv, steps.csv,
    epochs.csv, evals.csv and probes.csv new (34 runs) beside the previous histograms.csv (10
    runs). Now every table is written to a temporary first and all are renamed together: the
    previous export stays whole, and no temporary is left."""
    from depthlab.experiments.store import Store

    one_blas_thread(monkeypatch)
    monkeypatch.chdir(tmp_path)
    for seed in (0, 1):
        (tmp_path / "tiny.toml").write_text(TINY.format(seed=seed))
        code, _, err = run_cli(capsys, "run", "tiny.toml", "--out", "res", "--quiet")
        assert code == 0, err
        if seed == 0:
            code, _, err = run_cli(capsys, "export", "res")
            assert code == 0, err
            before = {p.name: p.read_bytes() for p in (tmp_path / "res/export").iterdir()}
    write_table = Store._write_table  # each table but runs, written a chunk at a time

    def interrupted(self, name, fh, fmt):
        if name == "histograms":  # the Ctrl-C comes while the 6th table is written
            raise KeyboardInterrupt
        return write_table(self, name, fh, fmt)

    monkeypatch.setattr(Store, "_write_table", interrupted)
    code, _, err = run_cli(capsys, "export", "res")
    assert code == 130 and err.strip() == "depthlab: interrupted", err
    after = {p.name: p.read_bytes() for p in (tmp_path / "res/export").iterdir()}
    assert after == before  # runs.csv still lists the one run that histograms.csv holds
    monkeypatch.setattr(Store, "_write_table", write_table)
    code, _, err = run_cli(capsys, "export", "res")  # and an export that ends replaces all
    assert code == 0, err
    runs = (tmp_path / "res/export/runs.csv").read_text().splitlines()
    assert len(runs) == 3 and after["runs.csv"].decode().count("\n") == 2


def test_interrupted_report_keeps_the_previous_report_and_figures(tmp_path, monkeypatch,
                                                                   capsys):
    """README: a killed report keeps the old one; the figure list promises that figures/ never
    mixes two reports' PNG copies. The report wrote its PNG copies one by one (an fsync each),
    then report.html: a Ctrl-C among those writes left the new report's first PNG copies
    beside the previous report.html and figure list. Now all are written, then all renamed."""
    import depthlab.atomic as atomic
    from depthlab.report.build import FIGURE_LIST

    one_blas_thread(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY.format(seed=0))
    code, _, err = run_cli(capsys, "run", "tiny.toml", "--out", "res", "--quiet")
    assert code == 0, err
    (tmp_path / "res/figures").mkdir()  # a previous report (of other runs)
    (tmp_path / "res/figures/old_training.png").write_bytes(b"old png")
    (tmp_path / "res/figures" / FIGURE_LIST).write_text('["old_training.png"]')
    (tmp_path / "res/report.html").write_text("<p>the previous report</p>")

    def files() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in [*(tmp_path / "res/figures").iterdir(),
                                                  tmp_path / "res/report.html"]}

    before = files()
    fsync, calls = atomic.os.fsync, []

    def interrupted(fd):
        calls.append(fd)
        if len(calls) == 3:  # Ctrl-C while the third file of the new report is written
            raise KeyboardInterrupt
        fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", interrupted)
    code, _, err = run_cli(capsys, "report", "res", "--quiet")
    assert code == 130, err
    assert files() == before  # no new PNG copy beside the old report, no temporary left


def test_interrupted_reproduce_keeps_the_previous_claims_and_report(tmp_path, monkeypatch):
    """``depthlab reproduce NAME --out DIR`` into a folder of an earlier run: claims.json was
    replaced first, then checks.json, each PNG and report.html, one by one; a Ctrl-C among
    those writes left the new claims beside the previous report.html (whose claims table
    said otherwise). Now all are written, then all renamed."""
    import depthlab.atomic as atomic
    from depthlab.reproduce.base import Claim, Experiment, Result
    from depthlab.reproduce.page import write_result

    exp = Experiment("t", "T", "paper", lambda **kw: None)
    write_result(Result("a", "A", claims=[Claim("old claim", "p", "m", True, 1.0)],
                        checks=[Claim("identity", "p", "m", True, 0.0)]), tmp_path, exp)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    fsync, calls = atomic.os.fsync, []

    def interrupted(fd):
        calls.append(fd)
        if len(calls) == 2:  # Ctrl-C while the second file (checks.json) is written
            raise KeyboardInterrupt
        fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", interrupted)
    new = Result("a", "A", claims=[Claim("new claim", "p", "m", False, 2.0)],
                 checks=[Claim("identity", "p", "m", True, 0.0)])
    with pytest.raises(KeyboardInterrupt):
        write_result(new, tmp_path, exp)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    monkeypatch.setattr(atomic.os, "fsync", fsync)
    write_result(new, tmp_path, exp)
    assert "new claim" in (tmp_path / "claims.json").read_text()
    assert "new claim" in (tmp_path / "report.html").read_text()


def test_starter_config_lists_every_loss_and_optimizer(tmp_path, monkeypatch, capsys):
    """``depthlab init myexp`` (README): the starter's comments list the losses and the
    optimizers in full (the activations and initializers end with "..."); the optimizer list
    left out adamw."""
    from depthlab.losses import LOSSES
    from depthlab.optimizers import OPTIMIZERS

    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "init", "myexp")
    assert code == 0, err
    lines = (tmp_path / "myexp.toml").read_text().splitlines()
    for key, names in (("loss", LOSSES), ("optimizer", OPTIMIZERS)):
        comment = next(line for line in lines if line.startswith(f"{key} ="))
        listed = {n.strip() for n in comment.split("#", 1)[1].split(",")}
        assert listed == set(names), (key, sorted(listed), sorted(names))


def test_missing_label_column_hint_names_the_config_key(tmp_path, monkeypatch, capsys):
    """``depthlab run`` on a CSV whose labels are in a column named ``target``: the one-line
    error told a command-line user to "Pass label='COLUMN'", a Python call. Now it names the
    config key (``data.label``) as well as the Python argument."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.csv").write_text("target,a,b\n0,1.0,2.0\n1,3.0,4.0\n0,5.0,6.0\n1,7.0,8.0\n")
    (tmp_path / "t.toml").write_text('[data]\npath = "t.csv"\n[model]\n'
                                     'sizes = ["auto", 4, "auto"]\n')
    code, _, err = run_cli(capsys, "run", "t.toml", "--out", "res", "--quiet")
    assert_one_line_error(code, err, "no label column 'label'", "'target'",
                          'data.label = "COLUMN"')


def test_doctor_of_a_from_torch_network_reads_its_batch_norm():
    """README: ``from_torch`` turns an ``nn.Sequential`` back into a depthlab network, and
    ``dl.doctor(net, data)`` diagnoses a network. Such a network has no recipe (empty
    ``config``), and the rules read batch norm from the config: a batch-normalized tanh
    network with N(0, 1) weights copied through to_torch/from_torch got an init_mismatch
    finding (variance 48x Glorot's, "(init ?)") that the very same ``dl.mlp`` network does not
    get, under the header "depthlab doctor: network ?, init ?"."""
    pytest.importorskip("torch")
    import numpy as np

    import depthlab as dl
    from depthlab.bridge.torch_bridge import from_torch, to_torch

    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 16)).astype(np.float32)
    y = (x[:, :4].argmax(axis=1)).astype(np.int64)
    data = (x, y, x[:60], y[:60])
    net = dl.mlp([16] + [16] * 6 + [4], "tanh", init="normal", batchnorm=True, seed=0)
    copied = from_torch(to_torch(net))
    assert copied.config == {}
    kinds = [f.kind for f in dl.doctor(net, data, steps=30).findings]
    diagnosis = dl.doctor(copied, data, steps=30)
    assert [f.kind for f in diagnosis.findings] == kinds and "init_mismatch" not in kinds
    assert str(diagnosis).splitlines()[0] == (
        "depthlab doctor: 16-16-16-16-16-16-16-4 tanh, init as built (batchnorm)")
    plain = from_torch(to_torch(dl.mlp([16] + [16] * 6 + [4], "tanh", init="normal", seed=0)))
    found = {f.kind: f for f in dl.doctor(plain, data, steps=30).findings}
    assert "(init as built)" in found["init_mismatch"].message  # not "(init ?)"


def test_from_torch_layers_do_not_claim_zero_initial_weights():
    """``print(from_torch(model))`` showed every Dense as ``init='zeros'`` (the bridge built
    them with zeros, then copied torch's weights in): a user reads that the weights are 0."""
    pytest.importorskip("torch")
    from torch import nn

    from depthlab.bridge.torch_bridge import from_torch

    net = from_torch(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)))
    assert "zeros" not in repr(net) and repr(net).count("init='from_torch'") == 2, repr(net)
    assert abs(net.layers[0].W.value).sum() > 0
