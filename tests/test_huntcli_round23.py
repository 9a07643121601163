"""Round 23 command-line hunt (huntcli23): inputs and interrupts nobody tried before."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.helpers.cli import ENV

# Imported at Python's start-up (PYTHONPATH): the signal DEPTHLAB_TEST_SIGNAL lands while the
# module named by DEPTHLAB_TEST_INTERRUPT_AT is imported, inside code compiled from a string,
# as a Ctrl-C does when the import defines a dataclass or a namedtuple (their methods are
# exec'd source text).
SITECUSTOMIZE = textwrap.dedent("""\
    import os
    import signal
    import sys

    class _InterruptAt:
        def find_spec(self, name, path=None, target=None):
            if name == os.environ.get("DEPTHLAB_TEST_INTERRUPT_AT"):
                sys.meta_path.remove(self)
                exec("os.kill(os.getpid(), getattr(signal, os.environ['DEPTHLAB_TEST_SIGNAL']))")
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
    proc = _signal_during_import(tmp_path, module, "SIGINT")
    assert proc.stderr.strip().splitlines() == ["depthlab: interrupted"], proc.stderr
    assert proc.returncode == 130, (proc.returncode, proc.stderr)


def _signal_during_import(tmp_path, module: str, sig: str) -> subprocess.CompletedProcess:
    """``python -m depthlab datasets`` with signal ``sig`` landing while ``module`` is
    imported."""
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    env = {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path),
                                                              ENV.get("PYTHONPATH")])),
           "DEPTHLAB_TEST_INTERRUPT_AT": module, "DEPTHLAB_TEST_SIGNAL": sig}
    return subprocess.run([sys.executable, "-m", "depthlab", "datasets"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=120,
                          preexec_fn=_default_sigint)


def _default_sigint() -> None:
    """Ctrl-C at its default in the child (a shell's background job starts with it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("module", ["depthlab.cli.datasets", "depthlab.experiments"])
def test_sigterm_during_start_up_exits_143_with_one_line(tmp_path, module):
    """SIGTERM in the first second or so of a command (while its modules are imported, before
    its interrupt handlers were installed) killed the process silently with status -15; the
    README promises status 143 and one line for SIGTERM at any moment."""
    proc = _signal_during_import(tmp_path, module, "SIGTERM")
    assert proc.stderr.strip().splitlines() == ["depthlab: terminated (SIGTERM)"], proc.stderr
    assert proc.returncode == 143, (proc.returncode, proc.stderr)


DEMO_TOO_BIG = """\
[data]
name = "clusters"
n = 200
[train]
epochs = 1
[probes]
every = 0
[[recipes]]
name = "small"
meaning = "fits"
[recipes.model]
sizes = ["auto", 8, "auto"]
[[recipes]]
name = "huge"
meaning = "does not fit"
[recipes.model]
sizes = ["auto", 300000, 300000, "auto"]
"""


def test_demo_refuses_a_recipe_that_cannot_fit_in_memory_before_running(tmp_path, capsys,
                                                                        monkeypatch):
    """A demo recipe too large for memory trained the others, was stored as failed and the
    demo exited 0 with "[failed]" and no reason; like `depthlab run` it is refused before
    anything runs: one line naming the recipe and the bytes, exit 2, no store written."""
    from tests.helpers.cli import assert_one_line_error, one_blas_thread, run_cli

    one_blas_thread(monkeypatch)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "4G")
    config = tmp_path / "demo big.toml"
    config.write_text(DEMO_TOO_BIG, encoding="utf-8")
    code, _out, err = run_cli(capsys, "demo", "--config", config, "--out", tmp_path / "out",
                              "--jobs", 1, "--no-report", "--quiet")
    assert_one_line_error(code, err, "recipe 'huge'", "300000", "GiB", "nothing was allocated")
    assert not (tmp_path / "out" / "depthlab.db").exists()


def test_demo_says_why_a_recipe_failed_and_exits_1(tmp_path, capsys, monkeypatch):
    """A recipe that failed (its first layer does not match the data) showed "[failed]" with
    no reason and the demo exited 0; like `run` and `sweep` it now names the failure on stderr
    (one line per failed recipe) and exits 1; the other recipes' results are kept."""
    from tests.helpers.cli import one_blas_thread, run_cli

    one_blas_thread(monkeypatch)
    config = tmp_path / "demo.toml"
    config.write_text(DEMO_TOO_BIG.replace('sizes = ["auto", 300000, 300000, "auto"]',
                                           'sizes = [5, 4, "auto"]'), encoding="utf-8")
    code, out, err = run_cli(capsys, "demo", "--config", config, "--out", tmp_path / "out",
                             "--jobs", 1, "--no-report")
    assert code == 1, err
    assert "[failed]" in out
    lines = [ln for ln in err.splitlines() if "failed" in ln]
    assert len(lines) == 1 and lines[0].startswith("depthlab: recipe 'huge' failed: "), err
    assert "model.sizes[0] = 5" in lines[0]
    assert "Traceback" not in err


def test_init_under_a_file_says_it_is_a_file(tmp_path, capsys, monkeypatch):
    """`depthlab init notes.txt/exp` said "folder 'notes.txt' does not exist" of a file that
    exists."""
    from tests.helpers.cli import assert_one_line_error, run_cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    code, _out, err = run_cli(capsys, "init", "notes.txt/exp")
    line = assert_one_line_error(code, err, "'notes.txt' is a file, not a folder")
    assert "does not exist" not in line
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "x"
