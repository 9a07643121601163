"""The quick claims of test_reproduce.py's ``QUICK_B`` experiments, the same check
(:func:`test_reproduce.check_quick_claims`) in a file of its own: pytest-xdist's
``--dist loadfile`` keeps a file on one worker, so the nine quick runs (~300 s of CPU) were
all computed by the worker holding test_reproduce.py; these now go to the other one (each run
is still computed once per session: tests/helpers/background.py)."""

from __future__ import annotations

import pytest
from test_reproduce import QUICK_B, check_quick_claims


@pytest.mark.parametrize("name", QUICK_B)
def test_quick_claims_match_the_expected_outcomes(name):
    check_quick_claims(name)
