"""Round 36 (lead): a report folder that cannot be written is refused before any figure is
drawn."""

from __future__ import annotations

import pytest


def _store_with_a_run(tmp_path):
    from depthlab.experiments import Store, execute

    config = {"name": "tiny", "data": {"name": "spirals", "seed": 0, "n": 100},
              "model": {"sizes": ["auto", "auto"], "depth": 1, "width": 4,
                        "activation": "tanh", "init": "glorot_uniform"},
              "train": {"loss": "cross_entropy", "optimizer": "sgd", "lr": 0.05,
                        "batch_size": "full", "epochs": 1, "seed": 0},
              "probes": {"every": 1}}
    with Store(tmp_path) as store:
        store.add_run(execute(config))


@pytest.mark.parametrize("blocker", ["figures", "report.html"])
def test_an_unwritable_report_folder_is_refused_before_drawing(tmp_path, blocker):
    """`figures` a file or `report.html` a folder: the report drew every figure (about two
    minutes for ten runs) and then failed writing; now it is refused before the first
    section, naming the file, and nothing is left behind."""
    from depthlab.atomic import AtomicWriteError
    from depthlab.report import write_report

    _store_with_a_run(tmp_path)
    if blocker == "figures":
        (tmp_path / "figures").write_text("not a folder")
    else:
        (tmp_path / "report.html").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    lines: list[str] = []
    with pytest.raises(AtomicWriteError) as err:
        write_report(tmp_path, echo=lines.append)
    assert lines == []  # nothing drawn
    assert blocker in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_writable_report_folder_keeps_no_scratch_file(tmp_path):
    from depthlab.report import write_report

    _store_with_a_run(tmp_path)
    write_report(tmp_path)
    names = sorted(p.name for p in tmp_path.rglob("*"))
    assert not [n for n in names if n.endswith(".tmp") or n == "report-check.png"]
    assert "report.html" in names
