"""Round 43 (watchhunt43): dlt.Watch inside real training loops, its bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

import depthlab.torch as dlt


@pytest.mark.parametrize("out", ["runs\x00", Path("a\x00b")])
def test_out_with_a_nul_character_is_named(out: str | Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``out=`` holding a NUL byte (no path can) raised the store's bare "embedded null byte",
    naming neither ``out`` nor its value; now a one-line ValueError naming both, nothing
    created."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^out=.*NUL character.*expected a folder"):
        dlt.Watch(nn.Linear(3, 3), out=out)
    assert list(tmp_path.iterdir()) == []
