"""Round 23 command-line hunt (huntcli23): inputs and interrupts nobody tried before."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers.cli import ENV

# Imported at Python's start-up (PYTHONPATH): a Ctrl-C lands while the module named by
# DEPTHLAB_TEST_INTERRUPT_AT is imported, inside code compiled from a string, as it does when
# the import defines a dataclass or a namedtuple (their methods are exec'd source text).
SITECUSTOMIZE = textwrap.dedent("""\
    import os
    import signal
    import sys

    class _InterruptAt:
        def find_spec(self, name, path=None, target=None):
            if name == os.environ.get("DEPTHLAB_TEST_INTERRUPT_AT"):
                sys.meta_path.remove(self)
                exec("os.kill(os.getpid(), signal.SIGINT)")
            return None

    sys.meta_path.insert(0, _InterruptAt())
""")


@pytest.mark.parametrize("module", [
    "depthlab.cli.datasets",  # while the parser is built
    "depthlab.experiments",  # while the command starts (its user errors are imported)
])
def test_ctrl_c_in_code_compiled_from_a_string_exits_130_under_python_m(tmp_path, module):
    """``python -m depthlab``: a Ctrl-C raised inside ``exec``'d source (a dataclass being
    defined by a lazy import) was handled (``depthlab: interrupted``) and main returned 130,
    but CPython had flagged the KeyboardInterrupt as unhandled and the interpreter killed
    itself with SIGINT at exit (status -2, not 130)."""
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    env = {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path),
                                                              ENV.get("PYTHONPATH")])),
           "DEPTHLAB_TEST_INTERRUPT_AT": module}
    proc = subprocess.run([sys.executable, "-m", "depthlab", "datasets"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=120,
                          preexec_fn=lambda: __import__("signal").signal(2, 0))
    assert proc.stderr.strip().splitlines() == ["depthlab: interrupted"], proc.stderr
    assert proc.returncode == 130, (proc.returncode, proc.stderr)
