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
