"""Round 43 (numcli43): the NumPy side's commands (predict, reproduce, doctor, runs, export) on
inputs nobody tried."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl
from tests.helpers.cli import assert_one_line_error, one_blas_thread, run_cli


@pytest.fixture
def net_file(tmp_path, monkeypatch):
    one_blas_thread(monkeypatch)
    return str(dl.save(dl.mlp([4, 8, 3], seed=0), tmp_path / "net"))


def _npy_bytes(rows: int = 20) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ones((rows, 4), np.float32))
    return buf.getvalue()


@pytest.mark.parametrize("content, fragments", [
    (b"", ("is an empty file (0 bytes)", "expected a .npy array written by numpy.save")),
    (b"1,2,3,4\n5,6,7,8\n", ("is not a .npy file", "begins with b'1,2,3,", "save it as .csv")),
    (b"hi\n", ("is not a .npy file", "b'hi\\n'")),
    (b"\x93NU", ("is cut short", "3 bytes end inside the .npy header")),
    (b"\x93NUMPY\x01\x00", ("is cut short", "8 bytes end inside the .npy header")),
    (_npy_bytes()[:60], ("is cut short", "60 bytes end inside the .npy header")),
    (b"\x93NUMPY\x09\x00ab", ("format version 9.0", "(1.0, 2.0 or 3.0)")),
])
def test_predict_names_a_npy_that_is_empty_text_or_cut_short(tmp_path, capsys, net_file,
                                                             content, fragments):
    # was numpy's "EOF: reading magic string, expected 8 bytes got 0" and "EOF: reading array
    # header length, expected 4 bytes got 2": neither what the file is nor what was expected
    data = tmp_path / "new.npy"
    data.write_bytes(content)
    code, out, err = run_cli(capsys, "predict", net_file, str(data))
    line = assert_one_line_error(code, err, "DATA", "new.npy", *fragments)
    assert "EOF" not in line and out == ""


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_predict_reads_every_npy_version_numpy_writes(tmp_path, capsys, net_file, version):
    data = tmp_path / "new.NPY"  # the suffix's case aside, as the reader
    with open(data, "wb") as fh:
        np.lib.format.write_array(fh, np.ones((3, 4), np.float32), version=version)
    code, out, _ = run_cli(capsys, "predict", net_file, str(data))
    assert code == 0 and len(out.splitlines()) == 4


def test_predict_keeps_numpys_words_for_a_npy_with_too_few_data_bytes(tmp_path, capsys,
                                                                     net_file):
    data = tmp_path / "new.npy"
    data.write_bytes(_npy_bytes()[:200])  # a complete header, 18 of 80 numbers
    code, _, err = run_cli(capsys, "predict", net_file, str(data))
    assert_one_line_error(code, err, "new.npy", "not fully written")


def _interrupting_run(after: int, ran: list):
    """A ``run_experiment`` that writes a claims file for its first ``after`` experiments, then
    is interrupted (Ctrl-C) in the next."""
    from depthlab.reproduce.base import Result

    def fake(name, *, quick=False, out=None, data=None, progress=False, echo=print):
        if len(ran) >= after:
            raise KeyboardInterrupt
        ran.append(name)
        (out / "claims.json").write_text("[]")
        return Result(name, name)

    return fake


def test_an_interrupted_reproduce_leaves_no_empty_folder_it_created(tmp_path, capsys,
                                                                    monkeypatch):
    # was: Ctrl-C during the first experiment left an empty --out folder (and, by default,
    # reproduce-out/NAME); with 'all', every experiment's empty folder
    import depthlab.reproduce as reproduce_pkg

    monkeypatch.setattr(reproduce_pkg, "run_experiment", _interrupting_run(0, []))
    code, _, _ = run_cli(capsys, "reproduce", "saxe2013", "--quick", "--quiet",
                         "--out", str(tmp_path / "new" / "deeper"))
    assert code == 130 and not (tmp_path / "new").exists()
    monkeypatch.chdir(tmp_path)  # the default folder, reproduce-out/NAME
    code, _, _ = run_cli(capsys, "reproduce", "he2015", "--quick", "--quiet")
    assert code == 130 and not (tmp_path / "reproduce-out").exists()


def test_an_interrupted_reproduce_all_keeps_the_experiments_done_and_folders_given(
        tmp_path, capsys, monkeypatch):
    import depthlab.reproduce as reproduce_pkg

    ran: list[str] = []
    monkeypatch.setattr(reproduce_pkg, "run_experiment", _interrupting_run(2, ran))
    given = tmp_path / "given"
    given.mkdir()  # an empty folder the user made: not removed
    (given / "saxe2013").mkdir()
    code, _, _ = run_cli(capsys, "reproduce", "all", "--quick", "--quiet", "--out", str(given))
    assert code == 130 and len(ran) == 2
    left = sorted(p.name for p in given.iterdir())
    assert left == sorted({*ran, "saxe2013"})  # the done ones, and the one that existed
    assert all((given / name / "claims.json").is_file() for name in ran)
    given.rename(tmp_path / "kept")
    (tmp_path / "kept2").mkdir()
    monkeypatch.setattr(reproduce_pkg, "run_experiment", _interrupting_run(0, []))
    code, _, _ = run_cli(capsys, "reproduce", "xu2016", "--quiet", "--out",
                         str(tmp_path / "kept2"))
    assert code == 130 and (tmp_path / "kept2").is_dir()
