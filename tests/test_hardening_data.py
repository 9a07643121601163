"""Issue 11, data and memory: refuse before allocating, stream IDX, validate data up front."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

import depthlab as dl
from depthlab.data import load_dataset, read_idx, write_idx
from depthlab.experiments import ExperimentError, prepare, validate
from depthlab.memory import MemoryRefusal, available_memory, format_bytes, parameter_count


def _cfg(data: dict, sizes: list, **train) -> dict:
    return validate({"data": data, "model": {"sizes": sizes},
                     "train": {"epochs": 1, **train}, "probes": {"every": 0}})


# -- refuse before allocating ---------------------------------------------------------------


def test_mlp_refuses_huge_widths_with_bytes_needed_and_available():
    with pytest.raises(MemoryRefusal, match=r"200000000.*needs about 1\.1\d TiB.*GiB is available"):
        dl.mlp([784, 200_000_000, 10])
    with pytest.raises(ValueError, match="needs about .* EiB"):
        dl.mlp([784, 10**30, 10])


def test_parameter_count_and_format():
    assert parameter_count([3, 4, 2]) == 3 * 4 + 4 + 4 * 2 + 2
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(100) == "100 B"


def test_memory_limit_from_environment(monkeypatch):
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "1M")
    assert available_memory() == 2**20
    with pytest.raises(MemoryRefusal, match="1 MiB is available"):
        dl.mlp([1000, 1000, 10])  # 1.01e6 parameters and gradients: 7.7 MiB
    dl.mlp([10, 100, 10])
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="DEPTHLAB_MEMORY_LIMIT='lots'.*accepted"):
        available_memory()


def test_generated_data_refused_before_generating():
    with pytest.raises(MemoryRefusal, match="clusters.*d=1000000000.*needs about"):
        load_dataset("clusters", d=10**9)
    with pytest.raises(ExperimentError, match=r"\[1000000000, 8, 10\].*needs about"):
        prepare(_cfg({"name": "clusters", "options": {"d": 10**9}}, ["auto", 8, "auto"]))


def test_run_config_refused_from_the_header_before_loading(monkeypatch):
    import depthlab.experiments.runner as runner

    def no_load(config):
        raise AssertionError("data loaded before the memory check")

    monkeypatch.setattr(runner, "load_data", no_load)
    with pytest.raises(ExperimentError, match=r"model.sizes = \[64, 200000000, 10\].*needs"):
        prepare(_cfg({"name": "digits"}, ["auto", 200_000_000, "auto"]))


def test_csv_label_of_1e12_refused(tmp_path):
    p = tmp_path / "big.csv"
    p.write_text("a,b,label\n1,2,0\n3,4,1000000000000\n5,6,1\n7,8,1\n")
    with pytest.raises(ExperimentError, match=r"1000000000001\].*needs about .*[TP]iB"):
        prepare(_cfg({"path": str(p), "val_fraction": 0.0, "test_fraction": 0.0},
                     ["auto", 4, "auto"]))


# -- IDX: streamed, sized by the header -----------------------------------------------------


def _idx_header(shape) -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + np.asarray(shape, dtype=">u4").tobytes()


def test_idx_gz_bomb_is_refused_without_inflating_it(tmp_path):
    bomb = tmp_path / "bomb-images-idx3-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as g:  # header says 50x4x4; 64 MiB follow
        g.write(_idx_header((50, 4, 4)))
        chunk = bytes(1 << 20)
        for _ in range(64):
            g.write(chunk)
    import depthlab.data.idx as idx

    reads = []
    real = idx._read_stream

    def counting(fh, source):
        orig = fh.readinto
        fh_read = fh.read

        class Spy:
            def read(self, n=-1):
                out = fh_read(n)
                reads.append(len(out))
                return out

            def readinto(self, b):
                n = orig(b)
                reads.append(n)
                return n

        return real(Spy(), source)

    idx._read_stream = counting
    try:
        with pytest.raises(ValueError, match="size mismatch.*50, 4, 4.*longer"):
            read_idx(bomb)
    finally:
        idx._read_stream = real
    assert sum(reads) <= 4 + 12 + 800 + 1


def test_idx_shorter_than_header_and_huge_header(tmp_path):
    short = tmp_path / "s-images-idx3-ubyte.gz"
    short.write_bytes(gzip.compress(_idx_header((50, 4, 4)) + bytes(100)))
    with pytest.raises(ValueError, match="size mismatch.*has only 116 bytes"):
        read_idx(short)
    huge = tmp_path / "h-images-idx3-ubyte"
    huge.write_bytes(_idx_header((4_000_000_000, 1000, 1000)))
    with pytest.raises(MemoryRefusal, match="IDX file.*needs about"):
        read_idx(huge)
    ok = tmp_path / "ok-images-idx3-ubyte.gz"
    a = np.arange(50 * 16, dtype=np.uint8).reshape(50, 4, 4)
    write_idx(ok, a)
    np.testing.assert_array_equal(read_idx(ok), a)


def test_corrupt_gz_files_name_the_file(tmp_path):
    good = gzip.compress(b"a,b,label\n" + b"1,2,0\n3,4,1\n" * 200)
    bad = tmp_path / "broken.csv.gz"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"broken\.csv\.gz.*corrupt gzip"):
        load_dataset(bad)
    junk = tmp_path / "junk.csv.gz"
    junk.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"junk\.csv\.gz.*(corrupt gzip|cannot parse)"):
        load_dataset(junk)
    idx = tmp_path / "t-images-idx3-ubyte.gz"
    idx.write_bytes(gzip.compress(_idx_header((50, 4, 4)) + bytes(800))[:25])
    with pytest.raises(ValueError, match="t-images-idx3-ubyte.gz.*(corrupt gzip|mismatch)"):
        read_idx(idx)


# -- validate up front ----------------------------------------------------------------------


def _csv(tmp_path, rows: str, name="d.csv"):
    p = tmp_path / name
    p.write_text("a,b,label\n" + rows)
    return p


def test_values_that_overflow_float32_are_refused_at_load(tmp_path):
    p = _csv(tmp_path, "1,2,0\n1e300,4,1\n5,6,1\n7,8,0\n")
    with pytest.raises(ValueError, match=r"d\.csv.*1e\+300 \(row 1, column 0\).*float32.*float64"):
        load_dataset(p, val_fraction=0, test_fraction=0)
    ds = load_dataset(p, val_fraction=0, test_fraction=0, dtype="float64")
    assert np.isfinite(ds.x_train).all()


def test_single_class_is_refused(tmp_path):
    p = _csv(tmp_path, "1,2,0\n3,4,0\n5,6,0\n")
    with pytest.raises(ValueError, match=r"all 3 labels are 0 \(a single class\).*at least 2"):
        load_dataset(p, val_fraction=0, test_fraction=0)


def test_label_index_one_rule_in_config_and_loader(tmp_path):
    p = tmp_path / "idx.csv"
    p.write_text("a,b,cls,c\n1,2,0,3\n3,4,1,5\n5,6,1,7\n7,8,0,9\n")
    ds = load_dataset(p, label=2, val_fraction=0, test_fraction=0)
    assert ds.n_features == 3 and sorted(set(ds.y_train.tolist())) == [0, 1]
    prep = prepare(_cfg({"path": str(p), "label": 2, "val_fraction": 0, "test_fraction": 0},
                        ["auto", 4, "auto"]))
    assert prep.data.info["label_column"] == "cls"
    with pytest.raises(ValueError, match=r"label=4 is not a column index; accepted: 0 to 3"):
        load_dataset(p, label=4)
    with pytest.raises(ExperimentError, match="label=7 is not a column index"):
        prepare(_cfg({"path": str(p), "label": 7}, ["auto", 4, "auto"]))


def test_generator_options_name_the_key():
    with pytest.raises(ValueError, match=r"noise='x' is not accepted; accepted: a finite number"):
        load_dataset("spirals", noise="x")
    with pytest.raises(ValueError, match=r"seed=-1 .*non-negative integer"):
        load_dataset("spirals", seed=-1)
