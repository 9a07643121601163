"""Round 33 (cliux33): the CLI, the run store and data loading as a demanding user meets them."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.cli import assert_one_line_error, one_blas_thread, run_cli

# A CSV whose integers do not fit in 64 bits (an identifier, a byte count, 10**23): pandas
# reads such a column as Python ints (object dtype), which was refused naming another cell
# ("feature column 'b' holds '2' on line 2, which is not a number").
BIG = 10**23
NEG = -(2**63) - 1


def _big_csv(path):
    rows = [f"{i % 7},{BIG if i == 3 else i % 5},{NEG if i == 5 else i},{i % 2}" for i in range(40)]
    path.write_text("a,b,c,label\n" + "\n".join(rows) + "\n")
    return path


def test_integers_past_64_bits_in_a_csv_are_read_as_the_numbers_they_are(tmp_path, capsys,
                                                                        monkeypatch):
    from depthlab.data import load_dataset

    one_blas_thread(monkeypatch)
    csv = _big_csv(tmp_path / "big.csv")
    data = load_dataset(csv, seed=0, val_fraction=0.0, test_fraction=0.0)
    x = np.sort(data.x_train, axis=0)
    want = np.array([[i % 7, BIG if i == 3 else i % 5, NEG if i == 5 else i] for i in range(40)],
                    dtype=np.float64).astype(data.x_train.dtype)  # float32 by default
    np.testing.assert_array_equal(x, np.sort(want, axis=0))
    config = tmp_path / "big.toml"
    config.write_text('[data]\npath = "big.csv"\n[model]\nsizes = ["auto", 4, "auto"]\n'
                      "[train]\nepochs = 1\n")
    code, _, err = run_cli(capsys, "run", config, "--out", tmp_path / "r", "--quiet")
    assert code == 0, err


def test_a_text_cell_beside_big_integers_is_the_cell_named(tmp_path, capsys, monkeypatch):
    """A column that also holds text stays refused, naming the text cell, not a number."""
    one_blas_thread(monkeypatch)
    rows = [f"{i % 7},{BIG if i == 3 else ('x' if i == 6 else i % 5)},{i % 2}" for i in range(20)]
    (tmp_path / "t.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    config = tmp_path / "t.toml"
    config.write_text('[data]\npath = "t.csv"\n[model]\nsizes = ["auto", 4, "auto"]\n'
                      "[train]\nepochs = 1\n")
    code, _, err = run_cli(capsys, "run", config, "--out", tmp_path / "r", "--quiet")
    assert code == 2, err
    assert "holds 'x' on line 8" in err, err


def test_a_limited_sweep_says_its_points_are_the_first_of_the_grid(tmp_path, capsys,
                                                                  monkeypatch):
    """`sweep --limit 1` of a 2-point grid said "1 point (train.seed 2)": a size that its own
    factors contradict; it names the grid's size it takes the first points of."""
    from helpers.cli import TINY

    one_blas_thread(monkeypatch)
    config = tmp_path / "grid.toml"
    config.write_text(TINY + '[sweep]\n"train.seed" = [0, 1]\n')
    code, out, err = run_cli(capsys, "sweep", config, "--out", tmp_path / "r", "--limit", "1")
    assert code == 0, err
    first = (out + err).splitlines()[0]
    assert "1 point (the first 1 of the grid's 2: train.seed 2)" in first, first


def _wrapped_gz(path, total=2**32 + 2**26):
    """A gzip CSV of more than 4 GiB (``total`` bytes of rows past its header) whose trailer
    says its size modulo 2**32, as gzip writes it, built in well under a second: a deflate
    chunk of 1 MiB of rows after a full flush (the compressor's bytes repeat), written again
    and again. Returns its number of data rows. (Its CRC is left 0: nothing reads that far.)"""
    import struct
    import zlib

    header, row = b"a,b,c,label\n", b"0.1234,0.5678,0.9012,1\n"
    chunk = row * ((1 << 20) // len(row))
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)
    body = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    n = total // len(chunk)
    with open(path, "wb") as fh:
        fh.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + head)
        for _ in range(n):
            fh.write(body)
        fh.write(deflate.flush() + struct.pack("<II", 0, (len(header) + n * len(chunk)) % 2**32))
    return n * (len(chunk) // len(row))


def test_a_csv_gz_past_4_gib_is_sized_by_its_content_not_its_wrapped_trailer(tmp_path, capsys,
                                                                            monkeypatch):
    """gzip's trailer keeps the uncompressed size modulo 2**32: a CSV of 4.06 GiB in a .gz was
    sized from 64 MiB (2,916,691 rows, 187 MB) and not refused under 4 GiB of memory; pandas
    would then have read 190 million rows (12 GB)."""
    from depthlab.data.files import check_csv_fits
    from depthlab.memory import MemoryRefusal

    one_blas_thread(monkeypatch)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "4G")
    rows = _wrapped_gz(tmp_path / "rows.csv.gz")
    with pytest.raises(MemoryRefusal, match=f"CSV of about {rows:,} rows x 4 columns"):
        check_csv_fits(tmp_path / "rows.csv.gz", "data 'rows.csv.gz'")
    config = tmp_path / "rows.toml"
    config.write_text('[data]\npath = "rows.csv.gz"\n[model]\nsizes = ["auto", 4, "auto"]\n')
    code, _, err = run_cli(capsys, "run", config, "--out", tmp_path / "r", "--quiet")
    assert_one_line_error(code, err, f"{rows:,} rows", "nothing was allocated")


def test_two_exports_into_one_folder_at_once_both_stay_named_in_its_marker(tmp_path,
                                                                           monkeypatch):
    """`depthlab export DIR --to X` and `depthlab export DIR --to X --format parquet` at the
    same time (a `make -j`): each read the folder's .depthlab-export before writing its
    tables and wrote it back after, so the last one dropped the other's names, and the next
    export was refused: "--to 'X' holds 'runs.parquet', which no `depthlab export` wrote
    there". Here both are held inside their table writing at once (at most 1 s)."""
    import threading

    from depthlab.cli import main
    from depthlab.experiments import Store
    from depthlab.experiments.store import exported_files

    one_blas_thread(monkeypatch)
    Store(tmp_path / "r").close()  # an empty store is enough: the tables are still written
    together = threading.Barrier(2, timeout=1)
    real = Store._write_table

    def meet(self, *args, **kwargs):
        try:
            together.wait()  # both exports inside their tables (unless one waits its turn)
        except threading.BrokenBarrierError:
            pass
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Store, "_write_table", meet)
    codes: list[int] = []
    target = tmp_path / "x"
    threads = [threading.Thread(target=lambda f=f: codes.append(
        main(["export", str(tmp_path / "r"), "--to", str(target), "--format", f])))
        for f in ("csv", "parquet")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [0, 0]
    named = exported_files(target)
    assert {"runs.csv", "runs.parquet", "probes.csv", "probes.parquet"} <= named, named
    assert main(["export", str(tmp_path / "r"), "--to", str(target), "--format", "parquet"]) == 0
