"""Round 17, the CLI and the new user's path: data files, demo, init."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers.cli import ENV, assert_one_line_error, run_cli

from depthlab.data import load_dataset


def test_a_csv_row_without_its_label_cell_names_the_line(tmp_path):
    # a row with fewer cells than the header: its label reads as NaN, which was refused as
    # 'labels must be integers, got non-integer values such as [nan]' (no line, no cause)
    path = tmp_path / "short.csv"
    path.write_text("a,b,label\n1,2,0\n3,4,1\n5,6\n7,8,1\n")
    with pytest.raises(ValueError) as err:
        load_dataset(path)
    msg = str(err.value)
    assert "label column 'label'" in msg and "line 4" in msg and "nan" not in msg, msg
    # an empty label cell in a full row likewise
    path.write_text("x,label,z\n1,0,2\n3,,4\n5,1,6\n")
    with pytest.raises(ValueError, match=r"label column 'label' is empty on line 3"):
        load_dataset(path)


def test_a_csv_text_cell_among_the_features_is_named_with_its_line(tmp_path):
    # was "non-numeric feature column(s) ['b']": which cell of a 10,000-row file?
    path = tmp_path / "text.csv"
    rows = "".join(f"{i},{i + 1},{i % 2}\n" for i in range(50))
    path.write_text("a,b,label\n" + rows + "7,abc,1\n" + rows)
    with pytest.raises(ValueError) as err:
        load_dataset(path)
    msg = str(err.value)
    assert "column 'b'" in msg and "'abc'" in msg and "line 52" in msg, msg


def test_demo_config_that_is_a_folder_is_not_called_missing(tmp_path, capsys):
    # was "--config '/tmp/...': no such file" for a folder that exists
    code, _, err = run_cli(capsys, "demo", "--config", tmp_path, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "is a folder", "expected a demo config file")
    code, _, err = run_cli(capsys, "demo", "--config", tmp_path / "none.toml", "--out",
                           tmp_path / "o")
    assert_one_line_error(code, err, "none.toml", "no such file")
    assert not (tmp_path / "o").exists()


def test_init_example_without_a_name_copies_it_under_its_own_name(tmp_path, capsys,
                                                                  monkeypatch):
    # was "give NAME: `depthlab init NAME` writes NAME.toml": --example names the file already
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "init", "--example", "digits-run")
    assert code == 0, err
    assert (tmp_path / "digits_run.toml").is_file() and "wrote digits_run.toml" in out
    code, _, err = run_cli(capsys, "init", "--example", "digits_run")  # never replaced silently
    assert_one_line_error(code, err, "digits_run.toml", "already exists", "--force")
    code, _, err = run_cli(capsys, "init")  # the starter still needs NAME
    assert_one_line_error(code, err, "give NAME")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["--help"], ["--version"], ["run", "--help"]])
def test_help_written_to_a_full_disk_is_an_error_not_success(args):
    # `depthlab --help > /dev/full` printed nothing and exited 0 (the lost output unreported)
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "depthlab", *args], stdout=full,
                              stderr=subprocess.PIPE, text=True, env=ENV, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "depthlab: error: cannot write the output to stdout: No space left on device"]



def test_a_csv_cell_pandas_reads_as_missing_is_quoted_not_called_nan(tmp_path):
    # 'NA', 'n/a', 'null' are read as NaN by pandas: a feature 'n/a' was reported as "holds
    # nan", a label 'NA' as an empty cell
    path = tmp_path / "na.csv"
    path.write_text("a,b,label\n1,2,0\n3,n/a,1\n5,6,0\n")
    with pytest.raises(ValueError) as err:
        load_dataset(path)
    assert "column 'b' holds 'n/a' on line 3" in str(err.value), str(err.value)
    path.write_text("a,b,label\n1,2,0\n3,4,NA\n5,6,1\n")
    with pytest.raises(ValueError) as err:
        load_dataset(path)
    assert "label column 'label' holds 'NA' on line 3" in str(err.value), str(err.value)


def test_spirals_with_too_many_turns_names_turns_not_noise(recwarn):
    # turns = 1e308: three NumPy RuntimeWarnings (overflow, invalid cos/sin), then
    # "noise=0.1 gives features beyond float32's range; accepted: a smaller noise"
    with pytest.raises(ValueError) as err:
        load_dataset("spirals", turns=1e308)
    msg = str(err.value)
    assert msg.startswith("spirals") or "turns=1e+308" in msg, msg
    assert "turns" in msg and "noise" not in msg, msg
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("option, value, fragment", [
    # each was passed to the generator unchecked: final_seq_length=10**9 allocated until the
    # kernel's OOM killer ended the process, padding=[0, 10**9] 8 GB per sample, a negative
    # template_len was accepted, final_seq_length=0 gave NumPy warnings and an empty set
    ("final_seq_length", 10**9, "needs about"),
    ("padding", [0, 10**9], "needs about"),
    ("template_len", -1, "template_len=-1"),
    ("final_seq_length", 0, "final_seq_length=0"),
    ("iid_noise_scale", float("nan"), "iid_noise_scale=nan"),
    ("padding", "x", "padding='x'"),
    ("shuffle_seq", "yes", "shuffle_seq='yes'"),
    ("max_translation", 0, "max_translation=0"),
])
def test_mnist1d_generator_options_are_checked_before_generating(monkeypatch, option, value,
                                                                  fragment):
    pytest.importorskip("mnist1d")
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "2G")
    import depthlab.data.mnist1d as m1

    def never(*_a, **_k):
        raise AssertionError("the generator ran")

    monkeypatch.setattr("mnist1d.data.make_dataset", never)
    with pytest.raises((ValueError, TypeError)) as err:
        m1.load(n=1000, **{option: value})
    assert fragment in str(err.value) and option in str(err.value), str(err.value)


def test_a_csv_text_cell_after_blank_lines_gets_the_files_line_number(tmp_path):
    # pandas skips blank lines, so its row + 2 named line 3 for the text on line 5
    path = tmp_path / "gaps.csv"
    path.write_text("a,b,label\n1,2,0\n\n\n3,abc,1\n5,6,0\n")
    with pytest.raises(ValueError) as err:
        load_dataset(path)
    assert "holds 'abc' on line 5" in str(err.value), str(err.value)


def test_mnist1d_options_that_overflow_are_named_without_numpy_warnings(recwarn):
    # scale_coeff = 1e308: three 'invalid value encountered in reduce' warnings, then
    # 'features contain 200000 NaN/inf value(s)', naming no option
    pytest.importorskip("mnist1d")
    with pytest.raises(ValueError) as err:
        load_dataset("mnist1d", n=200, scale_coeff=1e308)
    assert "scale_coeff=1e+308" in str(err.value), str(err.value)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_demo_recipes_that_train_the_same_network_are_refused(tmp_path):
    # two recipes with the same model ran once and the summary showed the one result twice,
    # under both names, as if two recipes had been compared
    from depthlab.demo import demo_recipes
    from depthlab.experiments import ConfigError

    base = '[data]\nname = "spirals"\n[model]\nsizes = ["auto", 8, "auto"]\n'
    path = tmp_path / "dm.toml"
    path.write_text(base + '[[recipes]]\nname = "a"\nmodel = {activation = "relu"}\n'
                    '[[recipes]]\nname = "b"\nmodel = {activation = "relu", init = '
                    '"glorot_uniform"}\n')  # glorot_uniform is the default: the same network
    with pytest.raises(ConfigError, match=r"recipe 'b' trains the same network as recipe 'a'"):
        demo_recipes(path)
    path.write_text(base + '[[recipes]]\nname = " "\nmodel = {activation = "relu"}\n')
    with pytest.raises(ConfigError, match="needs a non-empty 'name'"):
        demo_recipes(path)


def test_a_csv_that_is_not_utf8_says_which_encoding_is_accepted(tmp_path):
    # was "cannot parse as CSV ('utf-8' codec can't decode byte 0xe9 in position 1: ...)":
    # neither the line nor what to do
    path = tmp_path / "latin.csv"
    path.write_bytes("a,b,label\n1,2,0\n3,4,1\nx\xe9,5,0\n".encode("latin-1"))
    with pytest.raises(ValueError) as err:
        load_dataset(path)
    msg = str(err.value)
    assert "not UTF-8" in msg and "line 4" in msg and "accepted: UTF-8" in msg, msg


def test_a_mistyped_csv_label_column_suggests_the_closest_column(tmp_path):
    # was "no label column 'lbl'. Columns: ['label', 'a', 'b']; choose ..." with no hint
    path = tmp_path / "lf.csv"
    path.write_text("label,a,b\n0,1,2\n1,3,4\n0,5,6\n")
    with pytest.raises(ValueError, match=r"no label column 'lbl' \(did you mean 'label'\?\)"):
        load_dataset(path, label="lbl")
    with pytest.raises(ValueError) as err:  # nothing close: no hint
        load_dataset(path, label="zzzzzz")
    assert "did you mean" not in str(err.value)
