"""Round 40 (clihunt40): the CLI, the store and data loading as a demanding user meets them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

TINY = ('[model]\nsizes = ["auto", 4, "auto"]\n'
        '[train]\nepochs = 1\n[probes]\nevery = 0\njacobian = false\n')


def _unreadable_kinds(tmp_path):
    """Data paths of kinds the loader refuses, each with content worth not reading."""
    (tmp_path / "data.parquet").write_bytes(b"PAR1" + b"\0" * 4096)
    np.save(tmp_path / "data.npy", np.zeros((8, 4), np.float32))
    (tmp_path / "fake.npz").write_bytes(b"not a zip" * 512)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "movie.mkv").write_bytes(b"\1" * 4096)


@pytest.mark.parametrize("name", ["data.parquet", "data.npy", "fake.npz", "folder"])
def test_a_data_path_the_loader_refuses_is_not_read_whole_first(tmp_path, monkeypatch, capsys,
                                                                name):
    # data.path = a 100 GB .npy (or .parquet, a folder of videos) read the whole file for the
    # run id's fingerprint (minutes) before the loader said it does not read such a file
    from depthlab.cli import main
    from depthlab.data import fingerprint

    _unreadable_kinds(tmp_path)
    read: list[str] = []
    real = fingerprint._file_digest
    monkeypatch.setattr(fingerprint, "_file_digest", lambda p: read.append(p.name) or real(p))
    (tmp_path / "c.toml").write_text(f'[data]\npath = "{tmp_path / name}"\n' + TINY)
    assert main(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("depthlab: error:"), err
    assert read == [], f"read for the fingerprint before the refusal: {read}"
    if name != "folder":
        assert fingerprint.digest(tmp_path / name) is None


def test_a_run_stored_by_another_process_meanwhile_is_said_so(tmp_path, monkeypatch, capsys):
    # two `depthlab run` of one config into one store at once: the second to finish said only
    # "run ID named 'x' (finished) is already stored in '...'" (no word that another process
    # stored it while this one trained, that this run was not stored, nor of --overwrite)
    import depthlab.experiments as experiments
    from depthlab.cli import main
    from depthlab.experiments import Store

    out = tmp_path / "r"
    real = experiments.train

    def train_while_another_stores(prep, **kwargs):
        rec = real(prep, **kwargs)
        other = Store(out, create=True)  # the other process, done first
        other.add_run(rec)
        other.close()
        return rec

    monkeypatch.setattr(experiments, "train", train_while_another_stores)
    (tmp_path / "c.toml").write_text('name = "x"\n[data]\nname = "spirals"\nn = 60\n' + TINY)
    assert main(["run", str(tmp_path / "c.toml"), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "another process" in err and "--overwrite" in err, err
    assert "not stored" in err, err
    assert list((out / "models").glob("*")) == []  # no network beside the other's record


def test_classes_only_in_the_official_test_part_are_said(tmp_path):
    # an .npz whose x_test holds classes 2..4 that x_train never has trained silently (5
    # outputs, 3 of them never trained); one whose training labels are a single class (its
    # test part two) trained a one-class classifier, where a file of one class is refused
    from depthlab.data import load_dataset

    r = np.random.default_rng(0)
    x = r.normal(size=(40, 3)).astype(np.float32)
    y = np.arange(40) % 2
    np.savez(tmp_path / "a.npz", x_train=x, y_train=y, x_test=x[:5], y_test=np.arange(5))
    with pytest.warns(UserWarning, match=r"classes 2, 3, 4 of the test part have no training "):
        load_dataset(str(tmp_path / "a.npz"))
    np.savez(tmp_path / "b.npz", x_train=x, y_train=0 * y, x_test=x[:6], y_test=np.arange(6) % 2)
    with pytest.raises(ValueError, match=r"training labels are 0 \(a single class\)"):
        load_dataset(str(tmp_path / "b.npz"))
    np.savez(tmp_path / "c.npz", x_train=x, y_train=y, x_val=x[:4], y_val=y[:4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(str(tmp_path / "c.npz"))  # the same classes: nothing said


@pytest.mark.parametrize(("host", "meant"), [
    ("http://127.0.0.1", "--host 127.0.0.1"), ("127.0.0.1:8080", "--host 127.0.0.1 --port 8080"),
    ("http://localhost:9000/", "--host localhost --port 9000"),
    ("[::1]:8080", "--host ::1 --port 8080")])
def test_a_playground_host_written_as_a_url_says_which_options_were_meant(capsys, host, meant):
    # `--host http://127.0.0.1` waited for the name lookup, then said "Name or service not
    # known" about 'http://127.0.0.1:8765'; `--host 127.0.0.1:8080` the same of '...:8080:8765'
    from depthlab.cli import main

    assert main(["playground", "--host", host, "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"did you mean {meant}?" in err, err


@pytest.mark.parametrize("host", ["::1", "fe80::1", "0.0.0.0", "localhost", "[::1]"])
def test_a_playground_host_without_scheme_or_port_is_taken(host):
    from depthlab.cli.playground import _host

    assert _host(host) == host


def test_fashion_mnist_pointed_at_a_file_names_its_folder(tmp_path, monkeypatch):
    # DEPTHLAB_FASHION_MNIST=.../train-images-idx3-ubyte said only "files not found
    # (searched: .../train-images-idx3-ubyte ...)", the file found being named as searched
    from depthlab.data import fashion_mnist

    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(b"")
    monkeypatch.setenv(fashion_mnist.ENV, str(images))
    with pytest.raises(FileNotFoundError) as err:
        fashion_mnist.load()
    msg = str(err.value)
    assert f"is a file; expected the folder holding the four files (its folder {str(tmp_path)!r}"\
        in msg, msg


def test_a_stored_config_that_is_not_json_names_its_run(tmp_path, capsys):
    # one row's config edited outside depthlab made `depthlab runs`/report/export say only "a
    # stored value is not valid JSON", with no word of which of the runs to mend or delete
    import sqlite3

    from depthlab.cli import main

    (tmp_path / "c.toml").write_text('[data]\nname = "spirals"\nn = 60\n' + TINY)
    out = tmp_path / "r"
    assert main(["run", str(tmp_path / "c.toml"), "--out", str(out), "-q"]) == 0
    con = sqlite3.connect(out / "depthlab.db")
    (rid,) = con.execute("SELECT id FROM runs").fetchone()
    con.execute("UPDATE runs SET config = '{not json'")
    con.commit()
    con.close()
    capsys.readouterr()
    assert main(["runs", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"run {rid!r} has a config that is not valid JSON" in err, err
