"""newuser42 (round 42): a new user's first contact with depthlab."""

from __future__ import annotations

import re

import depthlab


def _quick_start() -> str:
    """The block after 'Quick start::' in ``depthlab.__doc__`` (what help(depthlab) shows)."""
    doc = depthlab.__doc__ or ""
    head, sep, rest = doc.partition("Quick start::")
    assert sep, "help(depthlab) shows no quick start"
    lines = []
    for line in rest.splitlines()[1:]:
        if line.strip() and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines).strip()


def test_help_quick_start_runs_as_pasted() -> None:
    """The quick start of help(depthlab) runs in a fresh namespace: it defines its own data."""
    code = _quick_start()
    # a fast version of the same code: fewer epochs, nothing else changed
    code = re.sub(r"epochs=\d+", "epochs=1", code)
    ns: dict = {}
    exec(compile(code, "<help(depthlab) quick start>", "exec"), ns)  # noqa: S102
    assert len(ns["hist"].epochs) == 1
