"""The command line's help. Its bad-input cases (one line, exit 2, no run directory) live in
tests/test_catalogue.py, the whole bad-input catalogue."""

import pytest

from jobs import cli


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--set" in text and "resume" in text
