"""The README's Python examples run as written, and its config examples are valid."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from depthlab.experiments.config import validate

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_example_runs(index, capsys):
    code = _blocks("python")[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip(), "the example prints what it shows"


def test_there_are_examples():
    assert len(_blocks("python")) >= 2
    assert len(_blocks("toml")) >= 2


def test_run_config_example_is_valid():
    run_block = _blocks("toml")[0]
    cfg = validate(tomllib.loads(run_block))
    assert cfg["model"]["activation"] == "tanh"


def test_readme_has_no_unfilled_markers():
    text = README.read_text(encoding="utf-8")
    prose = re.sub(r"```.*?```|`[^`]*`", "", text, flags=re.S)  # names in code are real
    assert not re.findall(r"\b[A-Z]{2,}(?:_[A-Z]{2,})+\b", prose)  # e.g. a RESULTS_TABLE left
