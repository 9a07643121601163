"""Round 21 (lead): a CSV separated by semicolons given to `depthlab predict` was named
"non-numeric column(s) ['a;b;c;label']: ... holds '0.125730;...'" where training names the
separator (cli21's report); both now say it through one `files.other_separator`."""

from __future__ import annotations

import pytest

from depthlab.data.files import other_separator
from depthlab.inference import read_inputs, read_labeled_inputs


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_predict_names_the_separator_of_a_csv_not_separated_by_commas(tmp_path, sep):
    path = tmp_path / "new.csv"
    rows = [sep.join(["a", "b", "c", "label"])] + [sep.join(["0.5", "1.25", "-2", "1"])] * 4
    path.write_text("\n".join(rows) + "\n")
    for read in (lambda: read_inputs(str(path)),
                 lambda: read_labeled_inputs(str(path), "label")):
        with pytest.raises(ValueError) as err:
            read()
        # was: "non-numeric column(s) ['a;b;c;label'] ..."
        assert f"looks separated by {sep!r}; accepted: comma-separated values" in str(err.value)
        assert "non-numeric" not in str(err.value)


def test_other_separator():
    assert other_separator(["a;b;c"]) == ";"
    assert other_separator(["a", "b;c"]) is None  # two columns: commas did separate it
    assert other_separator(["abc"]) is None
