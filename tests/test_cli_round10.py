"""Round 10 CLI hardening: adversarial flags, config values, data files and stores, each a
regression test of a bug found (run in-process through :func:`depthlab.cli.main`)."""

from __future__ import annotations

import json

import pytest

from depthlab.cli import main


def _strict_json(text: str):
    """``json.loads`` that refuses NaN/Infinity (not JSON)."""

    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("argv", [["reproduce", "--list", "--json"], ["reproduce", "--json"]])
def test_reproduce_list_with_json_prints_a_json_list(argv, capsys):
    # was: the text table on stdout (not JSON) although --json was given
    assert main(argv) == 0
    listed = _strict_json(capsys.readouterr().out)
    names = [e["name"] for e in listed]
    assert "glorot2010" in names and all(e["title"] and e["paper"] for e in listed)
