"""Round 37 torch-doctor hunt (tdochunt37)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from depthlab.cli.common import UserError  # noqa: E402
from depthlab.cli.torch_doctor import load_factory  # noqa: E402


def test_cli_factory_name_typo_suggests_the_functions_in_the_file(tmp_path):
    """Before: "'models.py' has no 'make_modle'", no hint of the name meant."""
    f = tmp_path / "models.py"
    f.write_text("from torch import nn\nimport math\n"
                 "def make_model():\n    return nn.Linear(2, 2)\n"
                 "def make_cnn():\n    return nn.Linear(2, 2)\n")
    with pytest.raises(UserError, match=r"has no 'make_modle' \(did you mean 'make_model'\?\)"):
        load_factory(f"{f}:make_modle")
    with pytest.raises(UserError, match=r"has no 'zzz'; its functions: make_cnn, make_model$"):
        load_factory(f"{f}:zzz")
