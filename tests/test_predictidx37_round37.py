"""Round 37 (predictidx37): `depthlab predict` on IDX data (a folder, a labels file, an images
file whose labels file lies beside it) and a bare HOST:PORT given as --cluster."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from helpers.cli import run_cli

from depthlab.data.idx import write_idx


def _one_line_error(code: int, err: str, *parts: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1, err
    for part in parts:
        assert part in err, (part, err)


@pytest.fixture(scope="module")
def idx_run(tmp_path_factory):
    """An IDX folder of 20 training and 6 test images (4x4 uint8, 2 classes) and a run trained
    on it: (folder, results folder, run id)."""
    import sys

    from depthlab.cli import main

    base = tmp_path_factory.mktemp("idx37")
    folder = base / "idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 255, (20, 4, 4)).astype(np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte", (np.arange(20) % 2).astype(np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 255, (6, 4, 4)).astype(np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte", (np.arange(6) % 2).astype(np.uint8))
    cfg = base / "c.toml"
    cfg.write_text(f'[data]\npath = "{folder}"\n[model]\nsizes = ["auto", 4, "auto"]\n'
                   '[train]\nepochs = 1\n')
    out = base / "res"
    old = sys.stdout
    try:
        assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    finally:
        sys.stdout = old
    run_id = next((out / "models").glob("*.npz")).stem
    return folder, out, run_id


def _accuracy(err: str) -> tuple[int, float] | None:
    m = re.search(r": (\d+) rows, accuracy ([0-9.]+)", err)
    return (int(m.group(1)), float(m.group(2))) if m else None


def test_an_idx_folder_is_predicted_on_its_test_images_and_scored(idx_run, capsys):
    """'DATA 'idx' is a folder; expected a .npy, .npz or .csv file' (training reads it)."""
    folder, out, run_id = idx_run
    code, text, err = run_cli(capsys, "predict", run_id, folder, "--dir", out)
    assert code == 0, err
    assert "predicting its test images" in err and "t10k-images-idx3-ubyte" in err
    assert len(text.strip().splitlines()) == 1 + 6
    code, same, err_file = run_cli(capsys, "predict", run_id, folder / "t10k-images-idx3-ubyte",
                                   "--dir", out)
    assert code == 0 and same == text  # the same rows as the test images file itself
    assert _accuracy(err) == _accuracy(err_file) is not None and _accuracy(err)[0] == 6


def test_an_idx_folder_without_test_images_is_predicted_on_its_training_images(
        idx_run, tmp_path, capsys):
    folder, out, run_id = idx_run
    only = tmp_path / "only"
    only.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        shutil.copy(folder / name, only / name)
    code, text, err = run_cli(capsys, "predict", run_id, only, "--dir", out)
    assert code == 0, err
    assert "training" in err and "train-images-idx3-ubyte" in err
    assert _accuracy(err)[0] == 20 and len(text.strip().splitlines()) == 21


def test_a_folder_without_idx_images_is_one_line_naming_the_idx_form(idx_run, tmp_path, capsys):
    _, out, run_id = idx_run
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "predict", run_id, tmp_path / "empty", "--dir", out)
    _one_line_error(code, err, "is a folder without IDX images", "t10k-images-idx3-ubyte")


def test_an_idx_labels_file_is_refused_naming_its_images_file(idx_run, tmp_path, capsys):
    """It was read as one row: 'has 20 features per row; the network expects 16'."""
    folder, out, run_id = idx_run
    code, _, err = run_cli(capsys, "predict", run_id, folder / "train-labels-idx1-ubyte",
                           "--dir", out)
    _one_line_error(code, err, "is an IDX labels file", "train-images-idx3-ubyte")
    assert "features per row" not in err
    write_idx(tmp_path / "classes.idx", (np.arange(20) % 2).astype(np.uint8))  # no 'labels'
    code, _, err = run_cli(capsys, "predict", run_id, tmp_path / "classes.idx", "--dir", out)
    _one_line_error(code, err, "one-dimensional IDX file", "idx1", "images file")


def test_an_idx_images_file_is_scored_by_its_labels_file_and_unscored_without(
        idx_run, tmp_path, capsys):
    """The images file printed no accuracy though its labels file lay beside it."""
    folder, out, run_id = idx_run
    code, text, err = run_cli(capsys, "predict", run_id, folder / "train-images-idx3-ubyte",
                              "--dir", out)
    assert code == 0 and _accuracy(err) is not None and _accuracy(err)[0] == 20, err
    # the .gz forms, as training finds them
    write_idx(tmp_path / "a-images-idx3-ubyte.gz",
              np.frombuffer((folder / "train-images-idx3-ubyte").read_bytes()[16:],
                            np.uint8).reshape(20, 4, 4))
    code, text_gz, err = run_cli(capsys, "predict", run_id, tmp_path / "a-images-idx3-ubyte.gz",
                                 "--dir", out)
    assert code == 0 and _accuracy(err) is None and err == ""  # no labels file: silent
    assert text_gz == text
    shutil.copy(folder / "train-labels-idx1-ubyte", tmp_path / "a-labels-idx1-ubyte")
    code, _, err_gz = run_cli(capsys, "predict", run_id, tmp_path / "a-images-idx3-ubyte.gz",
                              "--dir", out)
    assert code == 0 and _accuracy(err_gz) == _accuracy(
        run_cli(capsys, "predict", run_id, folder / "train-images-idx3-ubyte", "--dir", out)[2])


def test_an_idx_labels_file_of_another_length_leaves_the_predictions_unscored_with_a_warning(
        idx_run, tmp_path, capsys):
    folder, out, run_id = idx_run
    shutil.copy(folder / "t10k-images-idx3-ubyte", tmp_path / "b-images-idx3-ubyte")
    write_idx(tmp_path / "b-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.warns(UserWarning, match=r"b-labels-idx1-ubyte.* \(5,\) beside 6 images.*"
                      "not scored"):
        code, text, err = run_cli(capsys, "predict", run_id, tmp_path / "b-images-idx3-ubyte",
                                  "--dir", out)
    assert code == 0 and len(text.strip().splitlines()) == 7 and _accuracy(err) is None


def test_to_naming_the_labels_file_beside_the_images_is_refused(idx_run, capsys):
    """--to idx/train-labels-idx1-ubyte --force replaced the labels file with predictions."""
    folder, out, run_id = idx_run
    before = (folder / "train-labels-idx1-ubyte").read_bytes()
    for data in (folder / "train-images-idx3-ubyte", folder):
        target = folder / ("train-labels-idx1-ubyte" if data != folder
                           else "t10k-labels-idx1-ubyte")
        code, _, err = run_cli(capsys, "predict", run_id, data, "--dir", out, "--to", target,
                               "--force")
        _one_line_error(code, err, "this command reads")
    assert (folder / "train-labels-idx1-ubyte").read_bytes() == before


# --- --cluster HOST:PORT ---------------------------------------------------------------------


@pytest.mark.parametrize(("given", "read"), [("10.0.0.1:8786", "tcp://10.0.0.1:8786"),
                                             ("sched.example:8786", "tcp://sched.example:8786"),
                                             ("[::1]:8786", "tcp://[::1]:8786"),
                                             ("local:2", "local:2"),
                                             ("tls://h:1", "tls://h:1")])
def test_a_bare_host_port_is_read_as_tcp(given, read):
    """'--cluster 10.0.0.1:8786' was refused as malformed; `dask worker` accepts it."""
    from depthlab.experiments.executors.dask import check_address

    assert check_address(given) == read


@pytest.mark.parametrize("bad", ["local:0", "h:99999", "h:", "a:b:80", "local:x"])
def test_malformed_bare_addresses_are_still_refused_naming_what_was_given(bad):
    from depthlab.experiments.executors import ClusterError
    from depthlab.experiments.executors.dask import check_address

    with pytest.raises(ClusterError, match=re.escape(f"--cluster {bad!r} is not accepted")):
        check_address(bad)


def test_an_unreachable_bare_address_fails_in_one_line_creating_nothing(tmp_path, capsys):
    (tmp_path / "g.toml").write_text('[data]\nname = "spirals"\nn = 40\n[model]\n'
                                     'sizes = ["auto", 4, "auto"]\n[train]\nepochs = 1\n'
                                     '[sweep]\n"train.seed" = [0, 1]\n')
    code, _, err = run_cli(capsys, "sweep", tmp_path / "g.toml", "--out", tmp_path / "out",
                           "--cluster", "127.0.0.1:1")
    _one_line_error(code, err, "cannot reach the Dask scheduler at tcp://127.0.0.1:1")
    assert not (tmp_path / "out").exists()


def test_images_in_a_file_named_labels_are_predicted_not_an_internal_error(idx_run, tmp_path,
                                                                          capsys):
    """A 3-D file named 'x-labels-idx3-ubyte' (no idx1 labels file beside it) is images."""
    folder, out, run_id = idx_run
    shutil.copy(folder / "t10k-images-idx3-ubyte", tmp_path / "x-labels-idx3-ubyte")
    code, text, err = run_cli(capsys, "predict", run_id, tmp_path / "x-labels-idx3-ubyte",
                              "--dir", out)
    assert code == 0 and len(text.strip().splitlines()) == 7, err


def test_a_sweep_reaches_a_running_scheduler_by_its_bare_address(tmp_path):
    """The bare HOST:PORT reaches a real scheduler (loopback TCP, one in-process worker)."""
    distributed = pytest.importorskip("distributed")
    import tomllib

    from depthlab.experiments.sweep import run_sweep

    raw = tomllib.loads('[data]\nname = "spirals"\nn = 40\n[model]\nsizes = ["auto", 4, "auto"]'
                        '\n[train]\nepochs = 1\n[sweep]\n"train.seed" = [0, 1]\n')
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1,
                                  protocol="tcp", host="127.0.0.1", dashboard_address=None,
                                  silence_logs=50) as lc:
        bare = lc.scheduler_address.removeprefix("tcp://")
        assert "://" not in bare
        res = run_sweep(raw, tmp_path / "out", cluster=bare, echo=None)
    assert res.total == 2 and res.count("finished") == 2, res
